import { describe, expect, it } from 'vitest';
import {
  dropoutKeepMask,
  dropoutKeepScale,
  dropoutMultiplier,
  dropoutThreshold,
  hash3,
  loraInitA,
  mix32,
  uniform,
} from './rng.js';

/** mix32 with BigInt arithmetic, written straight from docs/engine.md, independent of Math.imul. */
function mix32BigInt(value: number): number {
  const mask = 0xffffffffn;
  let x = BigInt(value) & mask;
  x ^= x >> 16n;
  x = (x * 0x7feb352dn) & mask;
  x ^= x >> 15n;
  x = (x * 0x846ca68bn) & mask;
  x ^= x >> 16n;
  return Number(x);
}

describe('mix32', () => {
  it('matches values worked out with arbitrary-precision integers (Python)', () => {
    expect(mix32(0)).toBe(0);
    expect(mix32(1)).toBe(0x688990c0);
    expect(mix32(2)).toBe(0xd1132181);
    expect(mix32(0xdeadbeef)).toBe(0xe628c683);
    expect(mix32(0xffffffff)).toBe(0x6768824a);
    expect(mix32(123456789)).toBe(0xa8f1db88);
  });

  it('matches a BigInt implementation on many inputs, and returns uint32', () => {
    for (let i = 0; i < 2000; i++) {
      const input = (Math.imul(i, 0x9e3779b1) + i * 7919) >>> 0;
      const result = mix32(input);
      expect(result).toBe(mix32BigInt(input));
      expect(result).toBeGreaterThanOrEqual(0);
      expect(result).toBeLessThan(2 ** 32);
    }
  });

  it('takes its input modulo 2^32', () => {
    expect(mix32(-1)).toBe(mix32(0xffffffff));
    expect(mix32(2 ** 32 + 5)).toBe(mix32(5));
  });
});

describe('hash3 and uniform', () => {
  it('composes mix32 as specified', () => {
    expect(hash3(42, 0, 0)).toBe(3775335865);
    expect(hash3(42, 0, 1)).toBe(1591891513);
    expect(hash3(1, 2, 3)).toBe(1066372762);
    expect(hash3(7, 10, 5)).toBe(85004932);
    expect(hash3(1, 2, 3)).toBe(mix32BigInt(3 ^ mix32BigInt(2 ^ mix32BigInt(1))));
  });

  it('maps the top 24 bits to [0, 1)', () => {
    expect(uniform(0)).toBe(0);
    expect(uniform(0xff)).toBe(0);
    expect(uniform(0x100)).toBe(2 ** -24);
    expect(uniform(0xffffffff)).toBe(1 - 2 ** -24);
    expect(uniform(3775335865)).toBeCloseTo(0.8790138363838196, 15);
    // Exactly representable in float32.
    expect(Math.fround(uniform(3775335865))).toBe(uniform(3775335865));
  });
});

describe('loraInitA', () => {
  it('gives (2u − 1) / sqrt(in) with u = uniform(hash3(seed, 2·site, i))', () => {
    // Worked out in Python for seed 42, rank 2, in 4.
    const site0 = [
      0.3790138363838196, -0.12935888767242432, -0.23027771711349487, -0.2773825526237488, 0.3269001245498657,
      -0.06309390068054199, -0.47277772426605225, 0.49746865034103394,
    ];
    const site5 = [
      -0.06966209411621094, -0.010008394718170166, -0.131098210811615, -0.46436989307403564, -0.3219316005706787,
      0.47789549827575684, 0.027720093727111816, -0.10356438159942627,
    ];
    expect(Array.from(loraInitA(42, 0, 2, 4))).toEqual(site0.map(Math.fround));
    expect(Array.from(loraInitA(42, 5, 2, 4))).toEqual(site5.map(Math.fround));
  });

  it('stays within the kaiming-uniform bound and is centred', () => {
    const values = loraInitA(7, 3, 16, 256);
    const bound = 1 / 16;
    let sum = 0;
    for (const value of values) {
      expect(Math.abs(value)).toBeLessThanOrEqual(bound);
      sum += value;
    }
    expect(Math.abs(sum / values.length)).toBeLessThan(0.05 * bound);
  });
});

describe('dropout masks', () => {
  it('uses the threshold floor(p · 2^32)', () => {
    expect(dropoutThreshold(0)).toBe(0);
    expect(dropoutThreshold(0.5)).toBe(2 ** 31);
    expect(dropoutThreshold(0.1)).toBe(429496729);
    expect(() => dropoutThreshold(1)).toThrow();
    expect(() => dropoutThreshold(-0.1)).toThrow();
  });

  it('keeps element (t, j) iff hash3(seed, site, t·in + j) ≥ threshold', () => {
    const rows = 3;
    const inFeatures = 5;
    const mask = dropoutKeepMask(99, 4, rows, inFeatures, 0.3);
    const threshold = Math.floor(0.3 * 2 ** 32);
    for (let t = 0; t < rows; t++) {
      for (let j = 0; j < inFeatures; j++) {
        const hash = mix32BigInt((t * inFeatures + j) ^ mix32BigInt(4 ^ mix32BigInt(99)));
        expect(mask[t * inFeatures + j]).toBe(hash >= threshold ? 1 : 0);
      }
    }
  });

  it('keeps about 1 − p of the elements and keeps all of them at p = 0', () => {
    for (const p of [0.05, 0.1, 0.5, 0.9]) {
      const mask = dropoutKeepMask(12345, 17, 200, 100, p);
      const kept = mask.reduce((a, b) => a + b, 0) / mask.length;
      // 20,000 Bernoulli draws: standard deviation ≤ 0.0036.
      expect(Math.abs(kept - (1 - p))).toBeLessThan(0.015);
    }
    expect(dropoutKeepMask(1, 2, 10, 10, 0).every((value) => value === 1)).toBe(true);
  });

  it('differs between sites and seeds', () => {
    const a = dropoutKeepMask(1, 0, 8, 8, 0.5);
    const b = dropoutKeepMask(1, 1, 8, 8, 0.5);
    const c = dropoutKeepMask(2, 0, 8, 8, 0.5);
    expect(a).not.toEqual(b);
    expect(a).not.toEqual(c);
  });

  it('scales kept values by 1 / (1 − p)', () => {
    const multiplier = dropoutMultiplier(5, 6, 4, 4, 0.25);
    const mask = dropoutKeepMask(5, 6, 4, 4, 0.25);
    expect(dropoutKeepScale(0.25)).toBe(Math.fround(4 / 3));
    multiplier.forEach((value, index) => expect(value).toBe(mask[index] === 1 ? Math.fround(4 / 3) : 0));
  });
});
