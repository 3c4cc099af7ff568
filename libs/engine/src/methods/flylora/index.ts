/**
 * FlyLoRA (docs/methods.md "FlyLoRA"): `r` rank-1 experts behind a frozen sparse random `A`
 * that doubles as the router. Per token the top-`k` ranks of `a + d` (signed) or `|a + d|` (abs)
 * are active (ties toward the lower rank); `d` is moved by an aux-loss-free bias update after
 * each training micro-batch.
 */
import { PROJECTIONS, type FlyloraAdapterConfig } from '../../types.js';
import { hash3, uniform } from '../../rng.js';
import { topKIndices } from '../routing.js';

/** `p_nz = in // (r / k)`, the non-zeros of each row of `A` (`r` a multiple of `k`). */
export function flyloraNonZerosPerRow(inFeatures: number, rank: number, topK: number): number {
  if (!(Number.isInteger(rank) && Number.isInteger(topK) && topK >= 1 && rank % topK === 0))
    throw new RangeError(`FlyLoRA needs the rank (${rank}) to be a multiple of topK (${topK})`);
  return Math.floor(inFeatures / (rank / topK));
}

export interface FlyloraSparseA {
  rank: number;
  inFeatures: number;
  /** Non-zeros per row. */
  nonZerosPerRow: number;
  /** `[rank, nonZerosPerRow]`: the column of each non-zero, ascending within a row. */
  columns: Int32Array;
  /** `[rank, nonZerosPerRow]`: the value of each non-zero (float32). */
  values: Float32Array;
  /** The dense `[rank, inFeatures]` matrix. */
  dense: Float32Array;
}

/**
 * The frozen sparse `A` of one site. Row `i`: the first `p_nz` entries of a partial Fisher–Yates
 * shuffle of `0 … in−1` (starting from the identity for each row): for `j = 0 … p_nz − 1`,
 * `swap(perm[j], perm[j + floor(uniform(hash3(seed, 2·site, i·in + j)) · (in − j))])`; sorted
 * ascending. The `q`-th non-zero (in column order) of row `i` is
 * `(1/r) · sqrt(−2 ln(1 − u₁)) · cos(2π u₂)`, `u₁ = uniform(hash3(seed, 2·site + 1, 2m))`,
 * `u₂ = uniform(hash3(seed, 2·site + 1, 2m + 1))`, `m = i·p_nz + q`; float64, rounded to float32 once.
 */
export function flyloraSparseA(
  seed: number,
  site: number,
  rank: number,
  topK: number,
  inFeatures: number,
): FlyloraSparseA {
  const nonZeros = flyloraNonZerosPerRow(inFeatures, rank, topK);
  const columns = new Int32Array(rank * nonZeros);
  const values = new Float32Array(rank * nonZeros);
  const dense = new Float32Array(rank * inFeatures);
  const perm = new Int32Array(inFeatures);
  for (let i = 0; i < rank; i++) {
    for (let j = 0; j < inFeatures; j++) perm[j] = j;
    for (let j = 0; j < nonZeros; j++) {
      const other = j + Math.floor(uniform(hash3(seed, 2 * site, i * inFeatures + j)) * (inFeatures - j));
      const swap = perm[j]!;
      perm[j] = perm[other]!;
      perm[other] = swap;
    }
    const chosen = Array.from(perm.subarray(0, nonZeros)).sort((a, b) => a - b);
    for (let q = 0; q < nonZeros; q++) {
      const m = i * nonZeros + q;
      const u1 = uniform(hash3(seed, 2 * site + 1, 2 * m));
      const u2 = uniform(hash3(seed, 2 * site + 1, 2 * m + 1));
      const value = (1 / rank) * Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
      columns[m] = chosen[q]!;
      values[m] = value;
      dense[i * inFeatures + chosen[q]!] = values[m]!;
    }
  }
  return { rank, inFeatures, nonZerosPerRow: nonZeros, columns, values, dense };
}

export type FlyloraSelectMode = 'signed' | 'abs';

/**
 * The score of rank `i`: `a_i + d_i` rounded to float32 (as the native engine adds them), or
 * its magnitude with `abs`.
 */
export function flyloraScore(a: number, d: number, mode: FlyloraSelectMode): number {
  const sum = Math.fround(a + d);
  return mode === 'abs' ? Math.abs(sum) : sum;
}

/** The active ranks of one token: the top-`k` scores of `a + d` (or `|a + d|`), ties toward the lower rank. */
export function flyloraSelect(
  a: ArrayLike<number>,
  bias: ArrayLike<number>,
  k: number,
  mode: FlyloraSelectMode,
): number[] {
  const scores = Array.from({ length: a.length }, (_, i) => flyloraScore(a[i]!, bias[i]!, mode));
  return topKIndices(scores, k);
}

/** The 0/1 selection `[rows, r]` of `[rows, r]` projected activations `a`. */
export function flyloraSelectRows(
  a: ArrayLike<number>,
  bias: ArrayLike<number>,
  k: number,
  mode: FlyloraSelectMode,
): Uint8Array {
  const r = bias.length;
  const rows = a.length / r;
  const mask = new Uint8Array(a.length);
  const row = new Float64Array(r);
  for (let t = 0; t < rows; t++) {
    for (let i = 0; i < r; i++) row[i] = a[t * r + i]!;
    for (const i of flyloraSelect(row, bias, k, mode)) mask[t * r + i] = 1;
  }
  return mask;
}

/**
 * The bias update after a training micro-batch: `d_i ← d_i + u·sign(mean_j c_j − c_i)` with `c_i`
 * the number of real tokens whose selection contains rank `i`; in float32 arithmetic
 * (`fround(d + fround(u)·sign)`). Returns the new bias.
 */
export function flyloraBiasUpdate(bias: ArrayLike<number>, counts: ArrayLike<number>, rate: number): Float32Array {
  const r = bias.length;
  let mean = 0;
  for (let i = 0; i < r; i++) mean += counts[i]!;
  mean /= r;
  const step = Math.fround(rate);
  const next = new Float32Array(r);
  for (let i = 0; i < r; i++) next[i] = Math.fround(bias[i]! + step * Math.sign(mean - counts[i]!));
  return next;
}

/**
 * Defaults (../shared/docs/methods.md §7, the MMLU script): all seven projections, r = 32, k = 8,
 * α = 64, dropout 0, signed selection, bias rate 1e-3.
 */
export function flyloraDefaults(): FlyloraAdapterConfig {
  return {
    method: 'flylora',
    rank: 32,
    alpha: 64,
    useRslora: false,
    dropout: 0,
    targetModules: [...PROJECTIONS],
    seed: 0,
    topK: 8,
    select: 'signed',
    biasRate: 1e-3,
  };
}
