import { ADAPTER_PROJECTIONS, type LlamaConfig } from '@expertune/formats';

/** The 7 projections an adapter can target, in projection-index order (see docs/engine.md). */
export const PROJECTIONS = ADAPTER_PROJECTIONS;
export type Projection = (typeof PROJECTIONS)[number];

/** What every adapter method shares (docs/engine.md "LoRA", docs/methods.md). */
export interface LoraConfig {
  /** Rank of each expert (of the whole adapter for lora and flylora). */
  rank: number;
  alpha: number;
  useRslora: boolean;
  /** Dropout probability on the adapter input, in [0, 1). */
  dropout: number;
  targetModules: Projection[];
  /** Seed of the initialisation of A and the routers (B starts at zero). */
  seed: number;
}

export const ADAPTER_METHODS = ['lora', 'mola', 'loramoe', 'dynmole', 'flylora'] as const;
export type AdapterMethod = (typeof ADAPTER_METHODS)[number];
export type MixtureMethod = Exclude<AdapterMethod, 'lora'>;

/** The Switch-style load-balancing loss of the routers (docs/methods.md "Auxiliary losses"). */
export interface BalanceLossConfig {
  /** λ; 0 turns the loss off. */
  coef: number;
  /** `layer`: one loss per layer, summed (MoLA); `pooled`: one loss over every site (Mixtral, DynMoLE). */
  form: 'layer' | 'pooled';
  /** `micro`: counts of this micro-batch; `global`: counts over the optimizer step so far (Qiu et al.). */
  scope: 'micro' | 'global';
}

interface RouterCommon {
  /** Experts per decoder layer (one entry per layer). */
  numExperts: number[];
  balance: BalanceLossConfig;
  /** Router z-loss coefficient (0: off). */
  zLossCoef: number;
}

export interface LoraAdapterConfig extends LoraConfig {
  method: 'lora';
}
export interface MolaAdapterConfig extends LoraConfig, RouterCommon {
  method: 'mola';
  /** Experts kept per token, per layer. */
  topK: number[];
}
export interface LoramoeAdapterConfig extends LoraConfig, RouterCommon {
  method: 'loramoe';
  /** δ of the localized balancing constraint. */
  blcAlpha: number;
  /** β, the constraint's weight (0: off). */
  blcWeight: number;
}
export interface DynmoleAdapterConfig extends LoraConfig, RouterCommon {
  method: 'dynmole';
  topP: number;
  keepTopK: number;
  /** Tsallis q, in (0, 2]; 1 is Shannon. */
  entropyIndex: number;
  /** Tokens whose normalised entropy exceeds this go to every expert. */
  entropyThreshold: number;
  entropyEps: number;
  /** Weight of the entropy loss. */
  entropyCoef: number;
}
export interface FlyloraAdapterConfig extends LoraConfig {
  method: 'flylora';
  /** Active ranks per token. */
  topK: number;
  select: 'signed' | 'abs';
  /** u of the bias update d ← d + u·sign(mean c − c). */
  biasRate: number;
}

export type AdapterConfig =
  LoraAdapterConfig | MolaAdapterConfig | LoramoeAdapterConfig | DynmoleAdapterConfig | FlyloraAdapterConfig;

/** Routing statistics of one adapted site, accumulated over training micro-batches since the last read. */
export interface SiteRoutingStats {
  layer: number;
  projection: Projection;
  /** Experts (FlyLoRA: ranks). */
  experts: number;
  /** Real tokens seen. */
  tokens: number;
  /** Per expert, the fraction of tokens routed to it (FlyLoRA: rank usage). */
  load: number[];
  /** Per expert, the mean gate over tokens. */
  meanGate: number[];
  /** Mean normalised Shannon entropy of the router's probabilities; null for FlyLoRA. */
  entropy: number | null;
  /** DynMoLE: fraction of tokens sent to every expert; 0 for the other methods. */
  broadcast: number;
}

/** Auxiliary losses of a micro-batch or step (unweighted by their coefficients). */
export interface AuxLosses {
  balance: number;
  zLoss: number;
  entropy: number;
  lbc: number;
  /** Σ coefficient · loss: what was added to the objective. */
  total: number;
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
  /** 1 for a real token, 0 for padding (routers ignore padding); default all real. */
  tokenMask?: Uint8Array;
  /** Per row, 0 or 1 (LoRAMoE's localized balancing constraint); absent: the constraint is skipped. */
  taskTypes?: Int32Array;
}

export interface ForwardOptions {
  /** Accumulate routing statistics over this batch, as a training micro-batch would (calibration). */
  collectRouting?: boolean;
  /** With collectRouting: 1 for a real token, 0 for padding. */
  tokenMask?: Uint8Array;
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
  /** Weight of this micro-batch's auxiliary losses: its share of the step's real tokens (default 1). */
  auxScale?: number;
}

export interface StepStats {
  /** Σ of the cross-entropy over counted positions. */
  lossSum: number;
  /** Number of counted positions. */
  tokens: number;
  /** Counted positions where the argmax of the logits is the target. */
  correct: number;
  /** The routers' auxiliary losses (zero without a mixture). */
  aux: AuxLosses;
  /** Global-scope load balance of the step so far, from the step's counts and mean probabilities. */
  balanceStep: number;
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

/**
 * AdamW state for checkpoints: the moments of every trainable tensor concatenated in the engine's
 * own order (native: the core's trainable slots, see `et_get_optimizer_state`; tfjs: the order of
 * `tensorNames('trainable')`), and the update count `t`. Only the engine that wrote it reads it back.
 */
export interface OptimizerState {
  steps: number;
  m: Float32Array;
  v: Float32Array;
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

  /** Attaches a fresh adapter, replacing any previous one. */
  attachAdapter(config: AdapterConfig): void;
  readonly adapter: AdapterConfig | null;
  /** Routing statistics per site since the last call (reset by reading); empty without routing. */
  routingStats(): SiteRoutingStats[];
  setTrainMode(mode: TrainMode): void;
  readonly trainMode: TrainMode;

  /** Logits `[batch, seqLen, V]`, no dropout, no state kept. */
  forward(batch: TokenBatch, options?: ForwardOptions): Promise<Float32Array>;
  /** Forward and backward of one micro-batch; gradients accumulate until `optimizerStep`. */
  forwardBackward(batch: TrainBatch, options: ForwardBackwardOptions): Promise<StepStats>;
  /** Accumulated gradient of a trainable tensor. */
  getGrad(name: string): Float32Array;
  /** dL/d(input embeddings) `[batch, seqLen, d]` of the last forwardBackward with needInputGrad. */
  inputGrad(): Float32Array;
  zeroGrad(): void;
  /** Clip, AdamW-update every trainable tensor, zero the gradients. */
  optimizerStep(hyper: AdamWHyperparameters): Promise<OptimizerStepResult>;
  /** A copy of the AdamW state (zeros before the first update). */
  optimizerState(): OptimizerState;
  /** Restores what `optimizerState` returned for the same model, adapter and train mode; a different size is refused. */
  setOptimizerState(state: OptimizerState): void;
  createSession(maxLength: number): DecodeSession;
  dispose(): void;
}
