/**
 * The routers' auxiliary losses (docs/methods.md "Auxiliary losses") as tfjs scalars over the site
 * records of one forward pass: the Switch load balance (MoLA, LoRAMoE) with constant `f` from
 * counts, DynMoLE's balance with differentiable `f` from the masked gates, both per layer or
 * pooled and per micro-batch or over the optimizer step's count buffer; the router z-loss;
 * DynMoLE's normalised Tsallis entropy; LoRAMoE's localized balancing constraint. Padding tokens
 * (mask 0) are excluded everywhere.
 */
import * as tf from '@tensorflow/tfjs';
import type { AdapterConfig } from '../types.js';
import type { RouterAdapterConfig } from '../methods/index.js';
import { loramoeGroupMultiplier } from '../methods/loramoe/index.js';
import type { SiteRecord } from './adapter-graph.js';

/** Sums of one balance pool over some rows: `c_e` (DynMoLE: `Σ m G_e`), `Σ m p_e`, `Σ m`. */
export interface PoolSums {
  experts: number;
  counts: Float64Array;
  probSums: Float64Array;
  maskSum: number;
}

export function emptyPoolSums(experts: number): PoolSums {
  return { experts, counts: new Float64Array(experts), probSums: new Float64Array(experts), maskSum: 0 };
}

/** Adds `other` into `into`. */
export function addPoolSums(into: PoolSums, other: PoolSums): void {
  for (let e = 0; e < into.experts; e++) {
    into.counts[e] = into.counts[e]! + other.counts[e]!;
    into.probSums[e] = into.probSums[e]! + other.probSums[e]!;
  }
  into.maskSum += other.maskSum;
}

/** The balance pool of a layer's sites: the layer (`form: layer`) or one pool for all (`pooled`, key −1). */
export function balancePoolKey(adapter: RouterAdapterConfig, layer: number): number {
  return adapter.balance.form === 'layer' ? layer : -1;
}

/**
 * The load balance `N Σ f̄ P̄` from a pool's sums: Switch form `f̄ = c / Σ c`; DynMoLE form
 * `f̄ = Σ m G / Σ m`; `P̄ = Σ m p / Σ m`. 0 without tokens (or counts).
 */
export function balanceFromSums(method: AdapterConfig['method'], sums: PoolSums): number {
  if (sums.maskSum <= 0) return 0;
  let denominator = sums.maskSum;
  if (method !== 'dynmole') {
    denominator = 0;
    for (const c of sums.counts) denominator += c;
    if (denominator <= 0) return 0;
  }
  let loss = 0;
  for (let e = 0; e < sums.experts; e++) loss += (sums.counts[e]! / denominator) * (sums.probSums[e]! / sums.maskSum);
  return sums.experts * loss;
}

/** This pass's sums per pool, from the records' float32 probabilities and JS gates. */
export function recordPoolSums(
  adapter: RouterAdapterConfig,
  records: readonly SiteRecord[],
  tokenMask: Float32Array,
): Map<number, PoolSums> {
  const pools = new Map<number, PoolSums>();
  for (const record of records) {
    const E = record.site.experts;
    const key = balancePoolKey(adapter, record.site.layer);
    let sums = pools.get(key);
    if (sums === undefined) {
      sums = emptyPoolSums(E);
      pools.set(key, sums);
    }
    const counted = adapter.method === 'dynmole' ? record.gateValues : record.selection;
    for (let t = 0; t < record.rows; t++) {
      const m = tokenMask[t]!;
      if (m === 0) continue;
      sums.maskSum += m;
      for (let e = 0; e < E; e++) {
        sums.counts[e] = sums.counts[e]! + m * counted[t * E + e]!;
        sums.probSums[e] = sums.probSums[e]! + m * record.probValues![t * E + e]!;
      }
    }
  }
  return pools;
}

export interface AuxContext {
  /** `[T]`, 1 for a real token. */
  tokenMask: Float32Array;
  batch: number;
  seqLen: number;
  taskTypes?: Int32Array;
  /** This pass's pool sums (from `recordPoolSums`). */
  pools: Map<number, PoolSums>;
  /** The optimizer step's buffer of a pool before this micro-batch (global scope). */
  stepBuffer: (key: number) => PoolSums | undefined;
}

export interface AuxLossTensors {
  balance: tf.Scalar;
  zLoss: tf.Scalar;
  entropy: tf.Scalar;
  lbc: tf.Scalar;
  /** `λ_lb Σ LBL + λ_z L_z + λ_ent L_ent + β Σ L_lbc`. */
  total: tf.Scalar;
}

function sumAll(terms: tf.Tensor[]): tf.Scalar {
  return terms.length === 0 ? tf.scalar(0) : (tf.addN(terms.map((term) => tf.sum(term))) as tf.Scalar);
}

/** Normalised Tsallis entropy of probability rows `[T, E]` as a tensor `[T]` (docs/methods.md "DynMoLE"). */
function tsallisEntropyRows(probs: tf.Tensor2D, q: number, eps: number): tf.Tensor1D {
  const E = probs.shape[1];
  if (E <= 1) return tf.zeros([probs.shape[0]]);
  const shifted = tf.add(probs, eps);
  if (q === 1) {
    // −Σ p̃ ln p̃ / ln E; p̃ is clamped away from 0 only inside the logarithm (0·ln 0 = 0).
    const plogp = tf.mul(shifted, tf.log(tf.maximum(shifted, 1e-30)));
    return tf.div(tf.neg(tf.sum(plogp, 1)), Math.log(E)) as tf.Tensor1D;
  }
  const sMax = (1 - Math.pow(E, 1 - q)) / (q - 1);
  const s = tf.div(tf.sub(1, tf.sum(tf.pow(shifted, q), 1)), q - 1);
  return tf.div(s, sMax) as tf.Tensor1D;
}

