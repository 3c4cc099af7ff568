/**
 * Training data for the CLI: JSONL with one {"text": "..."} or {"ids": [...]} object per line, each
 * optionally with "task_type": 0 or 1 (LoRAMoE's localized balancing constraint).
 * Every bad row is reported with its line number and field; nothing is silently dropped.
 * (Chat, alpaca and prompt/completion formats come with the full data pipeline.)
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';

import type { TextTokenizer } from '@expertune/formats';

export interface RowProblem {
  line: number;
  field: string;
  message: string;
}

export class DatasetError extends Error {
  constructor(
    readonly file: string,
    readonly problems: RowProblem[],
  ) {
    const shown = problems.slice(0, 20).map((p) => `  line ${p.line}, ${p.field}: ${p.message}`);
    if (problems.length > 20) shown.push(`  … and ${problems.length - 20} more`);
    super(`${file}: ${problems.length} bad row(s):\n${shown.join('\n')}`);
    this.name = 'DatasetError';
  }
}

export interface TrainingSequence {
  ids: Int32Array;
  /** 1-based line of the row in the file. */
  line: number;
  /** The row's `task_type` (0 or 1), when it has one. */
  taskType?: 0 | 1;
}

export interface DataStats {
  rows: number;
  tokens: number;
  truncated: number;
  maxLength: number;
  meanLength: number;
  /** Rows that carry a `task_type`. */
  withTaskType: number;
}

export interface TrainingData {
  sequences: TrainingSequence[];
  stats: DataStats;
  /** sha256 of the file's bytes. */
  hash: string;
}

export interface DataOptions {
  tokenizer: TextTokenizer | null;
  vocabSize: number;
  maxSeqLen: number;
  addEos: boolean;
}

export function loadTrainingData(file: string, options: DataOptions): TrainingData {
  if (!existsSync(file)) throw new Error(`training data file not found: ${file}`);
  const bytes = readFileSync(file);
  const problems: RowProblem[] = [];
  const sequences: TrainingSequence[] = [];
  let truncated = 0;
  const lines = bytes.toString('utf8').split('\n');
  lines.forEach((raw, index) => {
    const line = index + 1;
    if (raw.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(raw);
    } catch (error) {
      problems.push({ line, field: '(row)', message: `not valid JSON (${(error as Error).message})` });
      return;
    }
    if (typeof row !== 'object' || row === null || Array.isArray(row)) {
      problems.push({ line, field: '(row)', message: 'must be a JSON object' });
      return;
    }
    const taskType = (row as Record<string, unknown>).task_type;
    if (taskType !== undefined && taskType !== 0 && taskType !== 1) {
      problems.push({ line, field: 'task_type', message: `must be 0 or 1, got ${JSON.stringify(taskType)}` });
      return;
    }
    const ids = rowIds(row as Record<string, unknown>, line, options, problems);
    if (!ids) return;
    if (ids.length < 2) {
      problems.push({
        line,
        field: 'text' in row ? 'text' : 'ids',
        message: 'fewer than 2 tokens: nothing to predict',
      });
      return;
    }
    if (ids.length > options.maxSeqLen) truncated += 1;
    const sequence: TrainingSequence = { ids: Int32Array.from(ids.slice(0, options.maxSeqLen)), line };
    if (taskType !== undefined) sequence.taskType = taskType;
    sequences.push(sequence);
  });
  if (problems.length > 0) throw new DatasetError(file, problems);
  if (sequences.length === 0) throw new DatasetError(file, [{ line: 0, field: '(file)', message: 'no rows' }]);
  const tokens = sequences.reduce((sum, s) => sum + s.ids.length, 0);
  return {
    sequences,
    hash: createHash('sha256').update(bytes).digest('hex'),
    stats: {
      rows: sequences.length,
      tokens,
      truncated,
      maxLength: Math.max(...sequences.map((s) => s.ids.length)),
      meanLength: tokens / sequences.length,
      withTaskType: sequences.filter((s) => s.taskType !== undefined).length,
    },
  };
}

function rowIds(
  row: Record<string, unknown>,
  line: number,
  options: DataOptions,
  problems: RowProblem[],
): number[] | null {
  const hasText = 'text' in row;
  const hasIds = 'ids' in row;
  if (hasText === hasIds) {
    const fields = Object.keys(row).join(', ') || 'none';
    problems.push({
      line,
      field: '(row)',
      message: hasText
        ? 'has both "text" and "ids": give one'
        : `needs a "text" string or an "ids" array (fields found: ${fields})`,
    });
    return null;
  }
  if (hasText) {
    const text = row.text;
    if (typeof text !== 'string' || text.length === 0) {
      problems.push({ line, field: 'text', message: 'must be a non-empty string' });
      return null;
    }
    if (!options.tokenizer) {
      problems.push({ line, field: 'text', message: 'text rows need a tokenizer.json in the model directory' });
      return null;
    }
    const ids = options.tokenizer.encode(text, { addSpecialTokens: true });
    if (options.addEos && options.tokenizer.eosTokenId !== null) ids.push(options.tokenizer.eosTokenId);
    return ids;
  }
  const ids = row.ids;
  if (!Array.isArray(ids) || ids.length === 0) {
    problems.push({ line, field: 'ids', message: 'must be a non-empty array of token ids' });
    return null;
  }
  const bad = ids.findIndex((id) => !Number.isInteger(id) || (id as number) < 0 || (id as number) >= options.vocabSize);
  if (bad >= 0) {
    problems.push({
      line,
      field: `ids[${bad}]`,
      message: `${JSON.stringify(ids[bad])} is not a token id in [0, ${options.vocabSize})`,
    });
    return null;
  }
  return ids as number[];
}
