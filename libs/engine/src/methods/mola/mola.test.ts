import { describe, expect, it } from 'vitest';
import { hash3, uniform } from '../../rng.js';
import { molaGateRows, molaGates } from './index.js';

describe('MoLA gates', () => {
  it('keep the top-k probabilities renormalised to 1 (hand-worked rows)', () => {
    const { selected, gates } = molaGates([0.1, 0.4, 0.2, 0.3], 2);
    expect(selected).toEqual([1, 3]);
    expect(Array.from(gates)).toEqual([0, 0.4 / 0.7, 0, 0.3 / 0.7]);
    expect(Array.from(molaGates([0.1, 0.4, 0.2, 0.3], 1).gates)).toEqual([0, 1, 0, 0]);
    expect(Array.from(molaGates([0.25, 0.25, 0.5], 3).gates)).toEqual([0.25, 0.25, 0.5]);
  });

  it('break ties toward the lower expert index', () => {
    expect(molaGates([0.2, 0.3, 0.3, 0.2], 1).selected).toEqual([1]);
    expect(molaGates([0.2, 0.3, 0.3, 0.2], 3).selected).toEqual([1, 2, 0]);
    expect(molaGates([0.25, 0.25, 0.25, 0.25], 2).selected).toEqual([0, 1]);
  });

  it('use exactly k experts per token and their gates sum to 1, on random rows', () => {
    const E = 6;
    const rows = 50;
    const probs = new Float64Array(rows * E);
    for (let t = 0; t < rows; t++) {
      let sum = 0;
      for (let e = 0; e < E; e++) sum += probs[t * E + e] = Math.exp(3 * uniform(hash3(7, t, e)));
      for (let e = 0; e < E; e++) probs[t * E + e] = probs[t * E + e]! / sum;
    }
    for (const k of [1, 2, 4, 6]) {
      const { mask, gates } = molaGateRows(probs, E, k);
      for (let t = 0; t < rows; t++) {
        const row = Array.from(probs.subarray(t * E, (t + 1) * E));
        const kept = Array.from(mask.subarray(t * E, (t + 1) * E));
        expect(kept.reduce((a, b) => a + b, 0)).toBe(k);
        // Every kept probability is at least every dropped one.
        const minKept = Math.min(...row.filter((_, e) => kept[e] === 1));
        const maxDropped = Math.max(-1, ...row.filter((_, e) => kept[e] === 0));
        expect(minKept).toBeGreaterThanOrEqual(maxDropped);
        const g = Array.from(gates.subarray(t * E, (t + 1) * E));
        expect(Math.abs(g.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-12);
        g.forEach((value, e) => expect(value > 0).toBe(kept[e] === 1));
      }
    }
  });
});
