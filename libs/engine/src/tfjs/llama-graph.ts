/**
 * The Llama decoder of docs/engine.md written with tfjs ops, so that tfjs autograd differentiates
 * it. Every function here is pure: it reads weights through a lookup and returns new tensors; the
 * caller owns memory (wrap calls in `tf.tidy`). Shapes in comments: `B` batch, `T` sequence
 * length, `N = B·T` rows, `d` hidden size, `H`/`KV` query/key-value heads, `hd` head dimension.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaConfig } from '@expertune/formats';
import type { Projection } from '../types.js';
import { dropoutMultiplier } from '../rng.js';
import { ropeTables } from '../rope.js';
import {
  EMBEDDING_NAME,
  FINAL_NORM_NAME,
  LM_HEAD_NAME,
  inputGroupKey,
  projectionHasBias,
  projectionModule,
} from './tensor-layout.js';

/** Added to the scores of keys a query must not see: exp(−1e9 − max) is exactly 0 in float32. */
const MASKED_SCORE = -1e9;

/** The adapter's term of a projection (tfjs/adapter-graph.ts implements it for every method). */
export interface AdapterBranch {
  /** Dropout probability of the adapter input. */
  readonly dropout: number;
  targets(projection: Projection): boolean;
  /** The term added to projection `projection` of layer `layer`: `x` is its input, `dropped` the dropped one. */
  delta(layer: number, projection: Projection, x: tf.Tensor2D, dropped: tf.Tensor2D): tf.Tensor2D;
}

export interface GraphInput {
  config: LlamaConfig;
  /** The tensor of a base or adapter weight, by Hugging Face name. */
  weight: (name: string) => tf.Tensor;
  /** The attached adapter, or null. */
  adapter: AdapterBranch | null;
  /** Token ids `[batch, seqLen]` row-major. */
  ids: Int32Array;
  batch: number;
  seqLen: number;
  /** Seed of the adapter-input dropout masks; null disables dropout (inference). */
  dropoutSeed: number | null;
  /**
   * Added to the embedding output `h0` `[N, d]`: a zero tensor whose gradient is dL/dh0
   * (tfjs only differentiates with respect to a function's inputs, and h0 is an intermediate).
   */
  inputProbe?: tf.Tensor;
}

/**
 * `E[ids]` `[N, d]`. Its gradient scatters-adds the incoming rows into the table rows: written
 * here (with `scatterND`, which sums repeated indices) because tfjs's own gradient of `gather`
 * needs `UnsortedSegmentSum`, which the wasm backend lacks.
 */
export function embeddingLookup(table: tf.Tensor, ids: Int32Array): tf.Tensor2D {
  const rowIndices = tf.tensor2d(ids, [ids.length, 1], 'int32');
  const lookup = tf.customGrad((...args) => {
    const embedding = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    save([rowIndices]);
    return {
      value: tf.gather(embedding, rowIndices.reshape([ids.length])),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.scatterND(saved[0]!, dy, embedding.shape),
    };
  });
  return lookup(table) as tf.Tensor2D;
}

/** `w ⊙ x / sqrt(mean(x²) + eps)` over the last axis. */
export function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor, eps: number): tf.Tensor2D {
  const meanSquare = tf.mean(tf.square(x), -1, true);
  return tf.mul(weight, tf.div(x, tf.sqrt(tf.add(meanSquare, eps))));
}

export function silu(z: tf.Tensor): tf.Tensor {
  return tf.mul(z, tf.sigmoid(z));
}

/**
 * The adapter input of a projection: `x` with the dropout mask of its input group (docs/engine.md
 * "Dropout": one mask per group, keyed by `l·7 + p₀`), or `x` itself without dropout. Every site of
 * the group sees the same dropped input, so it is computed once per group and kept in `cache`.
 */
function adapterInput(
  input: GraphInput,
  x: tf.Tensor2D,
  layer: number,
  name: Projection,
  cache: Map<tf.Tensor, tf.Tensor2D>,
): tf.Tensor2D {
  const dropout = input.adapter?.dropout ?? 0;
  if (input.dropoutSeed === null || dropout === 0) return x;
  const cached = cache.get(x);
  if (cached !== undefined) return cached;
  const [rows, inFeatures] = x.shape;
  // Recomputed from the hash every time: the forward and backward use the same mask by construction.
  const multiplier = dropoutMultiplier(input.dropoutSeed, inputGroupKey(layer, name), rows, inFeatures, dropout);
  const dropped = tf.mul(x, tf.tensor2d(multiplier, [rows, inFeatures])) as tf.Tensor2D;
  cache.set(x, dropped);
  return dropped;
}

