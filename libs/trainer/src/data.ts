/**
 * Training data: JSONL files in the formats of rows.ts (text, ids, alpaca, prompt/completion,
 * chat), each row optionally with a `task` name and a `task_type` of 0 or 1 (LoRAMoE's localized
 * balancing constraint). Loss on completions only unless `trainOnInputs`, truncation to
 * `maxSeqLen`, optional packing, and a seeded train/validation split (docs/data.md).
 *
 * Every bad row is reported with its line number and field; in `skip` mode (the default) the good
 * rows are kept, in `fail` mode any bad row refuses the file.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';

import type { TrainConfig } from '@expertune/contracts';
import { hash3, uniform } from '@expertune/engine';
import { showValue, type TextTokenizer } from '@expertune/formats';

import {
  ChatRenderer,
  DEFAULT_CHAT_TEMPLATE,
  RowReader,
  tokenizeSegments,
  type ColumnMapping,
  type DataFormat,
  type RowProblem,
  type TokenizedRow,
} from './rows.js';

export type { RowProblem } from './rows.js';

/** "  line 3, output: empty completion" lines, every one of them. */
export function formatProblems(problems: readonly RowProblem[]): string {
  return problems.map((p) => `  line ${p.line}, ${p.field}: ${p.message}`).join('\n');
}

export class DatasetError extends Error {
  constructor(
    readonly file: string,
    readonly problems: RowProblem[],
  ) {
    super(`${file}: ${problems.length} bad row(s):\n${formatProblems(problems)}`);
    this.name = 'DatasetError';
  }
}

export interface TrainingSequence {
  ids: Int32Array;
  /**
   * 1 where the token is predicted with loss (its position is a target), 0 elsewhere: prompt
   * tokens, the first token of a row. Absent: every token but the first carries loss.
   */
  loss?: Uint8Array;
  /** 1-based line of the row in the file (the first row of a packed sequence). */
  line: number;
  /** Lines of the rows packed into this sequence (packing only). */
  lines?: number[];
  /** The row's `task_type` (0 or 1), when it has one (packed: when all its rows share one). */
  taskType?: 0 | 1;
  /** The row's `task` name, when it has one (packed: when all its rows share one). */
  task?: string;
}

export interface LengthPercentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface DataStats {
  /** Good rows. */
  rows: number;
  /** Tokens after truncation. */
  tokens: number;
  /** Tokens that carry loss. */
  lossTokens: number;
  /** Rows longer than maxSeqLen (cut to it). */
  truncated: number;
  /** Longest row after truncation. */
  maxLength: number;
  meanLength: number;
  /** Row lengths before truncation (nearest-rank percentiles). */
  lengths: LengthPercentiles;
  /** Rows that carry a `task_type`. */
  withTaskType: number;
  /** Good rows per `task` ("" for rows without one). */
  tasks: Record<string, number>;
  /** Bad rows (skipped). */
  badRows: number;
}

export interface TrainingData {
  /** The training sequences (packed when packing is on). */
  sequences: TrainingSequence[];
  /** Held-out sequences (validation file or fraction), evaluated during training (evaluate.ts). */
  validation: TrainingSequence[];
  /** Statistics of all good rows of the training file (before the split). */
  stats: DataStats;
  /** Every bad row of the training file (skipped). */
  problems: RowProblem[];
  /** Every bad row of the validation file (skipped). */
  validationProblems: RowProblem[];
  /** sha256 of the training file's bytes. */
  hash: string;
}

export interface DataOptions {
  tokenizer: TextTokenizer | null;
  /** Bound on `ids` values; leave it out to accept any non-negative integer. */
  vocabSize?: number;
  maxSeqLen: number;
  /** Append EOS to `text` rows. */
  addEos: boolean;
  format?: DataFormat;
  columns?: ColumnMapping;
  /** Loss on every token (default false: on completions only). */
  trainOnInputs?: boolean;
  packing?: boolean;
  /** A held-out file, or a fraction of the training rows held out (seeded). */
  validation?: string;
  validationFraction?: number;
  seed?: number;
  /** `skip` (default): bad rows are reported and left out; `fail`: any bad row throws. */
  onBadRows?: 'skip' | 'fail';
}

/**
 * The loader's options for a config's `data` section (fields that records of older runs lack
 * take their defaults).
 */
