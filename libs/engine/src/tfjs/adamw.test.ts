import { describe, expect, it } from 'vitest';
import { adamWUpdate, clipCoefficient, createAdamWState, globalGradNorm } from './adamw.js';

const hyper = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

function expectClose(actual: ArrayLike<number>, expected: number[], relative = 1e-6): void {
  expected.forEach((value, i) => expect(Math.abs(actual[i]! - value)).toBeLessThanOrEqual(relative * Math.abs(value)));
}

describe('adamWUpdate', () => {
  it('follows a hand-worked two-step example for a decayed matrix', () => {
    const theta = Float32Array.from([1, -2]);
    const state = createAdamWState(2);

    // Step 1, g = [0.1, −0.2]: θ·(1 − 0.1·0.01) = [0.999, −1.998]; m = [0.01, −0.02], v = [1e-5, 4e-5];
    // m̂ = m / 0.1 = [0.1, −0.2], √v̂ = √(v / 0.001) = [0.1, 0.2];
    // θ −= 0.1 · m̂ / (√v̂ + 1e-8) = [0.099999990, −0.099999995] → [0.89900001, −1.898000005].
    adamWUpdate(theta, Float32Array.from([0.1, -0.2]), state, hyper, true);
    expect(state.step).toBe(1);
    expectClose(state.m, [0.01, -0.02]);
    expectClose(state.v, [1e-5, 4e-5]);
    expectClose(theta, [0.899000009999999, -1.8980000049999997]);

    // Step 2, g = [0.3, 0.1]: θ·0.999 = [0.89810101, −1.89610200]; m = [0.039, −0.008],
    // v = [9.999e-5, 4.996e-5]; m̂ = m / 0.19, v̂ = v / 0.001999;
    // θ₀ = 0.89810101 − 0.1 · 0.20526316 / (0.22365154 + 1e-8) = 0.80632290.
    adamWUpdate(theta, Float32Array.from([0.3, 0.1]), state, hyper, true);
    expect(state.step).toBe(2);
    expectClose(state.m, [0.039, -0.008]);
    expectClose(state.v, [9.999e-5, 4.996e-5]);
    expectClose(theta, [0.8063229021955899, -1.8694683027136758]);
  });

  it('does not decay when told not to (norms, biases)', () => {
    const theta = Float32Array.from([0.5]);
    const state = createAdamWState(1);
    // Step 1: m̂ = 0.1, √v̂ = 0.1 → θ = 0.5 − 0.1 · 0.1 / (0.1 + 1e-8) = 0.40000001.
    adamWUpdate(theta, Float32Array.from([0.1]), state, hyper, false);
    expectClose(theta, [0.40000000999999896]);
    adamWUpdate(theta, Float32Array.from([0.3]), state, hyper, false);
    expectClose(theta, [0.30822190220558987]);
  });

  it('decays alone when the gradient is zero', () => {
    const theta = Float32Array.from([2, -4]);
    adamWUpdate(theta, new Float32Array(2), createAdamWState(2), hyper, true);
    expectClose(theta, [2 * 0.999, -4 * 0.999]);
  });
});

describe('clipping', () => {
  it('computes the global norm over all tensors and clips only above the maximum', () => {
    const norm = globalGradNorm([Float32Array.from([3, 0]), Float32Array.from([4])]);
    expect(norm).toBe(5);
    expect(clipCoefficient(norm, 1)).toBeCloseTo(1 / (5 + 1e-6), 15);
    expect(clipCoefficient(norm, 5)).toBe(1);
    expect(clipCoefficient(norm, 10)).toBe(1);
    expect(clipCoefficient(norm, 0)).toBe(1);
  });
});