/**
 * One projection `y = x Wᵀ (+b)` of layer `layer`, plus the adapter's term when the adapter
 * targets this projection (dropout only when a seed is given).
 */
function projection(
  input: GraphInput,
  x: tf.Tensor2D,
  layer: number,
  name: Projection,
  dropped: Map<tf.Tensor, tf.Tensor2D>,
): tf.Tensor2D {
  const { config, weight, adapter } = input;
  const module = projectionModule(layer, name);
  let y: tf.Tensor2D = tf.matMul(x, weight(`${module}.weight`), false, true);
  if (projectionHasBias(config, name)) y = tf.add(y, weight(`${module}.bias`));
  if (adapter === null || !adapter.targets(name)) return y;
  return tf.add(y, adapter.delta(layer, name, x, adapterInput(input, x, layer, name, dropped)));
}

/**
 * Rotates `x` `[B, heads, T, hd]` by the RoPE tables `cos`, `sin` `[T, hd/2]` (HF "rotate half"):
 * `x'_i = x_i cos − x_{i+hd/2} sin`, `x'_{i+hd/2} = x_{i+hd/2} cos + x_i sin`.
 */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor4D {
  const [batch, heads, seqLen, headDim] = x.shape;
  const half = headDim / 2;
  const first = tf.slice(x, [0, 0, 0, 0], [batch, heads, seqLen, half]);
  const second = tf.slice(x, [0, 0, 0, half], [batch, heads, seqLen, half]);
  const rotatedFirst = tf.sub(tf.mul(first, cos), tf.mul(second, sin));
  const rotatedSecond = tf.add(tf.mul(second, cos), tf.mul(first, sin));
  return tf.concat([rotatedFirst, rotatedSecond], 3) as tf.Tensor4D;
}

/** Additive mask `[T, T]`: 0 where key `j` is visible to query `i` (`j ≤ i`, `i − j < W`), else −1e9. */
export function attentionMask(seqLen: number, slidingWindow: number | null): tf.Tensor2D {
  const mask = new Float32Array(seqLen * seqLen);
  for (let i = 0; i < seqLen; i++) {
    for (let j = 0; j < seqLen; j++) {
      const visible = j <= i && (slidingWindow === null || i - j < slidingWindow);
      mask[i * seqLen + j] = visible ? 0 : MASKED_SCORE;
    }
  }
  return tf.tensor2d(mask, [seqLen, seqLen]);
}

/**
 * Grouped-query attention: `q` `[B, H, T, hd]`, `k`, `v` `[B, KV, T, hd]`; query head `h` reads
 * key/value head `floor(h / (H / KV))`. Returns `[B, H, T, hd]`.
 */
export function attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, mask: tf.Tensor2D): tf.Tensor4D {
  const [, numHeads, , headDim] = q.shape;
  const numKvHeads = k.shape[1];
  const groupSize = numHeads / numKvHeads;
  // Each query head gets a copy of its key/value head; autograd sums the gradients of the copies.
  // (Slices and concat, not unstack/stack: tfjs's unstack gradient breaks when KV = 1.)
  const kvHeadOf = (head: number) => Math.floor(head / groupSize);
  const headOf = (x: tf.Tensor4D, kvHead: number) =>
    tf.slice(x, [0, kvHead, 0, 0], [x.shape[0], 1, x.shape[2], headDim]);
  const perQueryHead = (x: tf.Tensor4D) =>
    tf.concat(
      Array.from({ length: numHeads }, (_, head) => headOf(x, kvHeadOf(head))),
      1,
    ) as tf.Tensor4D;
  const keys = perQueryHead(k);
  const values = perQueryHead(v);

  const scores = tf.div(tf.matMul(q, keys, false, true), Math.sqrt(headDim));
  const weights = tf.softmax(tf.add(scores, mask), -1);
  return tf.matMul(weights, values) as tf.Tensor4D;
}

