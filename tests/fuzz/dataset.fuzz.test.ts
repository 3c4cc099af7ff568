/**
 * Dataset JSONL files, row by row (RowReader through readDataFile) and as the training loader
 * reads them (loadTrainingData: validation split, packing, bad-row policy). A bad row is reported
 * by line and field; a file that cannot be trained on is a DatasetError. Nothing else escapes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DATA_FORMATS } from '@expertune/contracts';
import { byteLevelTokenizerConfig, byteLevelTokenizerJson, createTokenizer } from '@expertune/formats';
import {
  COLUMN_NAMES,
  DatasetError,
  loadTrainingData,
  readDataFile,
  type DataOptions,
  type TrainingSequence,
} from '@expertune/trainer';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';

import { fuzzParser, logFigures } from './harness.js';
import { mutatedBytes, mutatedJson, oddString } from './mutations.js';

/** Chat templates come from tokenizer_config.json, so they are outside bytes too: good and broken ones. */
const TEMPLATES = [
  null,
  "{% for m in messages %}{{ '[' + m.role + '] ' + m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}",
  '{% for m in messages %}{{ m.content }}', // never closed
  "{{ raise_exception('no system turns') }}",
  '{{ messages[99].content.upper() }}',
  '{% for m in messages %}{{ m.content }}{% endfor %}{{ messages | length }}', // a prefix that changes
] as const;
const tokenizers = TEMPLATES.map((template) =>
  createTokenizer(
    byteLevelTokenizerJson(),
    byteLevelTokenizerConfig(template === null ? {} : { chatTemplate: template }),
  ),
);
const plainTokenizer = tokenizers[0]!;

const text = fc.oneof({ weight: 4, arbitrary: fc.string({ minLength: 1, maxLength: 24 }) }, oddString);
const meta = fc.record({ task: fc.constantFrom('a', 'b'), task_type: fc.constantFrom(0, 1) }, { requiredKeys: [] });

/** One good row of any format. */
const validRow: fc.Arbitrary<Record<string, unknown>> = fc
  .oneof(
    fc.record({ text }),
    fc.record({ ids: fc.array(fc.nat(300), { minLength: 2, maxLength: 12 }) }),
    fc.record(
      { instruction: text, input: fc.option(text, { nil: undefined }), output: text },
      { requiredKeys: ['instruction', 'output'] },
    ),
    fc.record({ prompt: text, completion: text }),
    fc.record({
      messages: fc.array(fc.record({ role: fc.constantFrom('system', 'user', 'assistant'), content: text }), {
        minLength: 1,
        maxLength: 4,
      }),
    }),
    fc.record({
      conversations: fc.array(fc.record({ from: fc.constantFrom('human', 'gpt', 'system'), value: text }), {
        minLength: 1,
        maxLength: 4,
      }),
    }),
  )
  .chain((row) => meta.map((m) => ({ ...row, ...m })));

