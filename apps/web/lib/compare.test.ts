import { describe, expect, it } from 'vitest';

import { finalMetrics } from './compare';

const s = (name: string, values: number[]) => ({ name, steps: values.map((_, i) => i), values, downsampled: false });

describe('finalMetrics', () => {
  it('puts last values side by side, per-task exact match included, and marks the best run', () => {
    const rows = finalMetrics([
      [
        s('train/loss', [3, 1.5]),
        s('eval/loss', [2.0]),
        s('eval/exact_match', [0.5]),
        s('eval/exact_match/add', [0.6]),
      ],
      [
        s('train/loss', [3, 1.2]),
        s('eval/loss', [2.2]),
        s('eval/exact_match', [0.7]),
        s('eval/exact_match/sub', [0.4]),
      ],
    ]);
    expect(rows).toEqual([
      { name: 'train/loss', values: [1.5, 1.2], best: 1 },
      { name: 'eval/loss', values: [2.0, 2.2], best: 0 },
      { name: 'eval/exact_match', values: [0.5, 0.7], best: 1 },
      { name: 'eval/exact_match/add', values: [0.6, null], best: -1 },
      { name: 'eval/exact_match/sub', values: [null, 0.4], best: -1 },
    ]);
  });
});
