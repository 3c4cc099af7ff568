/**
 * Tiny random Llama models for tests of both engines: a config, seeded weights under the names and
 * shapes of docs/engine.md, adapter weights, and token batches. Everything is derived from the hash
 * of `rng.ts`, so the same seed gives the same numbers everywhere.
 */
import type { LlamaConfig } from '@expertune/formats';
import type { LoraConfig, TrainBatch } from '../types.js';
import { hash3, mix32, uniform } from '../rng.js';
import { baseTensorShapes, loraTensorShapes } from '../tfjs/tensor-layout.js';

/**
 * A small Llama config (vocab 96, hidden 32, 2 layers, 4 query / 2 key-value heads of 8,
 * intermediate 88 = 2.75 · hidden), overridable field by field. When `hiddenSize` or `numHeads`
 * is overridden without `headDim`, the head dimension follows as `hiddenSize / numHeads`; when
 * `hiddenSize` is overridden without `intermediateSize`, the latter follows as 2.75 · hidden.
 */
export function randomLlamaConfig(overrides: Partial<LlamaConfig> = {}): LlamaConfig {
  const hiddenSize = overrides.hiddenSize ?? 32;
  const numHeads = overrides.numHeads ?? 4;
  return {
    architecture: 'LlamaForCausalLM',
    modelType: 'llama',
    vocabSize: 96,
    hiddenSize,
    intermediateSize: Math.round(2.75 * hiddenSize),
    numLayers: 2,
    numHeads,
    numKvHeads: 2,
    headDim: hiddenSize / numHeads,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 256,
    tieWordEmbeddings: false,
    qkvBias: false,
    oBias: false,
    mlpBias: false,
    slidingWindow: null,
    bosTokenId: 1,
    eosTokenIds: [2],
    torchDtype: 'float32',
    ...overrides,
  };
}

/** A uint32 derived from a string, so each tensor draws its own numbers whatever tensors precede it. */
export function hashName(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) hash = mix32(hash ^ name.charCodeAt(i));
  return hash;
}

/** `count` values uniform in `[−√3·std, √3·std)` (standard deviation `std`) plus `mean`. */
function uniformValues(seed: number, name: string, count: number, mean: number, std: number): Float32Array {
  const salt = hashName(name);
  const halfWidth = Math.sqrt(3) * std;
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = mean + (2 * uniform(hash3(seed, salt, i)) - 1) * halfWidth;
  return values;
}

export interface RandomWeightsOptions {
  /**
   * Standard deviation of every weight matrix (embedding, projections, lm head). By default each
   * matrix uses `1 / sqrt(fan-in)`, so activations are O(1) per element, as in a full-size
   * checkpoint (0.02 · sqrt(4096) ≈ 1.3); a literal 0.02 in a 32-wide model would make attention
   * nearly uniform and logits nearly flat, hiding RoPE and masking mistakes.
   */
  weightStd?: number;
  /** Standard deviation of the biases (default 0.1). */
  biasStd?: number;
  /** Standard deviation of the norm weights around 1 (default 0.1). */
  normStd?: number;
}

/**
 * Seeded base weights: every tensor of docs/engine.md's table for `config` (biases when flagged,
 * `lm_head.weight` only when untied), float32, row-major.
 */
export function randomWeights(
  config: LlamaConfig,
  seed: number,
  options: RandomWeightsOptions = {},
): Map<string, Float32Array> {
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of baseTensorShapes(config)) {
    const count = shape.reduce((a, b) => a * b, 1);
    let values: Float32Array;
    if (name.endsWith('norm.weight')) {
      values = uniformValues(seed, name, count, 1, options.normStd ?? 0.1);
    } else if (name.endsWith('.bias')) {
      values = uniformValues(seed, name, count, 0, options.biasStd ?? 0.1);
    } else {
      // Linear weights are [out, in]; the embedding and lm head are [V, d], both with fan-in d.
      const fanIn = shape[1]!;
      values = uniformValues(seed, name, count, 0, options.weightStd ?? 1 / Math.sqrt(fanIn));
    }
    weights.set(name, values);
  }
  return weights;
}

/**
 * Seeded adapter weights for tests where `B` must not be zero (at initialisation `B = 0` and
 * the gradient of `A` vanishes): `A` uniform with std `1 / sqrt(in)` like its initialisation, `B`
 * uniform with std `0.1 / sqrt(rank)`, so the adapter perturbs the base model (about a tenth of a
 * projection's output, times the LoRA scale) instead of dominating it.
 */
export function randomAdapterWeights(
  config: LlamaConfig,
  lora: Pick<LoraConfig, 'targetModules' | 'rank'>,
  seed: number,
): Map<string, Float32Array> {
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of loraTensorShapes(config, lora)) {
    const count = shape.reduce((a, b) => a * b, 1);
    const std = name.includes('.lora_A.') ? 1 / Math.sqrt(shape[1]!) : 0.1 / Math.sqrt(lora.rank);
    weights.set(name, uniformValues(seed, name, count, 0, std));
  }
  return weights;
}

export interface RandomBatchOptions {
  batch: number;
  seqLen: number;
  seed: number;
  /** Fraction of positions (besides the last of each row) whose target is −1 (default 0.2). */
  ignoredFraction?: number;
}

/** Random token ids; targets are the next token of each row, −1 at the last position and at random positions. */
export function randomTrainBatch(config: LlamaConfig, options: RandomBatchOptions): TrainBatch {
  const { batch, seqLen, seed } = options;
  const ignoredFraction = options.ignoredFraction ?? 0.2;
  const ids = new Int32Array(batch * seqLen);
  for (let i = 0; i < ids.length; i++) ids[i] = Math.floor(uniform(hash3(seed, 1, i)) * config.vocabSize);
  const targets = new Int32Array(batch * seqLen);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seqLen; t++) {
      const row = b * seqLen + t;
      const ignored = t === seqLen - 1 || uniform(hash3(seed, 2, row)) < ignoredFraction;
      targets[row] = ignored ? -1 : ids[row + 1]!;
    }
  }
  return { ids, targets, batch, seqLen };
}