export function dataOptionsFor(
  data: TrainConfig['data'],
  seed: number,
  tokenizer: TextTokenizer | null,
  vocabSize: number,
): DataOptions {
  return {
    tokenizer,
    vocabSize,
    maxSeqLen: data.max_seq_len,
    addEos: data.add_eos,
    format: data.format ?? 'auto',
    columns: data.columns ?? {},
    trainOnInputs: data.train_on_inputs ?? false,
    packing: data.packing ?? false,
    ...(data.validation !== undefined ? { validation: data.validation } : {}),
    validationFraction: data.validation_fraction ?? 0,
    seed,
    onBadRows: data.on_bad_rows ?? 'skip',
  };
}

/** One file's good rows (tokenized, truncated) and bad rows. */
export interface ReadResult {
  rows: TrainingSequence[];
  /** Each row's token count before truncation. */
  fullLengths: number[];
  problems: RowProblem[];
  truncated: number;
  bytes: Buffer;
}

export function readDataFile(file: string, options: DataOptions): ReadResult {
  if (!existsSync(file)) throw new Error(`data file not found: ${file}`);
  const bytes = readFileSync(file);
  const reader = new RowReader(options.format ?? 'auto', options.columns ?? {});
  let renderer: ChatRenderer | null = null;
  const result: ReadResult = { rows: [], fullLengths: [], problems: [], truncated: 0, bytes };
  bytes
    .toString('utf8')
    .split('\n')
    .forEach((raw, index) => {
      const line = index + 1;
      if (raw.trim() === '') return;
      const problem = (field: string, message: string) => result.problems.push({ line, field, message });
      let json: unknown;
      try {
        json = JSON.parse(raw);
      } catch (error) {
        return problem('(row)', `not valid JSON (${(error as Error).message})`);
      }
      if (typeof json !== 'object' || json === null || Array.isArray(json))
        return problem('(row)', 'must be a JSON object');
      const read = reader.read(json as Record<string, unknown>, line);
      if ('problems' in read) return result.problems.push(...read.problems);
      const { row, meta } = read;
      let tokens: TokenizedRow;
      if (row.kind === 'ids') {
        // Without a vocabulary the bound is what an Int32Array holds: 2^31 would wrap to a negative id.
        const bound = options.vocabSize ?? 2 ** 31;
        const bad = row.ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= bound);
        if (bad >= 0)
          return problem(
            `ids[${bad}]`,
            `${showValue(row.ids[bad])} is not a token id in [0, ${options.vocabSize ?? '2^31'})`,
          );
        tokens = { ids: row.ids, loss: row.ids.map((_, i) => (i === 0 ? 0 : 1)) };
      } else if (!options.tokenizer) {
        return problem(
          row.kind === 'text' ? 'text' : '(row)',
          'text rows need a tokenizer.json in the model directory',
        );
      } else if (row.kind === 'text') {
        const ids = options.tokenizer.encode(row.text, { addSpecialTokens: true });
        if (options.addEos && options.tokenizer.eosTokenId !== null) ids.push(options.tokenizer.eosTokenId);
        tokens = { ids, loss: ids.map((_, i) => (i === 0 ? 0 : 1)) };
      } else {
        try {
          // Inside the try: the template comes from tokenizer_config.json and may not parse.
          renderer ??= new ChatRenderer(options.tokenizer.chatTemplate ?? DEFAULT_CHAT_TEMPLATE, {
            bos_token: options.tokenizer.bosToken ?? '',
            eos_token: options.tokenizer.eosToken ?? '',
          });
          tokens = tokenizeSegments(renderer.segments(row.messages), options.tokenizer, options.trainOnInputs ?? false);
        } catch (error) {
          return problem('(row)', `chat template: ${(error as Error).message}`);
        }
      }
      if (tokens.ids.length < 2) return problem('(row)', 'fewer than 2 tokens: nothing to predict');
      const cut = Math.min(tokens.ids.length, options.maxSeqLen);
      if (!tokens.loss.slice(0, cut).some((l) => l === 1))
        return problem('(row)', `no token carries loss within max_seq_len ${options.maxSeqLen}`);
      if (tokens.ids.length > options.maxSeqLen) result.truncated += 1;
      const sequence: TrainingSequence = {
        ids: Int32Array.from(tokens.ids.slice(0, cut)),
        loss: Uint8Array.from(tokens.loss.slice(0, cut)),
        line,
      };
      if (meta.taskType !== undefined) sequence.taskType = meta.taskType;
      if (meta.task !== undefined) sequence.task = meta.task;
      result.rows.push(sequence);
      result.fullLengths.push(tokens.ids.length);
    });
  return result;
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export function dataStats(read: ReadResult): DataStats {
  const rows = read.rows;
  const tokens = rows.reduce((sum, s) => sum + s.ids.length, 0);
  const sorted = [...read.fullLengths].sort((a, b) => a - b);
  const tasks: Record<string, number> = {};
  for (const row of rows) tasks[row.task ?? ''] = (tasks[row.task ?? ''] ?? 0) + 1;
  return {
    rows: rows.length,
    tokens,
    lossTokens: rows.reduce((sum, s) => sum + (s.loss ? s.loss.reduce((a, b) => a + b, 0) : s.ids.length - 1), 0),
    truncated: read.truncated,
    maxLength: rows.reduce((m, s) => Math.max(m, s.ids.length), 0),
    meanLength: rows.length > 0 ? tokens / rows.length : 0,
    lengths: {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      max: sorted[sorted.length - 1] ?? 0,
    },
    withTaskType: rows.filter((s) => s.taskType !== undefined).length,
    tasks,
    badRows: new Set(read.problems.map((p) => p.line)).size,
  };
}

