/**
 * MoLA (docs/methods.md "Gates"): the top-`k_l` experts of the router probabilities, their gates
 * renormalised to sum to 1, ties toward the lower expert index.
 */
import { PROJECTIONS, type MolaAdapterConfig } from '../../types.js';
import { topKIndices } from '../routing.js';

export interface MolaGates {
  /** The kept experts, best first. */
  selected: number[];
  /** `G_e = p_e / Σ_{j∈S} p_j` for `e ∈ S`, else 0. */
  gates: Float64Array;
}

/** The MoLA gates of one probability row. */
export function molaGates(p: ArrayLike<number>, k: number): MolaGates {
  const selected = topKIndices(p, k);
  let sum = 0;
  for (const e of selected) sum += p[e]!;
  const gates = new Float64Array(p.length);
  for (const e of selected) gates[e] = sum > 0 ? p[e]! / sum : 0;
  return { selected, gates };
}

/** The MoLA gates of `rows` probability rows `[rows, E]`: the 0/1 selection mask and the gate values. */
export function molaGateRows(
  probs: ArrayLike<number>,
  experts: number,
  k: number,
): { mask: Uint8Array; gates: Float64Array } {
  const rows = probs.length / experts;
  const mask = new Uint8Array(probs.length);
  const gates = new Float64Array(probs.length);
  const row = new Float64Array(experts);
  for (let t = 0; t < rows; t++) {
    for (let e = 0; e < experts; e++) row[e] = probs[t * experts + e]!;
    const result = molaGates(row, k);
    for (const e of result.selected) mask[t * experts + e] = 1;
    gates.set(result.gates, t * experts);
  }
  return { mask, gates };
}

/**
 * Defaults (../shared/docs/methods.md §4): all seven projections, r = 8, α = 16, dropout 0.05,
 * the "inverted triangle" allocation MoLA-▽ (2, 4, 6, 8 experts over the four quarters of the
 * layers), top-2 everywhere, the per-layer load balance with λ = 1e-3 (MoLA's coefficient; its
 * training script leaves it off by default), no z-loss.
 */
export function molaDefaults(numLayers: number): MolaAdapterConfig {
  const numExperts = Array.from({ length: numLayers }, (_, l) => 2 * (1 + Math.floor((4 * l) / numLayers)));
  return {
    method: 'mola',
    rank: 8,
    alpha: 16,
    useRslora: false,
    dropout: 0.05,
    targetModules: [...PROJECTIONS],
    seed: 0,
    numExperts,
    topK: numExperts.map((E) => Math.min(2, E)),
    balance: { coef: 1e-3, form: 'layer', scope: 'micro' },
    zLossCoef: 0,
  };
}
