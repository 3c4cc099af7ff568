/** The raw binding; libs/engine wraps it in the engine interface. */
export interface NativeModelConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** 0 none, 1 linear, 2 llama3 */
  ropeScalingType: number;
  ropeFactor: number;
  ropeLowFreqFactor: number;
  ropeHighFreqFactor: number;
  ropeOriginalMaxPosition: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  /** 0 for none */
  slidingWindow: number;
}

/** et_adapter_config (include/expertune.h); fields a method does not use are ignored. */
export interface NativeAdapterConfig {
  /** 0 lora, 1 mola, 2 loramoe, 3 dynmole, 4 flylora */
  method: number;
  rank: number;
  alpha: number;
  useRslora: boolean;
  dropout: number;
  /** bit p set = projection p (q, k, v, o, gate, up, down) adapted */
  targetMask: number;
  seed: number;
  /** one entry per layer */
  numExperts?: number[];
  topK?: number[];
  balanceCoef?: number;
  balancePooled?: boolean;
  balanceGlobal?: boolean;
  zLossCoef?: number;
  blcAlpha?: number;
  blcWeight?: number;
  topP?: number;
  keepTopK?: number;
  entropyIndex?: number;
  entropyThreshold?: number;
  entropyEps?: number;
  entropyCoef?: number;
  flyTopK?: number;
  flySelectAbs?: boolean;
  flyBiasRate?: number;
}

export interface NativeStepStats {
  lossSum: number;
  tokens: number;
  correct: number;
  aux: { balance: number; zLoss: number; entropy: number; lbc: number; total: number };
  balanceStep: number;
}

export class NativeModel {
  /** device: -1 the CPU (default), n ≥ 0 CUDA device n (throws "CUDA backend not built" in a CPU-only build). */
  constructor(config: NativeModelConfig, device?: number);
  setTensor(name: string, values: Float32Array): void;
  getTensor(name: string): Float32Array;
  getGrad(name: string): Float32Array;
  tensorShape(name: string): number[];
  /** 0 base, 1 adapter, 2 trainable */
  tensorNames(kind: 0 | 1 | 2): string[];
  attachAdapter(config: NativeAdapterConfig): void;
  /** Per routed site: [layer, projection, E, tokens, entropySum, broadcast, load[E], gateSum[E]]; reading resets. */
  routingStats(): Float64Array;
  /** 0 LoRA only, 1 full fine-tuning */
  setTrainMode(mode: 0 | 1): void;
  forward(
    ids: Int32Array,
    batch: number,
    seqLen: number,
    options?: { collectRouting?: boolean; tokenMask?: Uint8Array },
  ): Promise<Float32Array>;
  forwardBackward(
    ids: Int32Array,
    targets: Int32Array,
    batch: number,
    seqLen: number,
    options: {
      lossScale: number;
      dropoutSeed: number;
      needInputGrad?: boolean;
      recompute?: boolean;
      auxScale?: number;
      tokenMask?: Uint8Array;
      taskTypes?: Int32Array;
    },
  ): Promise<NativeStepStats>;
  /** rows = batch × seqLen of the last forwardBackward with needInputGrad */
  inputGrad(rows: number): Float32Array;
  zeroGrad(): void;
  optimizerStep(hyper: {
    lr: number;
    beta1: number;
    beta2: number;
    eps: number;
    weightDecay: number;
    maxGradNorm: number;
  }): Promise<number>;
  optimizerSteps(): number;
  /** AdamW moments of the trainable tensors concatenated in the core's order, and the step count t. */
  getOptimizerState(): { steps: number; m: Float32Array; v: Float32Array };
  /** Restores what getOptimizerState returned; a different length is refused. */
  setOptimizerState(steps: number, m: Float32Array, v: Float32Array): void;
  sessionCreate(maxLength: number): number;
  sessionAppend(session: number, ids: Int32Array): Promise<Float32Array>;
  sessionFree(session: number): void;
  dispose(): void;
}

export function setNumThreads(threads: number): void;
export function getNumThreads(): number;
/** "avx512", "avx2" or "generic" */
export function cpuKernels(): string;
export function blasInfo(): string;
/** Visible CUDA devices; throws "CUDA backend not built" in a CPU-only build (docs/cuda.md). */
export function cudaDeviceCount(): number;
export const addonPath: string;
