/** Seeded epoch order and right-padded micro-batches of next-token targets. */
import { hash3, uniform, type TrainBatch } from '@expertune/engine';

import type { TrainingSequence } from './data.js';

/** A permutation of [0, n) for one epoch (Fisher–Yates over the counter hash). */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(uniform(hash3(seed, epoch, i)) * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/**
 * Sequences padded on the right to the longest of them; targets are the next token when that token
 * carries loss (`loss`, when the sequence has one: prompt tokens and each row's first token do
 * not), −1 otherwise, on the last real position and on padding; `tokenMask` is 1 on real tokens and 0 on padding (routers
 * and their losses ignore padding). `taskTypes` is set when every row has a `task_type`
 * (LoRAMoE's constraint needs all of them), and left out otherwise.
 */
export function makeBatch(sequences: readonly TrainingSequence[], padId: number): TrainBatch {
  const seqLen = Math.max(...sequences.map((s) => s.ids.length));
  const ids = new Int32Array(sequences.length * seqLen).fill(padId);
  const targets = new Int32Array(sequences.length * seqLen).fill(-1);
  const tokenMask = new Uint8Array(sequences.length * seqLen);
  sequences.forEach((sequence, b) => {
    ids.set(sequence.ids, b * seqLen);
    tokenMask.fill(1, b * seqLen, b * seqLen + sequence.ids.length);
    for (let t = 0; t + 1 < sequence.ids.length; t++)
      if (!sequence.loss || sequence.loss[t + 1] === 1) targets[b * seqLen + t] = sequence.ids[t + 1]!;
  });
  const batch: TrainBatch = { ids, targets, tokenMask, batch: sequences.length, seqLen };
  if (sequences.every((s) => s.taskType !== undefined))
    batch.taskTypes = Int32Array.from(sequences, (s) => s.taskType!);
  return batch;
}

/**
 * Endless micro-batches, epoch after epoch, each epoch in its own seeded order; `start` resumes
 * at an epoch and a micro-batch within it (a checkpoint's data position).
 */
export function* microBatches(
  sequences: readonly TrainingSequence[],
  batchSize: number,
  seed: number,
  padId: number,
  start: { epoch: number; position: number } = { epoch: 0, position: 0 },
): Generator<TrainBatch> {
  for (let epoch = start.epoch; ; epoch++) {
    const order = epochOrder(sequences.length, seed, epoch);
    const first = epoch === start.epoch ? start.position * batchSize : 0;
    for (let i = first; i < order.length; i += batchSize) {
      yield makeBatch(
        order.slice(i, i + batchSize).map((k) => sequences[k]!),
        padId,
      );
    }
  }
}
