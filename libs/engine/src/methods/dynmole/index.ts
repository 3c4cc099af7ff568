/**
 * DynMoLE (docs/methods.md "Gates", "DynMoLE"): the normalised Tsallis entropy of the router
 * probabilities decides between broadcasting a token to every expert (`G = p`) and a top-p mask
 * (`G = p ⊙ mask`, not renormalised) in which the expert crossing `top_p` is excluded and the
 * first `keep_top_k` ranked experts are always kept. Ties rank toward the lower expert index.
 */
import type { DynmoleAdapterConfig } from '../../types.js';
import { moePeftFfnTemplate, rankDescending } from '../routing.js';

/**
 * Normalised Tsallis entropy `Ŝ_q(p) = S_q(p̃) / S_max` with `p̃ = p + ε` (not renormalised):
 * `S_q = (1 − Σ p̃^q)/(q − 1)`, `S_max = (1 − E^{1−q})/(q − 1)`; at `q = 1` Shannon's
 * `S = −Σ p̃ ln p̃`, `S_max = ln E`. 0 when `E = 1` (nothing to spread over).
 */
export function tsallisEntropy(p: ArrayLike<number>, q: number, eps: number): number {
  const E = p.length;
  if (E <= 1) return 0;
  if (q === 1) {
    let s = 0;
    for (let i = 0; i < E; i++) {
      const v = p[i]! + eps;
      if (v > 0) s -= v * Math.log(v);
    }
    return s / Math.log(E);
  }
  let power = 0;
  for (let i = 0; i < E; i++) power += Math.pow(p[i]! + eps, q);
  const s = (1 - power) / (q - 1);
  const sMax = (1 - Math.pow(E, 1 - q)) / (q - 1);
  return s / sMax;
}

/**
 * The top-p mask of one probability row: sort descending, `c_j` the cumulative sums (float64);
 * keep rank `j` iff `c_j ≤ topP` or `j < keepTopK`.
 */
export function dynmoleTopPMask(p: ArrayLike<number>, topP: number, keepTopK: number): Uint8Array {
  const mask = new Uint8Array(p.length);
  let cumulative = 0;
  rankDescending(p).forEach((e, j) => {
    cumulative += p[e]!;
    if (cumulative <= topP || j < keepTopK) mask[e] = 1;
  });
  return mask;
}

export type DynmoleRouting = Pick<
  DynmoleAdapterConfig,
  'topP' | 'keepTopK' | 'entropyIndex' | 'entropyThreshold' | 'entropyEps'
>;

export interface DynmoleRoute {
  /** 1 where `G_e = p_e`, 0 where `G_e = 0` (all 1 when broadcast). */
  mask: Uint8Array;
  /** `Ŝ_q(p) > threshold`: sent to every expert. */
  broadcast: boolean;
  /** `Ŝ_q(p)`. */
  entropy: number;
}

/** DynMoLE's hybrid routing of one probability row. */
export function dynmoleRoute(p: ArrayLike<number>, options: DynmoleRouting): DynmoleRoute {
  const entropy = tsallisEntropy(p, options.entropyIndex, options.entropyEps);
  const broadcast = entropy > options.entropyThreshold;
  const mask = broadcast ? new Uint8Array(p.length).fill(1) : dynmoleTopPMask(p, options.topP, options.keepTopK);
  return { mask, broadcast, entropy };
}

/** DynMoLE's routing of `[rows, E]` probability rows. */
export function dynmoleRouteRows(
  probs: ArrayLike<number>,
  experts: number,
  options: DynmoleRouting,
): { mask: Uint8Array; broadcast: Uint8Array; entropy: Float64Array } {
  const rows = probs.length / experts;
  const mask = new Uint8Array(probs.length);
  const broadcast = new Uint8Array(rows);
  const entropy = new Float64Array(rows);
  const row = new Float64Array(experts);
  for (let t = 0; t < rows; t++) {
    for (let e = 0; e < experts; e++) row[e] = probs[t * experts + e]!;
    const route = dynmoleRoute(row, options);
    mask.set(route.mask, t * experts);
    broadcast[t] = route.broadcast ? 1 : 0;
    entropy[t] = route.entropy;
  }
  return { mask, broadcast, entropy };
}

/**
 * Defaults (../shared/docs/methods.md §6, DynMoLE's config and template): the FFN projections,
 * 6 experts of r = 24, α = 48, dropout 0.05, top_p 0.75, keep_top_k 2, threshold 0.9, q = 1.1,
 * ε = 1e-5, λ_ent = 0.01, the pooled load balance with λ = 1e-3, no z-loss.
 */
export function dynmoleDefaults(numLayers: number): DynmoleAdapterConfig {
  return {
    method: 'dynmole',
    ...moePeftFfnTemplate(numLayers),
    balance: { coef: 1e-3, form: 'pooled', scope: 'micro' },
    zLossCoef: 0,
    topP: 0.75,
    keepTopK: 2,
    entropyIndex: 1.1,
    entropyThreshold: 0.9,
    entropyEps: 1e-5,
    entropyCoef: 0.01,
  };
}
