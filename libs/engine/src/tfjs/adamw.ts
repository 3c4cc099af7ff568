/**
 * AdamW with PyTorch semantics and global-norm clipping, per docs/engine.md ("Optimizer"), on plain
 * float32 arrays. Each element is updated in float64 arithmetic and stored back as float32 (the
 * parameter, `m` and `v` are float32 state, as in PyTorch).
 */
import type { AdamWHyperparameters } from '../types.js';

export interface AdamWState {
  /** First moment, same length as the parameter. */
  m: Float32Array;
  /** Second moment. */
  v: Float32Array;
  /** Updates applied so far (PyTorch keeps this per parameter); the next update is `step + 1`. */
  step: number;
}

export function createAdamWState(size: number): AdamWState {
  return { m: new Float32Array(size), v: new Float32Array(size), step: 0 };
}

/** `sqrt(Σ g²)` over all gradients, accumulated in float64. */
export function globalGradNorm(gradients: readonly Float32Array[]): number {
  let sumOfSquares = 0;
  for (const gradient of gradients) {
    for (let i = 0; i < gradient.length; i++) sumOfSquares += gradient[i]! * gradient[i]!;
  }
  return Math.sqrt(sumOfSquares);
}

/** The factor every gradient is multiplied by: `maxGradNorm / (‖g‖ + 1e-6)` when clipping applies, else 1. */
export function clipCoefficient(gradNorm: number, maxGradNorm: number): number {
  return maxGradNorm > 0 && gradNorm > maxGradNorm ? maxGradNorm / (gradNorm + 1e-6) : 1;
}

/**
 * One AdamW update of `param` in place with the (already clipped) gradient `grad`:
 * `θ ← θ − lr·wd·θ` (only when `decay`), `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
 * `θ ← θ − lr · (m / (1−β₁ᵗ)) / (sqrt(v / (1−β₂ᵗ)) + ε)`.
 */
export function adamWUpdate(
  param: Float32Array,
  grad: Float32Array,
  state: AdamWState,
  hyper: Pick<AdamWHyperparameters, 'lr' | 'beta1' | 'beta2' | 'eps' | 'weightDecay'>,
  decay: boolean,
): void {
  if (grad.length !== param.length || state.m.length !== param.length || state.v.length !== param.length) {
    throw new Error('AdamW: parameter, gradient and state sizes differ');
  }
  const { lr, beta1, beta2, eps, weightDecay } = hyper;
  state.step += 1;
  const t = state.step;
  const biasCorrection1 = 1 - Math.pow(beta1, t);
  const biasCorrection2 = 1 - Math.pow(beta2, t);
  const decayStep = decay ? lr * weightDecay : 0;
  const { m, v } = state;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i]!;
    if (decayStep !== 0) param[i] = param[i]! - decayStep * param[i]!;
    m[i] = beta1 * m[i]! + (1 - beta1) * g;
    v[i] = beta2 * v[i]! + (1 - beta2) * g * g;
    const mHat = m[i]! / biasCorrection1;
    const vHat = v[i]! / biasCorrection2;
    param[i] = param[i]! - (lr * mHat) / (Math.sqrt(vHat) + eps);
  }
}
