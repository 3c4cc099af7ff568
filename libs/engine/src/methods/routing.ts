/**
 * Plain-JS routing primitives shared by the mixture methods (docs/methods.md "Gates" and
 * "Auxiliary losses"): rankings with ties toward the lower index, softmax, entropies and the
 * load-balancing and z-loss values. The tfjs engine uses them for its gate masks and statistics;
 * tests use them as the reference. Everything is computed in float64.
 */
import type { Projection } from '../types.js';

/**
 * Indices of `scores` sorted by descending score, ties toward the lower index. NaN scores rank
 * last (they never win a comparison).
 */
export function rankDescending(scores: ArrayLike<number>): number[] {
  const order = Array.from({ length: scores.length }, (_, i) => i);
  order.sort((a, b) => {
    const sa = scores[a]!;
    const sb = scores[b]!;
    if (sa > sb) return -1;
    if (sa < sb) return 1;
    if (Number.isNaN(sa) !== Number.isNaN(sb)) return Number.isNaN(sa) ? 1 : -1;
    return a - b;
  });
  return order;
}

/** The `k` best indices of `scores`, in ranking order (descending score, ties toward the lower index). */
export function topKIndices(scores: ArrayLike<number>, k: number): number[] {
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`top-k needs a non-negative integer k, got ${k}`);
  return rankDescending(scores).slice(0, Math.min(k, scores.length));
}

/** The first maximum's index (Switch's top-1). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** `softmax(z)` in float64. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    out[i] = Math.exp(logits[i]! - max);
    sum += out[i]!;
  }
  for (let i = 0; i < out.length; i++) out[i] = out[i]! / sum;
  return out;
}

/** `logsumexp(z)` in float64. */
export function logSumExp(logits: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum);
}

/** The router's normalised Shannon entropy `−Σ p ln p / ln E` (0·ln 0 = 0; 0 when `E = 1`). */
export function normalisedShannonEntropy(p: ArrayLike<number>): number {
  if (p.length <= 1) return 0;
  let entropy = 0;
  for (let i = 0; i < p.length; i++) {
    const value = p[i]!;
    if (value > 0) entropy -= value * Math.log(value);
  }
  return entropy / Math.log(p.length);
}

/**
 * `N Σ_e f_e P_e` with `f = counts / Σ counts` and `P = probSums / maskSum` (docs/methods.md,
 * Switch form); 0 when there is no count or no token.
 */
export function switchBalanceFromSums(counts: ArrayLike<number>, probSums: ArrayLike<number>, maskSum: number): number {
  let total = 0;
  for (let e = 0; e < counts.length; e++) total += counts[e]!;
  if (total <= 0 || maskSum <= 0) return 0;
  let loss = 0;
  for (let e = 0; e < counts.length; e++) loss += (counts[e]! / total) * (probSums[e]! / maskSum);
  return counts.length * loss;
}

/** One pool of router rows: `rows × E` probabilities, a selection (or gate) per row and expert, a mask per row. */
export interface RouterPool {
  experts: number;
  /** `[rows, E]` row-major. */
  probs: ArrayLike<number>;
  /** `[rows, E]`: 1 where the expert is selected (Switch form) or the gate value (DynMoLE form). */
  selection: ArrayLike<number>;
  /** `[rows]`, 1 for a real token (default all 1). */
  mask?: ArrayLike<number>;
}

/** The sums a pool contributes: `c_e = Σ m·sel`, `Σ m·p_e`, `Σ m`. */
export function poolSums(pool: RouterPool): { counts: Float64Array; probSums: Float64Array; maskSum: number } {
  const E = pool.experts;
  const rows = pool.probs.length / E;
  const counts = new Float64Array(E);
  const probSums = new Float64Array(E);
  let maskSum = 0;
  for (let t = 0; t < rows; t++) {
    const m = pool.mask === undefined ? 1 : pool.mask[t]!;
    if (m === 0) continue;
    maskSum += m;
    for (let e = 0; e < E; e++) {
      counts[e] = counts[e]! + m * pool.selection[t * E + e]!;
      probSums[e] = probSums[e]! + m * pool.probs[t * E + e]!;
    }
  }
  return { counts, probSums, maskSum };
}

/** Switch load balance of one pool with counts from its 0/1 selection (MoLA: top-k, LoRAMoE: argmax). */
export function switchLoadBalance(pool: RouterPool): number {
  const { counts, probSums, maskSum } = poolSums(pool);
  return switchBalanceFromSums(counts, probSums, maskSum);
}

/** DynMoLE's load balance of one pool: `N Σ f_e P_e` with `f_e = Σ m G_e / Σ m` (`selection` holds `G`). */
export function dynmoleLoadBalance(pool: RouterPool): number {
  const { counts, probSums, maskSum } = poolSums(pool);
  if (maskSum <= 0) return 0;
  let loss = 0;
  for (let e = 0; e < pool.experts; e++) loss += (counts[e]! / maskSum) * (probSums[e]! / maskSum);
  return pool.experts * loss;
}

/** Router z-loss over rows of logits: `Σ m lse(z)² / Σ m` (0 without tokens). */
export function zLoss(logits: ArrayLike<number>, experts: number, mask?: ArrayLike<number>): number {
  const rows = logits.length / experts;
  let sum = 0;
  let maskSum = 0;
  for (let t = 0; t < rows; t++) {
    const m = mask === undefined ? 1 : mask[t]!;
    if (m === 0) continue;
    const lse = logSumExp(rowOf(logits, t, experts));
    sum += m * lse * lse;
    maskSum += m;
  }
  return maskSum > 0 ? sum / maskSum : 0;
}

/** Row `t` of a `[rows, width]` row-major array. */
export function rowOf(values: ArrayLike<number>, t: number, width: number): number[] {
  return Array.from({ length: width }, (_, e) => values[t * width + e]!);
}

/**
 * The MoE-PEFT template that DynMoLE's defaults and the LoRAMoE re-implementation share
 * (../shared/docs/methods.md §5–6): the FFN projections, 6 experts of r = 24 per layer, α = 48,
 * dropout 0.05.
 */
export function moePeftFfnTemplate(numLayers: number) {
  return {
    rank: 24,
    alpha: 48,
    useRslora: false,
    dropout: 0.05,
    targetModules: ['gate_proj', 'up_proj', 'down_proj'] as Projection[],
    seed: 0,
    numExperts: Array.from({ length: numLayers }, () => 6),
  };
}
