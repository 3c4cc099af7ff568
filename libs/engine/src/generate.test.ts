import { describe, expect, it } from 'vitest';

import { argmax, sampleTopP } from './generate.js';

describe('token choice', () => {
  it('argmax returns the first maximum', () => {
    expect(argmax(Float32Array.from([0, 3, 1, 3]))).toBe(1);
  });

  it('top-p keeps the smallest set of most likely tokens reaching p', () => {
    // softmax of ln(p) is p: probabilities 0.5, 0.3, 0.15, 0.05.
    const logits = Float32Array.from([0.5, 0.3, 0.15, 0.05].map(Math.log));
    // p = 0.75 keeps {0, 1} (mass 0.8): u spans them in proportion 0.5 : 0.3.
    expect(sampleTopP(logits, 1, 0.75, 0)).toBe(0);
    expect(sampleTopP(logits, 1, 0.75, 0.62)).toBe(0); // 0.62·0.8 = 0.496 < 0.5
    expect(sampleTopP(logits, 1, 0.75, 0.63)).toBe(1); // 0.504 ≥ 0.5
    expect(sampleTopP(logits, 1, 0.75, 0.999)).toBe(1); // never token 2 or 3
    // p = 1 keeps everything.
    expect(sampleTopP(logits, 1, 1, 0.999)).toBe(3);
  });

  it('temperature sharpens the distribution', () => {
    const logits = Float32Array.from([Math.log(0.6), Math.log(0.4)]);
    // At T = 0.5 the probabilities are 0.36 : 0.16 → 0.692 : 0.308.
    expect(sampleTopP(logits, 0.5, 1, 0.68)).toBe(0);
    expect(sampleTopP(logits, 0.5, 1, 0.7)).toBe(1);
  });
});
