import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { parseTrainConfig } from '@expertune/contracts';
import { Engine, Model, type DecodeSession, type ModelBackend } from '@expertune/engine';
import { byteLevelTokenizerConfig, byteLevelTokenizerJson, createTokenizer } from '@expertune/formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { TrainingSequence } from './data.js';
import { readDataFile } from './data.js';
import { evaluate, referenceAnswer, scoreLogits, type EvalOptions } from './evaluate.js';
import { initRandomModel } from './init-model.js';
import { runTraining } from './train.js';

const dir = mkdtempSync(join(tmpdir(), 'expertune-eval-'));
const baseDir = join(dir, 'base');
beforeAll(() => initRandomModel(baseDir, 'tiny', 4));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const EOS = 257;
const options = (over: Partial<EvalOptions> = {}): EvalOptions => ({
  padId: EOS,
  batchSize: 2,
  maxAnswerTokens: 16,
  maxGenerateRows: 64,
  stopIds: [EOS],
  ...over,
});

function sequence(ids: number[], loss?: number[], task?: string): TrainingSequence {
  const s: TrainingSequence = { ids: Int32Array.from(ids), line: 1 };
  if (loss) s.loss = Uint8Array.from(loss);
  if (task !== undefined) s.task = task;
  return s;
}

describe('scoreLogits', () => {
  it('counts the argmax hits and the cross-entropy of a hand-made case', () => {
    // vocab 3, four positions; the third does not count.
    const logits = Float32Array.from([2, 0, 0, 0, 0, 5, 1, 1, 1, 0, 3, 1]);
    const targets = Int32Array.from([0, 1, 2, 2]);
    const score = scoreLogits(logits, targets, 3);
    expect(score.count).toBe(4);
    // Argmaxes are 0, 2, 0 (tie: the first), 1: hits at positions 0 only.
    expect(score.correct).toBe(1);
    const ce = (row: number[], t: number) => Math.log(row.reduce((s, v) => s + Math.exp(v), 0)) - row[t]!;
    const expected = ce([2, 0, 0], 0) + ce([0, 0, 5], 1) + ce([1, 1, 1], 2) + ce([0, 3, 1], 2);
    expect(score.sum).toBeCloseTo(expected, 5);
    expect(scoreLogits(logits, Int32Array.from([0, -1, -1, 1]), 3)).toMatchObject({ count: 2, correct: 2 });
  });
});

describe('referenceAnswer', () => {
  it('splits a row at its first loss-carrying token when the answer is short and final', () => {
    expect(referenceAnswer(sequence([1, 2, 3, 4, 5], [0, 0, 0, 1, 1]), 16)).toEqual({
      prompt: [1, 2, 3],
      answer: [4, 5],
    });
    expect(referenceAnswer(sequence([1, 2, 3, 4, 5], [0, 0, 0, 1, 1]), 2)?.answer).toEqual([4, 5]); // at the bound
    expect(referenceAnswer(sequence([1, 2, 3, 4, 5], [0, 0, 0, 1, 1]), 1)).toBeNull(); // too long
    expect(referenceAnswer(sequence([1, 2, 3, 4, 5], [0, 1, 0, 1, 1]), 16)).toBeNull(); // two answer spans
    expect(referenceAnswer(sequence([1, 2, 3]), 16)).toBeNull(); // no mask
    const packed = sequence([1, 2, 3, 4], [0, 0, 1, 1]);
    packed.lines = [1, 2];
    expect(referenceAnswer(packed, 16)).toBeNull();
  });
});

