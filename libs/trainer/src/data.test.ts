import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { byteLevelTokenizerConfig, byteLevelTokenizerJson, createTokenizer } from '@expertune/formats';
import { afterAll, describe, expect, it } from 'vitest';

import { DatasetError, loadTrainingData } from './data.js';

const dir = mkdtempSync(join(tmpdir(), 'expertune-data-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const tokenizer = createTokenizer(byteLevelTokenizerJson(), byteLevelTokenizerConfig());

describe('training data', () => {
  it('tokenizes text rows with BOS and EOS, keeps id rows, truncates and counts', () => {
    const file = join(dir, 'ok.jsonl');
    const content = '{"text": "Hi"}\n\n{"ids": [1, 2, 3, 4, 5, 6]}\n';
    writeFileSync(file, content);
    const data = loadTrainingData(file, { tokenizer, vocabSize: 258, maxSeqLen: 4, addEos: true });
    // <s> = 256, "H" = 72, "i" = 105, </s> = 257
    expect(data.sequences.map((s) => [...s.ids])).toEqual([
      [256, 72, 105, 257],
      [1, 2, 3, 4],
    ]);
    expect(data.sequences.map((s) => s.line)).toEqual([1, 3]);
    expect(data.stats).toEqual({ rows: 2, tokens: 8, truncated: 1, maxLength: 4, meanLength: 4, withTaskType: 0 });
    expect(data.hash).toBe(createHash('sha256').update(content).digest('hex'));
  });

  it('reports every problem with line and field, and refuses text without a tokenizer', () => {
    const file = join(dir, 'bad.jsonl');
    writeFileSync(file, '{"text": "a", "ids": [1]}\n[1, 2]\n{"ids": [3]}\n{"text": "ok"}\n');
    let error: DatasetError | undefined;
    try {
      loadTrainingData(file, { tokenizer: null, vocabSize: 10, maxSeqLen: 8, addEos: false });
    } catch (e) {
      error = e as DatasetError;
    }
    expect(error).toBeInstanceOf(DatasetError);
    expect(error!.problems).toEqual([
      { line: 1, field: '(row)', message: 'has both "text" and "ids": give one' },
      { line: 2, field: '(row)', message: 'must be a JSON object' },
      { line: 3, field: 'ids', message: 'fewer than 2 tokens: nothing to predict' },
      { line: 4, field: 'text', message: 'text rows need a tokenizer.json in the model directory' },
    ]);
  });

  it('keeps an optional task_type of 0 or 1 and names any other value', () => {
    const file = join(dir, 'tasks.jsonl');
    writeFileSync(file, '{"ids": [1, 2], "task_type": 1}\n{"ids": [3, 4]}\n{"ids": [5, 6], "task_type": 0}\n');
    const data = loadTrainingData(file, { tokenizer: null, vocabSize: 10, maxSeqLen: 8, addEos: false });
    expect(data.sequences.map((s) => s.taskType)).toEqual([1, undefined, 0]);
    expect(data.stats.withTaskType).toBe(2);
    writeFileSync(file, '{"ids": [1, 2], "task_type": 2}\n{"ids": [3, 4], "task_type": "knowledge"}\n');
    expect(() => loadTrainingData(file, { tokenizer: null, vocabSize: 10, maxSeqLen: 8, addEos: false })).toThrow(
      /line 1, task_type: must be 0 or 1, got 2\n {2}line 2, task_type: must be 0 or 1, got "knowledge"/,
    );
  });
});
