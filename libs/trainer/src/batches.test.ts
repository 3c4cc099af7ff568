import { describe, expect, it } from 'vitest';

import { epochOrder, makeBatch, microBatches } from './batches.js';

describe('batches', () => {
  it('pads on the right and targets the next token, -1 at the last real position and on padding', () => {
    const batch = makeBatch(
      [
        { ids: Int32Array.from([5, 6, 7]), line: 1 },
        { ids: Int32Array.from([8, 9]), line: 2 },
      ],
      0,
    );
    expect(batch.batch).toBe(2);
    expect(batch.seqLen).toBe(3);
    expect([...batch.ids]).toEqual([5, 6, 7, 8, 9, 0]);
    expect([...batch.targets]).toEqual([6, 7, -1, 9, -1, -1]);
    expect([...batch.tokenMask!]).toEqual([1, 1, 1, 1, 1, 0]);
    expect(batch.taskTypes).toBeUndefined();
  });

  it('passes task types on only when every row of the batch has one', () => {
    const typed = makeBatch(
      [
        { ids: Int32Array.from([5, 6]), line: 1, taskType: 1 },
        { ids: Int32Array.from([8, 9]), line: 2, taskType: 0 },
      ],
      0,
    );
    expect([...typed.taskTypes!]).toEqual([1, 0]);
    const mixed = makeBatch(
      [
        { ids: Int32Array.from([5, 6]), line: 1, taskType: 1 },
        { ids: Int32Array.from([8, 9]), line: 2 },
      ],
      0,
    );
    expect(mixed.taskTypes).toBeUndefined();
  });

  it('orders each epoch by a seeded permutation, different per epoch and per seed', () => {
    const a = epochOrder(50, 1, 0);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(epochOrder(50, 1, 0)).toEqual(a);
    expect(epochOrder(50, 1, 1)).not.toEqual(a);
    expect(epochOrder(50, 2, 0)).not.toEqual(a);
  });

  it('covers every sequence once per epoch, the last micro-batch shorter', () => {
    const sequences = Array.from({ length: 5 }, (_, i) => ({ ids: Int32Array.from([i, i + 100]), line: i + 1 }));
    const it = microBatches(sequences, 2, 3, 0);
    const firstEpoch = [it.next().value!, it.next().value!, it.next().value!];
    expect(firstEpoch.map((b) => b.batch)).toEqual([2, 2, 1]);
    const seen = firstEpoch.flatMap((b) => [...b.ids].filter((_, k) => k % 2 === 0));
    expect(seen.sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it('resumes at an epoch and a micro-batch within it (a checkpoint position)', () => {
    const sequences = Array.from({ length: 5 }, (_, i) => ({ ids: Int32Array.from([i, i + 100]), line: i + 1 }));
    const whole = microBatches(sequences, 2, 3, 0);
    const skipped = Array.from({ length: 4 }, () => whole.next().value!);
    expect(skipped).toHaveLength(4);
    const resumed = microBatches(sequences, 2, 3, 0, { epoch: 1, position: 1 });
    for (let i = 0; i < 5; i++) expect(resumed.next().value).toEqual(whole.next().value);
  });
});