/**
 * Held-out rows for a fraction: round(fraction × rows) of them (at least 1 when the fraction is
 * positive, and never every row), chosen by a seeded shuffle; both parts keep the file order.
 */
export function splitValidation<T>(
  rows: readonly T[],
  fraction: number,
  seed: number,
): { train: T[]; validation: T[] } {
  if (fraction <= 0 || rows.length < 2) return { train: [...rows], validation: [] };
  const count = Math.min(rows.length - 1, Math.max(1, Math.round(fraction * rows.length)));
  const order = Array.from({ length: rows.length }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(uniform(hash3(seed, 0x76616c, i)) * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const held = new Set(order.slice(0, count));
  return {
    train: rows.filter((_, i) => !held.has(i)),
    validation: rows.filter((_, i) => held.has(i)),
  };
}

/**
 * Packs rows, in order, into sequences of at most maxSeqLen tokens: a row that does not fit in
 * the current sequence starts the next one (rows are never split). Each row's first token has
 * loss 0, so no target crosses a row boundary (the last token of a row does not predict the first
 * of the next). A packed sequence keeps a task / task_type only when all its rows share it.
 */
export function packSequences(rows: readonly TrainingSequence[], maxSeqLen: number): TrainingSequence[] {
  const packs: TrainingSequence[][] = [];
  let current: TrainingSequence[] = [];
  let length = 0;
  for (const row of rows) {
    if (current.length > 0 && length + row.ids.length > maxSeqLen) {
      packs.push(current);
      current = [];
      length = 0;
    }
    current.push(row);
    length += row.ids.length;
  }
  if (current.length > 0) packs.push(current);
  return packs.map((pack) => {
    const total = pack.reduce((sum, r) => sum + r.ids.length, 0);
    const ids = new Int32Array(total);
    const loss = new Uint8Array(total);
    let at = 0;
    for (const row of pack) {
      ids.set(row.ids, at);
      if (row.loss) loss.set(row.loss, at);
      else loss.fill(1, at, at + row.ids.length);
      loss[at] = 0;
      at += row.ids.length;
    }
    const sequence: TrainingSequence = { ids, loss, line: pack[0]!.line, lines: pack.map((r) => r.line) };
    const taskType = pack[0]!.taskType;
    if (taskType !== undefined && pack.every((r) => r.taskType === taskType)) sequence.taskType = taskType;
    const task = pack[0]!.task;
    if (task !== undefined && pack.every((r) => r.task === task)) sequence.task = task;
    return sequence;
  });
}

export function loadTrainingData(file: string, options: DataOptions): TrainingData {
  const read = readDataFile(file, options);
  let validationProblems: RowProblem[] = [];
  let train = read.rows;
  let validation: TrainingSequence[] = [];
  if (options.validation !== undefined) {
    const held = readDataFile(options.validation, options);
    if (held.problems.length > 0 && options.onBadRows === 'fail')
      throw new DatasetError(options.validation, held.problems);
    validationProblems = held.problems;
    validation = held.rows;
  } else if (options.validationFraction) {
    ({ train, validation } = splitValidation(read.rows, options.validationFraction, options.seed ?? 0));
  }
  if (read.problems.length > 0 && options.onBadRows === 'fail') throw new DatasetError(file, read.problems);
  if (train.length === 0)
    throw new DatasetError(file, [...read.problems, { line: 0, field: '(file)', message: 'no good rows' }]);
  return {
    sequences: options.packing ? packSequences(train, options.maxSeqLen) : train,
    // Never packed: evaluation scores each held-out row's answer by generation (evaluate.ts).
    validation,
    stats: dataStats(read),
    problems: read.problems,
    validationProblems,
    hash: createHash('sha256').update(read.bytes).digest('hex'),
  };
}