/** Deeper than JSON.stringify goes, JSON.parse still reads it: a field holding such a value. */
function deepLine(row: unknown): string {
  const field = Object.keys(row ?? {})[0] ?? 'task';
  return `{${JSON.stringify(field)}:${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
}

function jsonLine(row: unknown): string {
  try {
    return JSON.stringify(row) ?? 'null';
  } catch {
    return deepLine(row);
  }
}

/** A JSONL file: good rows, rows broken as JSON, blank lines; or the whole file broken as bytes. */
const fileBytes = fc.oneof(
  fc
    .array(fc.oneof({ weight: 2, arbitrary: validRow }, mutatedJson(validRow)), { minLength: 1, maxLength: 8 })
    .chain((rows) =>
      fc.constantFrom('\n', '\r\n', '\n\n').map((eol) => new TextEncoder().encode(rows.map(jsonLine).join(eol))),
    ),
  mutatedBytes(
    fc
      .array(validRow, { minLength: 1, maxLength: 6 })
      .map((rows) => new TextEncoder().encode(rows.map(jsonLine).join('\n'))),
  ),
);

const loaderOptions = fc.record({
  template: fc.nat(TEMPLATES.length - 1),
  withTokenizer: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, fc.constant(false)),
  bounded: fc.boolean(),
  maxSeqLen: fc.integer({ min: 1, max: 64 }),
  addEos: fc.boolean(),
  format: fc.constantFrom(...DATA_FORMATS),
  columns: fc.oneof(
    { weight: 4, arbitrary: fc.constant({}) },
    fc.dictionary(
      fc.constantFrom(...COLUMN_NAMES),
      fc.constantFrom('text', 'body', 'prompt', 'messages', '__proto__'),
      {
        maxKeys: 2,
      },
    ),
  ),
  trainOnInputs: fc.boolean(),
  packing: fc.boolean(),
  validationFraction: fc.constantFrom(0, 0, 0.25, 0.5),
  seed: fc.nat(),
  onBadRows: fc.constantFrom('skip' as const, 'fail' as const),
});

type LoaderOptions = typeof loaderOptions extends fc.Arbitrary<infer T> ? T : never;

function optionsOf(o: LoaderOptions): DataOptions {
  const tokenizer = o.withTokenizer ? tokenizers[o.template]! : null;
  return {
    tokenizer,
    ...(o.bounded ? { vocabSize: plainTokenizer.vocabSize } : {}),
    maxSeqLen: o.maxSeqLen,
    addEos: o.addEos,
    format: o.format,
    columns: o.columns,
    trainOnInputs: o.trainOnInputs,
    packing: o.packing,
    validationFraction: o.validationFraction,
    seed: o.seed,
    onBadRows: o.onBadRows,
  };
}

/** What training relies on: token ids in range, sequences within max_seq_len, a loss mask per token. */
function checkSequences(sequences: readonly TrainingSequence[], options: DataOptions, packed: boolean): void {
  for (const sequence of sequences) {
    if (!packed) expect(sequence.ids.length).toBeLessThanOrEqual(options.maxSeqLen);
    expect(sequence.ids.length).toBeGreaterThanOrEqual(packed ? 1 : 2);
    for (const id of sequence.ids) expect(id >= 0 && id < (options.vocabSize ?? 2 ** 31)).toBe(true);
    if (sequence.loss) expect(sequence.loss.length).toBe(sequence.ids.length);
    expect(sequence.line).toBeGreaterThanOrEqual(1);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'expertune-fuzz-dataset-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, 'train.jsonl');

describe('dataset JSONL fuzzing', () => {
  it('readDataFile: every row is a sequence or a problem with its line and field', async () => {
    logFigures(
      await fuzzParser({
        parser: 'dataset rows (readDataFile)',
        input: fc.tuple(fileBytes, loaderOptions),
        parse: ([bytes, o]) => {
          writeFileSync(file, bytes);
          const options = optionsOf(o);
          const result = readDataFile(file, options);
          const lines = Buffer.from(bytes).toString('utf8').split('\n').length;
          for (const problem of result.problems) {
            expect(problem.line >= 1 && problem.line <= lines).toBe(true);
            expect(problem.field.length).toBeGreaterThan(0);
            expect(problem.message.length).toBeGreaterThan(0);
          }
          checkSequences(result.rows, options, false);
          return result;
        },
        expected: [],
        shortRuns: 1000,
      }),
    );
  });

  it('loadTrainingData: training data or a DatasetError', async () => {
    logFigures(
      await fuzzParser({
        parser: 'dataset loader (loadTrainingData)',
        input: fc.tuple(fileBytes, loaderOptions),
        parse: ([bytes, o]) => {
          writeFileSync(file, bytes);
          const options = optionsOf(o);
          const data = loadTrainingData(file, options);
          checkSequences(data.sequences, options, options.packing ?? false);
          checkSequences(data.validation, options, false);
          expect(data.sequences.length).toBeGreaterThan(0);
          return data;
        },
        expected: [DatasetError],
        shortRuns: 1000,
      }),
    );
  });
});

describe('dataset JSONL: found by fuzzing', () => {
  const options: DataOptions = { tokenizer: null, maxSeqLen: 2, addEos: false };

  function read(jsonl: string, overrides: Partial<DataOptions> = {}) {
    writeFileSync(file, jsonl);
    return readDataFile(file, { ...options, ...overrides });
  }

  it('ids of 2^31 and above are a bad row without a vocabulary bound, not wrapped to negative ids', () => {
    const result = read('{"ids":[0,1659924368995647500000]}\n{"ids":[0,2147483648]}\n{"ids":[0,0]}');
    expect(result.problems.map((p) => [p.line, p.field])).toEqual([
      [1, 'ids[1]'],
      [2, 'ids[1]'],
    ]);
    expect(result.problems[1]!.message).toBe('2147483648 is not a token id in [0, 2^31)');
    expect(result.rows.map((row) => [...row.ids])).toEqual([[0, 0]]);
  });

  it('a field nested 100,000 deep is a bad row, not a stack overflow while quoting it', () => {
    const result = read(`{"task_type":${'['.repeat(100_000)}${']'.repeat(100_000)},"ids":[0,1]}`);
    expect(result.problems).toEqual([
      { line: 1, field: 'task_type', message: 'must be 0 or 1, got an array of 1 item(s) nested too deep to show' },
    ]);
  });

  it("a tokenizer's chat template that does not parse makes its chat rows bad rows, not a TypeError", () => {
    const result = read('{"prompt":" ","completion":"\\u0000"}', { tokenizer: tokenizers[2]!, maxSeqLen: 1 });
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]).toMatchObject({ line: 1, field: '(row)' });
    expect(result.problems[0]!.message).toMatch(/^chat template: the chat template cannot be parsed/);
  });
});
