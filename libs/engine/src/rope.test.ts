import { describe, expect, it } from 'vitest';
import type { LlamaConfig } from '@expertune/formats';
import { ropeFrequencies, ropeTables } from './rope.js';

type RopeConfig = Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>;

// headDim 6 and theta 1e6 give the round frequencies 1, 0.01, 0.0001 (f_i = theta^(−2i/6)).
const plain: RopeConfig = { headDim: 6, ropeTheta: 1e6, ropeScaling: null };

function expectRelativelyClose(actual: ArrayLike<number>, expected: number[], tolerance = 1e-13): void {
  expect(actual.length).toBe(expected.length);
  expected.forEach((value, i) => expect(Math.abs(actual[i]! - value)).toBeLessThanOrEqual(tolerance * Math.abs(value)));
}

describe('ropeFrequencies', () => {
  it('gives 1 / theta^(2i / hd)', () => {
    expectRelativelyClose(ropeFrequencies(plain), [1, 0.01, 0.0001]);
    const llama = ropeFrequencies({ headDim: 128, ropeTheta: 10000, ropeScaling: null });
    expect(llama.length).toBe(64);
    expect(llama[0]).toBe(1);
    expect(llama[32]).toBeCloseTo(0.01, 15); // 10000^(−64/128)
  });

  it('divides by the factor with linear scaling', () => {
    expectRelativelyClose(
      ropeFrequencies({ ...plain, ropeScaling: { type: 'linear', factor: 4 } }),
      [0.25, 0.0025, 0.000025],
    );
  });

  it('keeps high frequencies, scales low ones and interpolates between with llama3 scaling', () => {
    // L = 1000, low 1, high 4: wavelengths below 250 are kept, above 1000 divided by 8.
    const scaled = ropeFrequencies({
      ...plain,
      ropeScaling: {
        type: 'llama3',
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 1000,
      },
    });
    // f_0 = 1: wavelength 2π ≈ 6.28 < 250, kept.
    expect(scaled[0]).toBe(1);
    // f_1 = 0.01: wavelength 628.3 in the band; s = (1000 · 0.01 / 2π − 1) / 3 = 0.19718314363965117,
    // f = (1 − s) · 0.01 / 8 + s · 0.01 = 0.0029753525068469478 (worked out by hand / Python).
    expect(Math.abs(scaled[1]! - 0.0029753525068469478)).toBeLessThan(1e-17);
    // f_2 = 0.0001: wavelength 62832 > 1000, divided by 8.
    expect(Math.abs(scaled[2]! - 0.0000125)).toBeLessThan(1e-19);
  });

  it('treats the band edges continuously (Llama 3.1 settings)', () => {
    const config: RopeConfig = {
      headDim: 128,
      ropeTheta: 500000,
      ropeScaling: {
        type: 'llama3',
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      },
    };
    const unscaled = ropeFrequencies({ ...config, ropeScaling: null });
    const scaled = ropeFrequencies(config);
    let kept = 0;
    let divided = 0;
    let interpolated = 0;
    unscaled.forEach((f, i) => {
      const wavelength = (2 * Math.PI) / f;
      const ratio = scaled[i]! / f;
      if (wavelength < 2048) {
        expect(ratio).toBe(1);
        kept++;
      } else if (wavelength > 8192) {
        expect(ratio).toBeCloseTo(1 / 8, 14);
        divided++;
      } else {
        expect(ratio).toBeGreaterThanOrEqual(1 / 8);
        expect(ratio).toBeLessThanOrEqual(1);
        interpolated++;
      }
    });
    // i ≤ 28 kept, 29…34 interpolated, ≥ 35 divided (worked out from theta^(2i/128) against 2048 / 2π and 8192 / 2π).
    expect([kept, interpolated, divided]).toEqual([29, 6, 29]);
  });

  it('refuses odd head dimensions and unknown scaling types', () => {
    expect(() => ropeFrequencies({ ...plain, headDim: 7 })).toThrow();
    const yarn = { type: 'yarn', factor: 2 } as unknown as LlamaConfig['ropeScaling'];
    expect(() => ropeFrequencies({ ...plain, ropeScaling: yarn })).toThrow(/yarn/);
  });
});

describe('ropeTables', () => {
  it('holds cos and sin of pos · f_i rounded once to float32, [maxPos, hd/2]', () => {
    const config: RopeConfig = {
      ...plain,
      ropeScaling: {
        type: 'llama3',
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 1000,
      },
    };
    const { cos, sin } = ropeTables(config, 101);
    expect(cos.length).toBe(101 * 3);
    expect(Array.from(cos.subarray(0, 3))).toEqual([1, 1, 1]);
    expect(Array.from(sin.subarray(0, 3))).toEqual([0, 0, 0]);
    // Worked out in float64 with Python and rounded to float32.
    const expected: Record<number, { cos: number[]; sin: number[] }> = {
      1: {
        cos: [0.5403022766113281, 0.9999955892562866, 1.0],
        sin: [0.8414709568023682, 0.002975348150357604, 1.249999968422344e-5],
      },
      7: {
        cos: [0.7539022564888, 0.9997830986976624, 1.0],
        sin: [0.6569865942001343, 0.020825961604714394, 8.749999688006938e-5],
      },
      100: {
        cos: [0.8623188734054565, 0.9560619592666626, 0.9999992251396179],
        sin: [-0.5063656568527222, 0.2931646406650543, 0.0012499996228143573],
      },
    };
    for (const [pos, row] of Object.entries(expected)) {
      const start = Number(pos) * 3;
      expect(Array.from(cos.subarray(start, start + 3))).toEqual(row.cos);
      expect(Array.from(sin.subarray(start, start + 3))).toEqual(row.sin);
    }
  });
});
