/**
 * Evaluation on held-out sequences, in inference only (the plain forward: no dropout, no gradient,
 * no routing statistics, no FlyLoRA bias update): mean cross-entropy per counted token,
 * perplexity, token accuracy, and, for rows with a short reference answer, exact match by greedy
 * generation, overall and per task (docs/eval.md).
 */
import { argmax, generate, type Model } from '@expertune/engine';

import { makeBatch } from './batches.js';
import type { TrainingSequence } from './data.js';

export interface EvalOptions {
  /** Pads batches (its positions never count). */
  padId: number;
  /** Sequences per forward. */
  batchSize: number;
  /** Rows whose answer has more tokens than this are not generated (0: no generation). */
  maxAnswerTokens: number;
  /** At most this many rows are generated (the first eligible ones, in file order). */
  maxGenerateRows: number;
  /** Generation stops after any of these (the model's EOS ids). */
  stopIds: readonly number[];
}

export interface TaskResult {
  /** Rows of this task that were generated. */
  rows: number;
  /** Fraction of them whose greedy answer equals the reference. */
  exact_match: number;
}

export interface EvalResult {
  /** Mean cross-entropy over the counted (loss-carrying) target tokens. */
  loss: number;
  perplexity: number;
  /** Fraction of counted targets that are the argmax of their logits. */
  token_accuracy: number;
  /** Counted target tokens. */
  tokens: number;
  sequences: number;
  /** Fraction of generated rows answered exactly; null when no row was eligible. */
  exact_match: number | null;
  /** Rows generated for exact match. */
  generated: number;
  /** Exact match per `task` of the generated rows that carry one. */
  per_task: Record<string, TaskResult>;
}

/** Σ cross-entropy, count and argmax hits over the positions of `logits` `[B·T, V]` whose target is ≥ 0. */
export function scoreLogits(
  logits: Float32Array,
  targets: Int32Array,
  vocab: number,
): { sum: number; count: number; correct: number } {
  let sum = 0;
  let count = 0;
  let correct = 0;
  for (let row = 0; row < targets.length; row++) {
    const target = targets[row]!;
    if (target < 0) continue;
    const values = logits.subarray(row * vocab, (row + 1) * vocab);
    let max = -Infinity;
    for (const v of values) max = Math.max(max, v);
    let total = 0;
    for (const v of values) total += Math.exp(v - max);
    sum += max + Math.log(total) - values[target]!;
    if (argmax(values) === target) correct += 1;
    count += 1;
  }
  return { sum, count, correct };
}

/**
 * A row's prompt and reference answer, when it has a short one: the loss-carrying tokens form one
 * span that runs to the end of the row after a non-empty prompt, of at most `maxTokens` tokens
 * (packed sequences and rows without a loss mask have none).
 */
export function referenceAnswer(
  sequence: TrainingSequence,
  maxTokens: number,
): { prompt: number[]; answer: number[] } | null {
  const { ids, loss } = sequence;
  if (!loss || sequence.lines !== undefined) return null;
  const start = loss.indexOf(1);
  if (start < 1 || ids.length - start > maxTokens) return null;
  for (let t = start; t < ids.length; t++) if (loss[t] !== 1) return null;
  return { prompt: Array.from(ids.subarray(0, start)), answer: Array.from(ids.subarray(start)) };
}

export async function evaluate(
  model: Model,
  sequences: readonly TrainingSequence[],
  options: EvalOptions,
): Promise<EvalResult> {
  let sum = 0;
  let count = 0;
  let correct = 0;
  for (let i = 0; i < sequences.length; i += options.batchSize) {
    const batch = makeBatch(sequences.slice(i, i + options.batchSize), options.padId);
    const logits = await model.logits({ ids: batch.ids, batch: batch.batch, seqLen: batch.seqLen });
    const score = scoreLogits(logits, batch.targets, model.config.vocabSize);
    sum += score.sum;
    count += score.count;
    correct += score.correct;
  }
  if (count === 0) throw new Error('the evaluation data has no token to predict');

  let generated = 0;
  let matched = 0;
  const tasks = new Map<string, { rows: number; matched: number }>();
  for (const sequence of sequences) {
    if (generated >= options.maxGenerateRows) break;
    const reference = referenceAnswer(sequence, options.maxAnswerTokens);
    if (!reference) continue;
    const output = await generate(model, reference.prompt, {
      maxNewTokens: reference.answer.length,
      greedy: true,
      stopIds: options.stopIds,
    });
    const hit = output.length === reference.answer.length && output.every((id, k) => id === reference.answer[k]);
    generated += 1;
    if (hit) matched += 1;
    if (sequence.task !== undefined) {
      const task = tasks.get(sequence.task) ?? { rows: 0, matched: 0 };
      task.rows += 1;
      if (hit) task.matched += 1;
      tasks.set(sequence.task, task);
    }
  }
  const loss = sum / count;
  return {
    loss,
    perplexity: Math.exp(loss),
    token_accuracy: correct / count,
    tokens: count,
    sequences: sequences.length,
    exact_match: generated > 0 ? matched / generated : null,
    generated,
    per_task: Object.fromEntries(
      [...tasks]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, t]) => [name, { rows: t.rows, exact_match: t.matched / t.rows }]),
    ),
  };
}