describe('evaluate', () => {
  it('gives the loss, perplexity and token accuracy of a direct log-softmax over model.logits', async () => {
    const model = await Engine.create('native').loadModel(baseDir);
    try {
      const rows = [
        sequence([256, 10, 20, 30, 40, 50], [0, 0, 0, 1, 1, 1]),
        sequence([256, 7, 8], [0, 1, 1]),
        sequence([256, 60, 61, 62, 63, 64, 65, 66], [0, 0, 1, 1, 0, 1, 1, 1]),
      ];
      const vocab = model.config.vocabSize;
      let sum = 0;
      let count = 0;
      let hits = 0;
      for (const row of rows) {
        const ids = row.ids;
        const logits = await model.logits({ ids, batch: 1, seqLen: ids.length });
        for (let t = 0; t + 1 < ids.length; t++) {
          if (row.loss![t + 1] !== 1) continue;
          const values = Array.from(logits.subarray(t * vocab, (t + 1) * vocab));
          const max = Math.max(...values);
          const logZ = max + Math.log(values.reduce((s, v) => s + Math.exp(v - max), 0));
          sum += logZ - values[ids[t + 1]!]!;
          if (values.indexOf(max) === ids[t + 1]) hits += 1;
          count += 1;
        }
      }
      const result = await evaluate(model, rows, options({ maxAnswerTokens: 0 }));
      expect(result.tokens).toBe(count);
      expect(count).toBe(3 + 2 + 5);
      expect(result.loss).toBeCloseTo(sum / count, 5);
      expect(result.perplexity).toBeCloseTo(Math.exp(sum / count), 4);
      expect(result.token_accuracy).toBe(hits / count);
      expect(result.sequences).toBe(3);
      expect(result.exact_match).toBeNull();
      expect(result.generated).toBe(0);
    } finally {
      model.dispose();
    }
  });

  it('scores exact match per task with a model whose greedy answer is known', async () => {
    // A stand-in model whose greedy choice is always token 5, by a margin small enough that
    // sampling would often pick another (logits only matter for generation here).
    const vocab = 64;
    const backend = {
      config: { vocabSize: vocab, eosTokenIds: [63] },
      forward: async (batch: { batch: number; seqLen: number }) =>
        new Float32Array(batch.batch * batch.seqLen * vocab).fill(0.5),
      createSession: (): DecodeSession => {
        const logits = new Float32Array(vocab);
        logits[5] = 0.01;
        return { append: async () => logits, length: 0, dispose: () => {} };
      },
    } as unknown as ModelBackend;
    const model = new Model(backend);
    const rows = [
      sequence([1, 2, 5], [0, 0, 1], 'a'), // hit
      sequence([1, 3, 6], [0, 0, 1], 'a'), // miss
      sequence([1, 4, 5, 5], [0, 0, 1, 1], 'b'), // hit
      sequence([1, 5, 5, 6], [0, 0, 1, 1], 'b'), // miss: the second token
      sequence([1, 1, 5], [0, 0, 1]), // hit, no task
      sequence([1, 2, 3, 4, 5, 6], [0, 1, 1, 1, 1, 1], 'c'), // answer too long: not generated
    ];
    const result = await evaluate(model, rows, options({ maxAnswerTokens: 3 }));
    expect(result.generated).toBe(5);
    expect(result.exact_match).toBeCloseTo(3 / 5, 12);
    expect(result.per_task).toEqual({ a: { rows: 2, exact_match: 0.5 }, b: { rows: 2, exact_match: 0.5 } });
    // Uniform logits: every target has probability 1/64.
    expect(result.loss).toBeCloseTo(Math.log(vocab), 6);
    // The generation cap: only the first two eligible rows.
    const capped = await evaluate(model, rows, options({ maxAnswerTokens: 3, maxGenerateRows: 2 }));
    expect(capped.generated).toBe(2);
    expect(capped.per_task).toEqual({ a: { rows: 2, exact_match: 0.5 } });
  });

  it('finds exact match 1 on a model trained to answer a prompt, and 0 for the untrained base', async () => {
    const file = join(dir, 'answer.jsonl');
    writeFileSync(file, JSON.stringify({ prompt: 'Capital of France?', completion: 'Paris', task: 'capitals' }) + '\n');
    const runDir = join(dir, 'run');
    const config = parseTrainConfig({
      model: baseDir,
      method: 'full',
      seed: 1,
      data: { train: file, validation: file, max_seq_len: 64 },
      training: { max_steps: 40, micro_batch_size: 1, eval_every: 20 },
      optimizer: { lr: 0.01 },
      schedule: { kind: 'constant' },
      output_dir: runDir,
    });
    const evals: number[] = [];
    const result = await runTraining(config, { onEval: (r) => evals.push(r.step) });
    expect(evals).toEqual([20, 40]);
    expect(result.finalEval?.exact_match).toBe(1);
    expect(result.finalEval?.per_task).toEqual({ capitals: { rows: 1, exact_match: 1 } });
    const lines = readFileSync(join(runDir, 'eval.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.step)).toEqual([20, 40]);
    expect(lines[1].loss).toBe(result.finalEval!.loss);
    const record = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8'));
    expect(record.final_metrics.eval_exact_match).toBe(1);
    expect(record.final_metrics['eval_exact_match/capitals']).toBe(1);
    expect(record.final_metrics.eval_loss).toBe(result.finalEval!.loss);

    const tokenizer = createTokenizer(byteLevelTokenizerJson(), byteLevelTokenizerConfig());
    const rows = readDataFile(file, { tokenizer, maxSeqLen: 64, addEos: true }).rows;
    // The answer is "Paris" and EOS, after the rendered prompt.
    expect(referenceAnswer(rows[0]!, 16)?.answer).toEqual([...Buffer.from('Paris'), EOS]);
    const base = await Engine.create('native').loadModel(baseDir);
    try {
      const untrained = await evaluate(base, rows, options());
      expect(untrained.generated).toBe(1);
      expect(untrained.exact_match).toBe(0);
      expect(untrained.loss).toBeGreaterThan(result.finalEval!.loss);
    } finally {
      base.dispose();
    }
  });
});
