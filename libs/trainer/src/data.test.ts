import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { byteLevelTokenizerConfig, byteLevelTokenizerJson, createTokenizer, loadTokenizer } from '@expertune/formats';
import { afterAll, describe, expect, it } from 'vitest';

import { makeBatch } from './batches.js';
import {
  DatasetError,
  loadTrainingData,
  packSequences,
  readDataFile,
  splitValidation,
  type DataOptions,
} from './data.js';
import { ChatRenderer, DEFAULT_CHAT_TEMPLATE } from './rows.js';

const dir = mkdtempSync(join(tmpdir(), 'expertune-data-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const tokenizer = createTokenizer(byteLevelTokenizerJson(), byteLevelTokenizerConfig());
const BOS = 256;
const EOS = 257;
/** The byte-level tokenizer has no merges: one id per UTF-8 byte. */
const bytes = (text: string) => [...Buffer.from(text, 'utf8')];

function file(name: string, lines: string[]): string {
  const path = join(dir, name);
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
}

const base: DataOptions = { tokenizer, vocabSize: 258, maxSeqLen: 512, addEos: true };

describe('training data', () => {
  it('tokenizes text rows with BOS and EOS, keeps id rows, truncates and counts', () => {
    const path = join(dir, 'ok.jsonl');
    const content = '{"text": "Hi"}\n\n{"ids": [1, 2, 3, 4, 5, 6]}\n';
    writeFileSync(path, content);
    const data = loadTrainingData(path, { ...base, maxSeqLen: 4 });
    expect(data.sequences.map((s) => [...s.ids])).toEqual([
      [BOS, 72, 105, EOS],
      [1, 2, 3, 4],
    ]);
    // Every token but the first carries loss in text and ids rows.
    expect(data.sequences.map((s) => [...s.loss!])).toEqual([
      [0, 1, 1, 1],
      [0, 1, 1, 1],
    ]);
    expect(data.sequences.map((s) => s.line)).toEqual([1, 3]);
    expect(data.stats).toMatchObject({ rows: 2, tokens: 8, lossTokens: 6, truncated: 1, maxLength: 4, meanLength: 4 });
    // Lengths before truncation: 4 and 6.
    expect(data.stats.lengths).toEqual({ p50: 4, p90: 6, p99: 6, max: 6 });
    expect(data.hash).toBe(createHash('sha256').update(content).digest('hex'));
  });

  it('renders a prompt/completion row with the default template and masks the prompt, token by token', () => {
    const path = file('pc.jsonl', ['{"prompt": "Hi", "completion": "Yo"}']);
    const [row] = loadTrainingData(path, base).sequences;
    const prompt = '<|user|>\nHi\n<|assistant|>\n';
    expect([...row!.ids]).toEqual([BOS, ...bytes(prompt), 89, 111, EOS]); // "Y" = 89, "o" = 111
    expect(row!.ids.length).toBe(30);
    // Targets: −1 on <s> and the whole prompt but its last "\n" (which predicts "Y"), then "o", </s>, and −1 at the end.
    const batch = makeBatch([row!], 0);
    const expected = new Array<number>(30).fill(-1);
    expected[26] = 89;
    expected[27] = 111;
    expected[28] = EOS;
    expect([...batch.targets]).toEqual(expected);
  });

  it('puts loss on every token but the first with train_on_inputs', () => {
    const path = file('pc-all.jsonl', ['{"prompt": "Hi", "completion": "Yo"}']);
    const [row] = loadTrainingData(path, { ...base, trainOnInputs: true }).sequences;
    const batch = makeBatch([row!], 0);
    expect([...batch.targets]).toEqual([...[...row!.ids].slice(1), -1]);
  });

  it('reads alpaca rows (with and without input) as a user turn and an assistant turn', () => {
    const path = file('alpaca.jsonl', [
      '{"instruction": "Add", "input": "1+1", "output": "2"}',
      '{"instruction": "Say A", "output": "A"}',
    ]);
    const rows = loadTrainingData(path, base).sequences;
    expect([...rows[0]!.ids]).toEqual([BOS, ...bytes('<|user|>\nAdd\n\n1+1\n<|assistant|>\n2'), EOS]);
    expect([...rows[1]!.ids]).toEqual([BOS, ...bytes('<|user|>\nSay A\n<|assistant|>\nA'), EOS]);
    // Loss on "2" and </s> only.
    const loss0 = [...rows[0]!.loss!];
    expect(loss0.slice(-2)).toEqual([1, 1]);
    expect(loss0.slice(0, -2).every((l) => l === 0)).toBe(true);
  });

  it('reads OpenAI messages and ShareGPT conversations alike', () => {
    const path = file('chat.jsonl', [
      '{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"}]}',
      '{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "R"}]}',
    ]);
    const rows = loadTrainingData(path, base).sequences;
    const ids = [BOS, ...bytes('<|user|>\nQ\n<|assistant|>\nR'), EOS];
    expect([...rows[0]!.ids]).toEqual(ids);
    expect([...rows[1]!.ids]).toEqual(ids);
    expect([...rows[1]!.loss!]).toEqual([...rows[0]!.loss!]);
  });

  it('masks every turn but the assistant ones in a multi-turn chat (default template)', () => {
    const renderer = new ChatRenderer(DEFAULT_CHAT_TEMPLATE, { bos_token: '<s>', eos_token: '</s>' });
    expect(
      renderer.segments([
        { role: 'system', content: 'S' },
        { role: 'user', content: 'U' },
        { role: 'assistant', content: 'A' },
        { role: 'user', content: 'V' },
        { role: 'assistant', content: 'B' },
      ]),
    ).toEqual([
      { text: '<|system|>\nS\n<|user|>\nU\n<|assistant|>\n', loss: false },
      { text: 'A</s>', loss: true },
      { text: '<|user|>\nV\n<|assistant|>\n', loss: false },
      { text: 'B</s>', loss: true },
    ]);
  });

  it("renders the model's chat_template from tokenizer_config.json with @huggingface/jinja", () => {
    const model = join(dir, 'templated');
    mkdirSync(model);
    const template =
      "{{ bos_token }}{% for m in messages %}{{ '[' + m.role + ']' + m.content }}" +
      "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}" +
      '{% if add_generation_prompt %}[assistant]{% endif %}';
    writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson()));
    writeFileSync(
      join(model, 'tokenizer_config.json'),
      JSON.stringify(byteLevelTokenizerConfig({ chatTemplate: template })),
    );
    const path = file('templated.jsonl', ['{"prompt": "Hi", "completion": "Yo"}']);
    const [row] = loadTrainingData(path, { ...base, tokenizer: loadTokenizer(model) }).sequences;
    // The template starts with <s> itself: no second BOS.
    expect([...row!.ids]).toEqual([BOS, ...bytes('[user]Hi[assistant]'), 89, 111, EOS]);
    expect([...row!.loss!]).toEqual([...new Array<number>(20).fill(0), 1, 1, 1]);
  });

  it('reports a template that raises, or that does not render turn by turn, on the row', () => {
    const model = join(dir, 'strict-template');
    mkdirSync(model);
    // Raises on a system turn; otherwise renders the turn count first, so each rendering changes the prefix.
    const template =
      "{% if messages[0].role == 'system' %}{{ raise_exception('no system turns') }}{% endif %}" +
      '{{ messages | length }}{% for m in messages %}{{ m.content }}{% endfor %}';
    writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson()));
    writeFileSync(
      join(model, 'tokenizer_config.json'),
      JSON.stringify(byteLevelTokenizerConfig({ chatTemplate: template })),
    );
    const path = file('strict.jsonl', [
      '{"messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]}',
      '{"prompt": "P", "completion": "C"}',
      '{"text": "fine"}',
    ]);
    const data = loadTrainingData(path, { ...base, tokenizer: loadTokenizer(model) });
    expect(data.sequences.map((s) => s.line)).toEqual([3]);
    expect(data.problems).toEqual([
      { line: 1, field: '(row)', message: expect.stringMatching(/^chat template: .*no system turns/) },
      {
        line: 2,
        field: '(row)',
        message: 'chat template: the chat template does not render the conversation turn by turn (a prefix changed)',
      },
    ]);
  });

  it('maps other column names, and names them in problems', () => {
    const path = file('mapped.jsonl', [
      '{"question": "Hi", "answer": "Yo", "kind": "greet"}',
      '{"question": "Hi", "answer": ""}',
    ]);
    const data = loadTrainingData(path, {
      ...base,
      columns: { prompt: 'question', completion: 'answer', task: 'kind' },
    });
    expect([...data.sequences[0]!.ids]).toEqual([BOS, ...bytes('<|user|>\nHi\n<|assistant|>\nYo'), EOS]);
    expect(data.sequences[0]!.task).toBe('greet');
    expect(data.problems).toEqual([{ line: 2, field: 'answer', message: 'empty completion' }]);
  });

  it('reports every bad row with its line and field, and keeps the good ones', () => {
    const path = file('bad.jsonl', [
      '{"prompt": "a", "completion": "b"}',
      'not json',
      '{"instruction": "x"}',
      '{"instruction": "x", "output": ""}',
      '{"prompt": 3, "completion": "b"}',
      '{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": 5}]}',
      '{"text": "a", "ids": [1]}',
      '[1, 2]',
      '{"ids": [3]}',
      '{"text": "ok", "task_type": 2}',
      '{"txt": "typo"}',
      '{"ids": [1, 999]}',
      '{"text": "good", "task": "t"}',
    ]);
    const data = loadTrainingData(path, base);
    expect(data.sequences.map((s) => s.line)).toEqual([1, 13]);
    expect(data.problems.map((p) => [p.line, p.field])).toEqual([
      [2, '(row)'],
      [3, 'output'],
      [4, 'output'],
      [5, 'prompt'],
      [6, 'messages[0].role'],
      [6, 'messages[1].content'],
      [7, '(row)'],
      [8, '(row)'],
      [9, '(row)'],
      [10, 'task_type'],
      [11, '(row)'],
      [12, 'ids[1]'],
    ]);
    expect(data.problems.map((p) => p.message)).toEqual([
      expect.stringMatching(/^not valid JSON/),
      'missing',
      'empty completion',
      'must be a string, got a number',
      'unknown role "bot" (one of system, user, assistant)',
      'must be a string, got a number',
      'has both "text" and "ids": give one',
      'must be a JSON object',
      'fewer than 2 tokens: nothing to predict',
      'must be 0 or 1, got 2',
      expect.stringMatching(/^no known format: .*\(fields found: txt\)$/),
      '999 is not a token id in [0, 258)',
    ]);
    expect(data.stats.badRows).toBe(11);
    expect(data.stats.tasks).toEqual({ '': 1, t: 1 });
    expect(() => loadTrainingData(path, { ...base, onBadRows: 'fail' })).toThrow(DatasetError);
  });

  it('refuses a file without good rows, and text without a tokenizer', () => {
    const path = file('no-tokenizer.jsonl', ['{"text": "ok"}']);
    let error: DatasetError | undefined;
    try {
      loadTrainingData(path, { ...base, tokenizer: null });
    } catch (e) {
      error = e as DatasetError;
    }
    expect(error).toBeInstanceOf(DatasetError);
    expect(error!.problems).toEqual([
      { line: 1, field: 'text', message: 'text rows need a tokenizer.json in the model directory' },
      { line: 0, field: '(file)', message: 'no good rows' },
    ]);
  });

  it('follows a declared format: fields of other formats are missing fields', () => {
    const path = file('declared.jsonl', ['{"prompt": "a", "completion": "b"}', '{"text": "hello"}']);
    const data = loadTrainingData(path, { ...base, format: 'text' });
    expect(data.sequences.map((s) => s.line)).toEqual([2]);
    expect(data.problems).toEqual([{ line: 1, field: 'text', message: 'missing' }]);
  });

  it('keeps task and task_type per row', () => {
    const path = file('tasks.jsonl', [
      '{"ids": [1, 2], "task_type": 1, "task": "a"}',
      '{"ids": [3, 4]}',
      '{"ids": [5, 6], "task_type": 0, "task": "b"}',
    ]);
    const data = loadTrainingData(path, base);
    expect(data.sequences.map((s) => [s.taskType, s.task])).toEqual([
      [1, 'a'],
      [undefined, undefined],
      [0, 'b'],
    ]);
    expect(data.stats.withTaskType).toBe(2);
    expect(data.stats.tasks).toEqual({ a: 1, '': 1, b: 1 });
  });

  it('refuses a row whose completion is cut away by truncation', () => {
    const path = file('cut.jsonl', ['{"prompt": "a long prompt", "completion": "b"}']);
    const read = readDataFile(path, { ...base, maxSeqLen: 8 });
    expect(read.problems).toEqual([{ line: 1, field: '(row)', message: 'no token carries loss within max_seq_len 8' }]);
  });

  it('gives nearest-rank length percentiles', () => {
    // Ten rows of 2 … 11 tokens.
    const lines = Array.from({ length: 10 }, (_, i) => JSON.stringify({ ids: Array.from({ length: i + 2 }, () => 1) }));
    const data = loadTrainingData(file('lengths.jsonl', lines), base);
    expect(data.stats.lengths).toEqual({ p50: 6, p90: 10, p99: 11, max: 11 });
  });
});