/** The auxiliary losses of one forward pass of a router adapter. */
export function auxiliaryLosses(
  adapter: RouterAdapterConfig,
  records: readonly SiteRecord[],
  context: AuxContext,
): AuxLossTensors {
  const { tokenMask } = context;
  const rows = tokenMask.length;
  let realTokens = 0;
  for (const m of tokenMask) realTokens += m;
  const maskRow = tf.tensor2d(tokenMask, [1, rows]);
  const maskColumn = tf.tensor1d(tokenMask);
  const allRows = records.length * realTokens; // Σ m over every site's rows

  // ---- load balance, per pool ----
  const balanceTerms: tf.Tensor[] = [];
  const byPool = new Map<number, SiteRecord[]>();
  for (const record of records) {
    const key = balancePoolKey(adapter, record.site.layer);
    byPool.set(key, [...(byPool.get(key) ?? []), record]);
  }
  for (const [key, poolRecords] of byPool) {
    const micro = context.pools.get(key)!;
    if (micro.maskSum <= 0) continue;
    const N = micro.experts;
    // P_e = Σ m p_e / Σ m over the pool's rows.
    const P = tf.div(tf.addN(poolRecords.map((record) => tf.matMul(maskRow, record.probs!))), micro.maskSum);
    const buffer = context.stepBuffer(key);
    let f: tf.Tensor;
    if (adapter.method === 'dynmole' && adapter.balance.scope === 'micro') {
      f = tf.div(tf.addN(poolRecords.map((record) => tf.matMul(maskRow, record.gates!))), micro.maskSum);
    } else {
      const counts = Float64Array.from(micro.counts);
      let denominator = adapter.method === 'dynmole' ? micro.maskSum : 0;
      if (adapter.balance.scope === 'global' && buffer !== undefined) {
        buffer.counts.forEach((c, e) => (counts[e] = counts[e]! + c));
        if (adapter.method === 'dynmole') denominator += buffer.maskSum;
      }
      if (adapter.method !== 'dynmole') for (const c of counts) denominator += c;
      if (denominator <= 0) continue;
      f = tf.tensor2d(
        Float32Array.from(counts, (c) => c / denominator),
        [1, N],
      );
    }
    balanceTerms.push(tf.mul(tf.sum(tf.mul(f, P)), N));
  }
  const balance = sumAll(balanceTerms);

  // ---- router z-loss: Σ m lse(z)² / Σ m over every site's rows ----
  let zLoss: tf.Scalar = tf.scalar(0);
  if (allRows > 0) {
    const terms = records.map((record) => tf.mul(maskColumn, tf.square(tf.logSumExp(record.logits!, 1))));
    zLoss = tf.div(sumAll(terms), allRows);
  }

  // ---- DynMoLE's Tsallis entropy: Σ m Ŝ / Σ m over every site's rows ----
  let entropy: tf.Scalar = tf.scalar(0);
  if (adapter.method === 'dynmole' && allRows > 0) {
    const terms = records.map((record) =>
      tf.mul(maskColumn, tsallisEntropyRows(record.probs!, adapter.entropyIndex, adapter.entropyEps)),
    );
    entropy = tf.div(sumAll(terms), allRows);
  }

  // ---- LoRAMoE's localized balancing constraint, summed over sites ----
  let lbc: tf.Scalar = tf.scalar(0);
  if (adapter.method === 'loramoe' && context.taskTypes !== undefined && adapter.blcWeight > 0) {
    const { batch, seqLen, taskTypes } = context;
    const terms = records.map((record) => {
      const E = record.site.experts;
      const K = batch * E;
      if (K < 2) return tf.scalar(0);
      const multiplier = new Float32Array(K);
      for (let b = 0; b < batch; b++)
        for (let e = 0; e < E; e++)
          multiplier[b * E + e] = loramoeGroupMultiplier(e, E, taskTypes[b]!, adapter.blcAlpha);
      const masked = tf.mul(record.probs!, tf.reshape(maskColumn, [rows, 1]));
      const Q = tf.sum(tf.reshape(masked, [batch, seqLen, E]), 1); // [B, E]
      const Z = tf.reshape(tf.mul(Q, tf.tensor2d(multiplier, [batch, E])), [K]);
      const mean = tf.mean(Z);
      const variance = tf.div(tf.sum(tf.square(tf.sub(Z, mean))), K - 1);
      return tf.div(variance, tf.add(tf.square(mean), 1e-10));
    });
    lbc = sumAll(terms);
  }

  const weighted: tf.Tensor[] = [tf.mul(balance, adapter.balance.coef), tf.mul(zLoss, adapter.zLossCoef)];
  if (adapter.method === 'dynmole') weighted.push(tf.mul(entropy, adapter.entropyCoef));
  if (adapter.method === 'loramoe') weighted.push(tf.mul(lbc, adapter.blcWeight));
  const total = tf.addN(weighted) as tf.Scalar;
  return { balance, zLoss, entropy, lbc, total };
}
