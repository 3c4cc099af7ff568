import type { LlamaConfig } from '@expertune/formats';

/** The 7 projections an adapter can target, in projection-index order (see docs/engine.md). */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

export interface LoraConfig {
  rank: number;
  alpha: number;
  useRslora: boolean;
  /** Dropout probability on the adapter input, in [0, 1). */
  dropout: number;
  targetModules: Projection[];
  /** Seed of the initialisation of A (B starts at zero). */
  seed: number;
}

export type TrainMode = 'lora' | 'full';

export interface TokenBatch {
  /** Token ids, row-major `[batch, seqLen]`. */
  ids: Int32Array;
  batch: number;
  seqLen: number;
}

export interface TrainBatch extends TokenBatch {
  /** Next-token target for every position, or -1 where the position does not count. */
  targets: Int32Array;
}

export interface ForwardBackwardOptions {
  /** Gradients are those of `lossScale · Σ CE`: pass 1 / (counted tokens in the optimizer step). */
  lossScale: number;
  /** uint32 seed of the dropout masks of this micro-batch. */
  dropoutSeed: number;
  /** Keep dL/d(input embeddings) for `inputGrad()`. */
  needInputGrad?: boolean;
  /** Store only each layer's input and recompute the rest in backward (less memory, ≈1/3 more compute). */
  recompute?: boolean;
}

export interface StepStats {
  /** Σ of the cross-entropy over counted positions. */
  lossSum: number;
  /** Number of counted positions. */
  tokens: number;
  /** Counted positions where the argmax of the logits is the target. */
  correct: number;
}

export interface AdamWHyperparameters {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this value; 0 disables clipping. */
  maxGradNorm: number;
}

export interface OptimizerStepResult {
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

/** Incremental decoding state (a KV cache in the native engine). */
export interface DecodeSession {
  /** Feed tokens; returns the logits `[V]` after the last one. */
  append(ids: readonly number[]): Promise<Float32Array>;
  readonly length: number;
  dispose(): void;
}

export type TensorKind = 'base' | 'adapter' | 'trainable';

/**
 * A model held by an engine: frozen or trainable base weights, an optional adapter,
 * the optimizer state, the activations. Callers pass batches; the engine never returns
 * control per operation.
 */
export interface ModelBackend {
  readonly config: LlamaConfig;
  readonly engineName: string;

  /** Set a tensor by Hugging Face name (base or adapter) from float32 values in row-major order. */
  setTensor(name: string, values: Float32Array): void;
  getTensor(name: string): Float32Array;
  tensorShape(name: string): number[];
  tensorNames(kind: TensorKind): string[];

  attachLora(config: LoraConfig): void;
  readonly lora: LoraConfig | null;
  setTrainMode(mode: TrainMode): void;
  readonly trainMode: TrainMode;

  /** Logits `[batch, seqLen, V]`, no dropout, no state kept. */
  forward(batch: TokenBatch): Promise<Float32Array>;
  /** Forward and backward of one micro-batch; gradients accumulate until `optimizerStep`. */
  forwardBackward(batch: TrainBatch, options: ForwardBackwardOptions): Promise<StepStats>;
  /** Accumulated gradient of a trainable tensor. */
  getGrad(name: string): Float32Array;
  /** dL/d(input embeddings) `[batch, seqLen, d]` of the last forwardBackward with needInputGrad. */
  inputGrad(): Float32Array;
  zeroGrad(): void;
  /** Clip, AdamW-update every trainable tensor, zero the gradients. */
  optimizerStep(hyper: AdamWHyperparameters): Promise<OptimizerStepResult>;
  createSession(maxLength: number): DecodeSession;
  dispose(): void;
}