/** The final hidden states `rmsnorm(h, w_norm)` `[N, d]`, before the lm head. */
export function finalHidden(input: GraphInput): tf.Tensor2D {
  const { config, weight, batch, seqLen } = input;
  const { numHeads, numKvHeads, headDim, rmsNormEps } = config;
  const rows = batch * seqLen;
  if (input.ids.length !== rows) throw new Error(`ids has ${input.ids.length} values, expected ${batch}·${seqLen}`);

  const tables = ropeTables(config, seqLen);
  const cos = tf.tensor2d(tables.cos, [seqLen, headDim / 2]);
  const sin = tf.tensor2d(tables.sin, [seqLen, headDim / 2]);
  const mask = attentionMask(seqLen, config.slidingWindow);
  const splitHeads = (x: tf.Tensor2D, heads: number) =>
    tf.transpose(tf.reshape(x, [batch, seqLen, heads, headDim]), [0, 2, 1, 3]) as tf.Tensor4D;

  let h = embeddingLookup(weight(EMBEDDING_NAME), input.ids);
  if (input.inputProbe !== undefined) h = tf.add(h, input.inputProbe);

  const dropped = new Map<tf.Tensor, tf.Tensor2D>();
  for (let layer = 0; layer < config.numLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    const a = rmsNorm(h, weight(`${prefix}.input_layernorm.weight`), rmsNormEps);
    const q = applyRope(splitHeads(projection(input, a, layer, 'q_proj', dropped), numHeads), cos, sin);
    const k = applyRope(splitHeads(projection(input, a, layer, 'k_proj', dropped), numKvHeads), cos, sin);
    const v = splitHeads(projection(input, a, layer, 'v_proj', dropped), numKvHeads);
    const heads = attention(q, k, v, mask);
    const concatenated = tf.reshape(tf.transpose(heads, [0, 2, 1, 3]), [rows, numHeads * headDim]) as tf.Tensor2D;
    h = tf.add(h, projection(input, concatenated, layer, 'o_proj', dropped));

    const m = rmsNorm(h, weight(`${prefix}.post_attention_layernorm.weight`), rmsNormEps);
    const gate = silu(projection(input, m, layer, 'gate_proj', dropped));
    const up = projection(input, m, layer, 'up_proj', dropped);
    h = tf.add(h, projection(input, tf.mul(gate, up) as tf.Tensor2D, layer, 'down_proj', dropped));
  }
  return rmsNorm(h, weight(FINAL_NORM_NAME), rmsNormEps);
}

/** `hidden W_lmᵀ` `[rows, V]`; the embedding matrix is the lm head when embeddings are tied. */
export function lmHead(input: Pick<GraphInput, 'config' | 'weight'>, hidden: tf.Tensor2D): tf.Tensor2D {
  const name = input.config.tieWordEmbeddings ? EMBEDDING_NAME : LM_HEAD_NAME;
  return tf.matMul(hidden, input.weight(name), false, true);
}

/** Logits `[N, V]`. */
export function logits(input: GraphInput): tf.Tensor2D {
  return lmHead(input, finalHidden(input));
}

export interface CrossEntropyTensors {
  /** Σ over counted positions of `logsumexp(logits_t) − logits_t[target_t]`. */
  lossSum: tf.Scalar;
  /** Counted positions whose argmax (first maximum) is the target, as a float scalar. */
  correct: tf.Scalar;
}

/** Cross-entropy of `logits` `[N, V]` against `targets` `[N]` (−1: not counted). */
export function crossEntropy(logitsTensor: tf.Tensor2D, targets: Int32Array): CrossEntropyTensors {
  const [rows, vocab] = logitsTensor.shape;
  if (targets.length !== rows) throw new Error(`targets has ${targets.length} values, expected ${rows}`);
  const counted = new Float32Array(rows);
  const safeTargets = new Int32Array(rows);
  // One-hot rows of the targets, built here (tfjs-backend-wasm's oneHot ignores a float32 dtype).
  const targetOneHot = new Float32Array(rows * vocab);
  for (let t = 0; t < rows; t++) {
    const target = targets[t]!;
    if (target >= 0) {
      counted[t] = 1;
      safeTargets[t] = target;
      targetOneHot[t * vocab + target] = 1;
    }
  }
  const countedTensor = tf.tensor1d(counted);
  const targetTensor = tf.tensor1d(safeTargets, 'int32');
  // logits[t, target_t] as a masked sum: exact (adds zeros), and differentiable on every backend.
  const targetLogit = tf.sum(tf.mul(logitsTensor, tf.tensor2d(targetOneHot, [rows, vocab])), 1);
  const perPosition = tf.sub(tf.logSumExp(logitsTensor, 1), targetLogit);
  const lossSum = tf.sum<tf.Scalar>(tf.mul(perPosition, countedTensor));
  const hits = tf.cast(tf.equal(tf.argMax(logitsTensor, 1), targetTensor), 'float32');
  const correct = tf.sum<tf.Scalar>(tf.mul(hits, countedTensor));
  return { lossSum, correct };
}