describe('packing', () => {
  it('fills sequences up to max_seq_len in order, and no target crosses a row boundary', () => {
    const rows = [
      [1, 2],
      [3, 4, 5],
      [6, 7, 8, 9],
    ].map((ids, i) => ({ ids: Int32Array.from(ids), line: i + 1 }));
    const packed = packSequences(rows, 5);
    expect(packed.map((s) => [...s.ids])).toEqual([
      [1, 2, 3, 4, 5],
      [6, 7, 8, 9],
    ]);
    expect(packed.map((s) => s.lines)).toEqual([[1, 2], [3]]);
    expect(packed.map((s) => [...s.loss!])).toEqual([
      [0, 1, 0, 1, 1],
      [0, 1, 1, 1],
    ]);
    const batch = makeBatch(packed, 0);
    // 2 does not predict 3 (the next row's first token); 5 and 9 end their sequences.
    expect([...batch.targets]).toEqual([2, -1, 4, 5, -1, 7, 8, 9, -1, -1]);
  });

  it('keeps prompt masks inside packed rows and a task_type only when shared', () => {
    const rows = [
      { ids: Int32Array.from([1, 2, 3]), loss: Uint8Array.from([0, 0, 1]), line: 1, taskType: 1 as const },
      { ids: Int32Array.from([4, 5, 6]), loss: Uint8Array.from([0, 0, 1]), line: 2, taskType: 1 as const },
      { ids: Int32Array.from([7, 8]), loss: Uint8Array.from([0, 1]), line: 3, taskType: 0 as const },
    ];
    const packed = packSequences(rows, 8);
    expect(packed.length).toBe(1);
    expect([...makeBatch(packed, 0).targets]).toEqual([-1, 3, -1, -1, 6, -1, 8, -1]);
    expect(packed[0]!.taskType).toBeUndefined();
    expect(packSequences(rows.slice(0, 2), 8)[0]!.taskType).toBe(1);
  });

  it('packs through the loader when asked', () => {
    const path = file('pack.jsonl', ['{"ids": [1, 2]}', '{"ids": [3, 4, 5]}', '{"ids": [6, 7, 8, 9]}']);
    const data = loadTrainingData(path, { ...base, maxSeqLen: 5, packing: true });
    expect(data.sequences.map((s) => [...s.ids])).toEqual([
      [1, 2, 3, 4, 5],
      [6, 7, 8, 9],
    ]);
    expect(data.stats.rows).toBe(3);
  });

  it('never packs the validation rows, so each keeps its own answer for exact match', () => {
    const rows = Array.from({ length: 8 }, (_, i) => JSON.stringify({ ids: [i + 1, i + 2] }));
    const path = file('pack-valid.jsonl', rows);
    const data = loadTrainingData(path, { ...base, maxSeqLen: 8, packing: true, validationFraction: 0.5, seed: 1 });
    expect(data.validation).toHaveLength(4);
    expect(data.validation.every((s) => s.ids.length === 2)).toBe(true);
    expect(data.sequences).toHaveLength(1);
  });
});

