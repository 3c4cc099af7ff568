import { describe, expect, it } from 'vitest';

import { learningRate, type LearningRateSchedule } from './schedule.js';

const base: LearningRateSchedule = { kind: 'cosine', lr: 1, warmupSteps: 4, totalSteps: 14, minLrRatio: 0 };

describe('learning-rate schedules', () => {
  it('warms up linearly from lr/warmup, so the first update is not wasted', () => {
    expect([0, 1, 2, 3].map((t) => learningRate(base, t))).toEqual([0.25, 0.5, 0.75, 1]);
  });

  it('cosine: peak after warmup, half way at the middle, the floor at the end', () => {
    // progress = (t − 4) / 10
    expect(learningRate(base, 4)).toBeCloseTo(1, 12);
    expect(learningRate(base, 9)).toBeCloseTo(0.5, 12);
    expect(learningRate(base, 14)).toBeCloseTo(0, 12);
    expect(learningRate({ ...base, minLrRatio: 0.1 }, 9)).toBeCloseTo(0.1 + 0.9 * 0.5, 12);
    expect(learningRate({ ...base, minLrRatio: 0.1 }, 14)).toBeCloseTo(0.1, 12);
  });

  it('linear decays to the floor; constant stays at lr', () => {
    const linear = { ...base, kind: 'linear' as const };
    expect(learningRate(linear, 6)).toBeCloseTo(0.8, 12);
    expect(learningRate({ ...linear, minLrRatio: 0.5 }, 9)).toBeCloseTo(0.75, 12);
    expect(learningRate({ ...base, kind: 'constant' }, 13)).toBe(1);
  });
});
