import { describe, expect, it } from 'vitest';
import {
  coefficientOfVariationSquared,
  localizedBalancingConstraint,
  loramoeExpertGroup,
  loramoeGroupMultiplier,
} from './index.js';

describe('LoRAMoE localized balancing constraint', () => {
  it('splits experts into group 1 (the first half) and group 0', () => {
    expect([0, 1, 2, 3].map((e) => loramoeExpertGroup(e, 4))).toEqual([1, 1, 0, 0]);
    expect(loramoeGroupMultiplier(0, 4, 1, 0.1)).toBeCloseTo(1.1, 15);
    expect(loramoeGroupMultiplier(3, 4, 1, 0.1)).toBeCloseTo(0.9, 15);
    expect(loramoeGroupMultiplier(3, 4, 0, 0.1)).toBeCloseTo(1.1, 15);
  });

  // B = 2 rows of T = 2 tokens, E = 2 experts, δ = 0.5, task types (1, 0).
  // Row 0: p = (0.7, 0.3), (0.6, 0.4) → Q = (1.3, 0.7); row 1: (0.2, 0.8), (0.5, 0.5) → Q = (0.7, 1.3).
  // I = [[1.5, 0.5], [0.5, 1.5]] → Z = (1.95, 0.35, 0.35, 1.95), mean 1.15, deviations ±0.8,
  // unbiased variance 4·0.64/3 = 2.56/3, CV² = (2.56/3) / 1.15² = 0.853333… / 1.3225.
  const probs = [0.7, 0.3, 0.6, 0.4, 0.2, 0.8, 0.5, 0.5];
  const input = { probs, batch: 2, seqLen: 2, experts: 2, taskTypes: [1, 0], delta: 0.5 };

  it('equals the hand-worked example', () => {
    expect(localizedBalancingConstraint(input)).toBeCloseTo(2.56 / 3 / 1.3225, 8);
  });

  it('leaves padding out of Q', () => {
    // The last token of row 1 is padding: Q[1] = (0.2, 0.8), Z = (1.95, 0.35, 0.1, 1.2), mean 0.9,
    // deviations (1.05, −0.55, −0.8, 0.3), Σ² = 2.135, CV² = (2.135/3) / 0.81.
    expect(localizedBalancingConstraint({ ...input, tokenMask: [1, 1, 1, 0] })).toBeCloseTo(2.135 / 3 / 0.81, 8);
  });

  it('uses the unbiased variance and is 0 for one value', () => {
    expect(coefficientOfVariationSquared([1, 3])).toBeCloseTo(2 / 4, 8); // var = 2, mean² = 4
    expect(coefficientOfVariationSquared([5])).toBe(0);
  });
});