describe('validation split', () => {
  it('holds out round(fraction × rows) rows by seed, both parts in file order', () => {
    const rows = Array.from({ length: 10 }, (_, i) => i);
    const { train, validation } = splitValidation(rows, 0.3, 7);
    expect(validation.length).toBe(3);
    expect(train.length).toBe(7);
    expect([...train, ...validation].sort((a, b) => a - b)).toEqual(rows);
    expect(train).toEqual([...train].sort((a, b) => a - b));
    expect(splitValidation(rows, 0.3, 7)).toEqual({ train, validation });
    expect(splitValidation(rows, 0.3, 8).validation).not.toEqual(validation);
    expect(splitValidation(rows, 0.01, 7).validation.length).toBe(1);
    expect(splitValidation(rows, 0, 7)).toEqual({ train: rows, validation: [] });
  });

  it('exposes the held-out rows of a fraction or a file', () => {
    const lines = Array.from({ length: 4 }, (_, i) => JSON.stringify({ ids: [i, i + 1] }));
    const path = file('split.jsonl', lines);
    const data = loadTrainingData(path, { ...base, validationFraction: 0.25, seed: 3 });
    expect(data.sequences.length).toBe(3);
    expect(data.validation.length).toBe(1);
    const held = file('held.jsonl', ['{"ids": [9, 9]}', 'oops']);
    const withFile = loadTrainingData(path, { ...base, validation: held });
    expect(withFile.sequences.length).toBe(4);
    expect(withFile.validation.map((s) => [...s.ids])).toEqual([[9, 9]]);
    expect(withFile.validationProblems.map((p) => [p.line, p.field])).toEqual([[2, '(row)']]);
  });
});
