import { describe, expect, it } from 'vitest';
import { dynmoleRoute, dynmoleRouteRows, dynmoleTopPMask, tsallisEntropy } from './index.js';

const routing = { topP: 0.75, keepTopK: 2, entropyIndex: 1.1, entropyThreshold: 0.9, entropyEps: 1e-5 };

describe('normalised Tsallis entropy', () => {
  it('matches the worked values of the design notes (N = 6, q = 1.1)', () => {
    expect(tsallisEntropy([0.5, 0.1, 0.1, 0.1, 0.1, 0.1], 1.1, 1e-5)).toBeCloseTo(0.83, 2);
    expect(tsallisEntropy([0.6, 0.2, 0.05, 0.05, 0.05, 0.05], 1.1, 1e-5)).toBeCloseTo(0.68, 2);
    expect(tsallisEntropy([0.3, 0.3, 0.1, 0.1, 0.1, 0.1], 1.1, 1e-5)).toBeCloseTo(0.92, 2);
    expect(tsallisEntropy([1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6], 1.1, 1e-5)).toBeCloseTo(1, 3);
  });

  it('is Shannon over ln N at q = 1, with ε added to each probability', () => {
    // (½, ½, 0, 0) without ε: ln 2 / ln 4 = ½ exactly.
    expect(tsallisEntropy([0.5, 0.5, 0, 0], 1, 0)).toBeCloseTo(0.5, 15);
    const eps = 1e-3;
    const expected = -(2 * (0.5 + eps) * Math.log(0.5 + eps) + 2 * eps * Math.log(eps)) / Math.log(4);
    expect(tsallisEntropy([0.5, 0.5, 0, 0], 1, eps)).toBeCloseTo(expected, 14);
    // q = 2: (1 − Σ p²) / (1 − 1/N).
    expect(tsallisEntropy([0.5, 0.25, 0.25], 2, 0)).toBeCloseTo((1 - 0.375) / (1 - 1 / 3), 14);
    expect(tsallisEntropy([1], 1.1, 1e-5)).toBe(0);
  });
});

describe('DynMoLE hybrid routing', () => {
  it('excludes the expert whose cumulative sum crosses top_p', () => {
    // c = 0.5, 0.6, 0.7, 0.8: the fourth crosses 0.75, so three are kept (weight 0.7).
    expect(Array.from(dynmoleTopPMask([0.5, 0.1, 0.1, 0.1, 0.1, 0.1], 0.75, 2))).toEqual([1, 1, 1, 0, 0, 0]);
    // c = 0.6, 0.8: the second crosses, keep_top_k = 2 keeps it anyway.
    expect(Array.from(dynmoleTopPMask([0.6, 0.2, 0.05, 0.05, 0.05, 0.05], 0.75, 2))).toEqual([1, 1, 0, 0, 0, 0]);
    // With keep_top_k = 1 the crossing second expert goes.
    expect(Array.from(dynmoleTopPMask([0.6, 0.2, 0.05, 0.05, 0.05, 0.05], 0.75, 1))).toEqual([1, 0, 0, 0, 0, 0]);
    // Order by probability, not index; exact equality with top_p keeps (0.25 + 0.5 = 0.75).
    expect(Array.from(dynmoleTopPMask([0.125, 0.5, 0.125, 0.25], 0.75, 1))).toEqual([0, 1, 0, 1]);
    // Ties rank toward the lower index: of the four 0.125s the first two are kept (c = 0.5, 0.625, 0.75, 0.875).
    expect(Array.from(dynmoleTopPMask([0.125, 0.5, 0.125, 0.125, 0.125], 0.75, 1))).toEqual([1, 1, 1, 0, 0]);
  });

  it('broadcasts exactly the rows whose normalised entropy exceeds the threshold', () => {
    const rows = [
      [0.5, 0.1, 0.1, 0.1, 0.1, 0.1], // Ŝ ≈ 0.83
      [0.6, 0.2, 0.05, 0.05, 0.05, 0.05], // Ŝ ≈ 0.68
      [0.3, 0.3, 0.1, 0.1, 0.1, 0.1], // Ŝ ≈ 0.92
      [1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6], // Ŝ ≈ 1.00
    ];
    const expectations = [
      { threshold: 0.9, broadcast: [0, 0, 1, 1] },
      { threshold: 0.8, broadcast: [1, 0, 1, 1] },
      { threshold: 0.6, broadcast: [1, 1, 1, 1] },
      { threshold: 1, broadcast: [0, 0, 0, 0] },
    ];
    for (const { threshold, broadcast } of expectations) {
      const result = dynmoleRouteRows(rows.flat(), 6, { ...routing, entropyThreshold: threshold });
      expect(Array.from(result.broadcast), `threshold ${threshold}`).toEqual(broadcast);
      rows.forEach((row, t) => {
        const mask = Array.from(result.mask.subarray(t * 6, (t + 1) * 6));
        if (broadcast[t] === 1) expect(mask).toEqual([1, 1, 1, 1, 1, 1]);
        else expect(mask).toEqual(Array.from(dynmoleTopPMask(row, 0.75, 2)));
      });
    }
    const confident = dynmoleRoute(rows[0]!, routing);
    expect(confident.broadcast).toBe(false);
    expect(Array.from(confident.mask)).toEqual([1, 1, 1, 0, 0, 0]);
    expect(confident.entropy).toBeCloseTo(0.8307, 4);
  });
});
