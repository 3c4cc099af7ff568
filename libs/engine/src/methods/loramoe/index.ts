/**
 * LoRAMoE (docs/methods.md "Gates", "Localized balancing constraint"): dense gates `G = p`, and
 * the constraint `CV²(I ⊙ Q)` over a site's per-row importance `Q[b, e] = Σ_{t ∈ row b} m_t p_{t,e}`.
 */
import type { LoramoeAdapterConfig } from '../../types.js';
import { moePeftFfnTemplate } from '../routing.js';

/**
 * The group of expert `e` among `E` (even): group 1 = experts `0 … E/2 − 1`, group 0 = the rest.
 */
export function loramoeExpertGroup(expert: number, experts: number): 0 | 1 {
  return expert < experts / 2 ? 1 : 0;
}

/** `I[b, e]`: `1 + δ` when expert `e`'s group equals the row's task type, else `1 − δ`. */
export function loramoeGroupMultiplier(expert: number, experts: number, taskType: number, delta: number): number {
  return loramoeExpertGroup(expert, experts) === taskType ? 1 + delta : 1 - delta;
}

/** `var(x) / (mean(x)² + 1e-10)` with the unbiased variance; 0 for fewer than 2 values. */
export function coefficientOfVariationSquared(values: ArrayLike<number>): number {
  const K = values.length;
  if (K < 2) return 0;
  let mean = 0;
  for (let i = 0; i < K; i++) mean += values[i]!;
  mean /= K;
  let variance = 0;
  for (let i = 0; i < K; i++) variance += (values[i]! - mean) ** 2;
  variance /= K - 1;
  return variance / (mean * mean + 1e-10);
}

export interface LbcInput {
  /** Router probabilities `[batch·seqLen, E]` row-major of one site. */
  probs: ArrayLike<number>;
  batch: number;
  seqLen: number;
  experts: number;
  /** Per row of the batch, 0 or 1. */
  taskTypes: ArrayLike<number>;
  /** δ. */
  delta: number;
  /** `[batch·seqLen]`, 1 for a real token (default all 1). */
  tokenMask?: ArrayLike<number>;
}

/** The importance matrix `Q` `[batch, E]` of one site (padding excluded). */
export function loramoeImportance(input: LbcInput): Float64Array {
  const { probs, batch, seqLen, experts: E } = input;
  const Q = new Float64Array(batch * E);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seqLen; t++) {
      const row = b * seqLen + t;
      const m = input.tokenMask === undefined ? 1 : input.tokenMask[row]!;
      if (m === 0) continue;
      for (let e = 0; e < E; e++) Q[b * E + e] = Q[b * E + e]! + m * probs[row * E + e]!;
    }
  }
  return Q;
}

/** `L_lbc = CV²(I ⊙ Q)` of one site. */
export function localizedBalancingConstraint(input: LbcInput): number {
  const Q = loramoeImportance(input);
  const E = input.experts;
  const Z = Q.map((q, i) => {
    const b = Math.floor(i / E);
    return q * loramoeGroupMultiplier(i % E, E, input.taskTypes[b]!, input.delta);
  });
  return coefficientOfVariationSquared(Z);
}

/**
 * Defaults (../shared/docs/methods.md §5): the FFN projections only, 6 experts of r = 24, α = 48
 * (the MoE-PEFT template), dropout 0.05, no Switch balance (LoRAMoE has none), no z-loss. The
 * constraint is off (δ = 0, β = 0) as in the released script: the paper's δ and β are unknown.
 */
export function loramoeDefaults(numLayers: number): LoramoeAdapterConfig {
  return {
    method: 'loramoe',
    ...moePeftFfnTemplate(numLayers),
    balance: { coef: 0, form: 'layer', scope: 'micro' },
    zLossCoef: 0,
    blcAlpha: 0,
    blcWeight: 0,
  };
}
