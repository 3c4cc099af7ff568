/**
 * The native engine: `ModelBackend` over the C++ core (`@expertune/native`). Weights, adapter,
 * optimizer state and activations live in the core; each call here is one batch or one step.
 */
import type { LlamaConfig } from '@expertune/formats';
import native from '@expertune/native';
import type { NativeModelConfig } from '@expertune/native';

import {
  PROJECTIONS,
  type AdamWHyperparameters,
  type DecodeSession,
  type ForwardBackwardOptions,
  type LoraConfig,
  type ModelBackend,
  type OptimizerStepResult,
  type StepStats,
  type TensorKind,
  type TokenBatch,
  type TrainBatch,
  type TrainMode,
} from './types.js';

const ROPE_SCALING_TYPES = { linear: 1, llama3: 2 } as const;
const TENSOR_KINDS: Record<TensorKind, 0 | 1 | 2> = { base: 0, adapter: 1, trainable: 2 };

export function nativeModelConfig(config: LlamaConfig): NativeModelConfig {
  const rope = config.ropeScaling;
  return {
    vocabSize: config.vocabSize,
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    numLayers: config.numLayers,
    numHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
    rmsNormEps: config.rmsNormEps,
    ropeTheta: config.ropeTheta,
    ropeScalingType: rope ? ROPE_SCALING_TYPES[rope.type] : 0,
    ropeFactor: rope ? rope.factor : 1,
    ropeLowFreqFactor: rope?.type === 'llama3' ? rope.lowFreqFactor : 1,
    ropeHighFreqFactor: rope?.type === 'llama3' ? rope.highFreqFactor : 4,
    ropeOriginalMaxPosition: rope?.type === 'llama3' ? rope.originalMaxPositionEmbeddings : 0,
    maxPositionEmbeddings: config.maxPositionEmbeddings,
    tieWordEmbeddings: config.tieWordEmbeddings,
    qkvBias: config.qkvBias,
    oBias: config.oBias,
    mlpBias: config.mlpBias,
    slidingWindow: config.slidingWindow ?? 0,
  };
}

export function loraTargetMask(targets: readonly string[]): number {
  let mask = 0;
  for (const target of targets) {
    const index = (PROJECTIONS as readonly string[]).indexOf(target);
    if (index < 0)
      throw new RangeError(`unknown LoRA target module '${target}'; expected one of ${PROJECTIONS.join(', ')}`);
    mask |= 1 << index;
  }
  return mask;
}

/** Threads of the native core (the calling thread included); 0 means all cores. */
export function setNativeThreads(threads: number): void {
  native.setNumThreads(threads);
}

export function nativeInfo(): { kernels: string; blas: string; threads: number; addon: string } {
  return {
    kernels: native.cpuKernels(),
    blas: native.blasInfo(),
    threads: native.getNumThreads(),
    addon: native.addonPath,
  };
}

export class NativeModelBackend implements ModelBackend {
  readonly engineName = 'native';
  private readonly core: InstanceType<typeof native.NativeModel>;
  private loraConfig: LoraConfig | null = null;
  private mode: TrainMode = 'lora';
  private lastInputRows = 0;

  constructor(readonly config: LlamaConfig) {
    this.core = new native.NativeModel(nativeModelConfig(config));
  }

  setTensor(name: string, values: Float32Array): void {
    this.core.setTensor(name, values);
  }
  getTensor(name: string): Float32Array {
    return this.core.getTensor(name);
  }
  tensorShape(name: string): number[] {
    return this.core.tensorShape(name);
  }
  tensorNames(kind: TensorKind): string[] {
    return this.core.tensorNames(TENSOR_KINDS[kind]);
  }

  attachLora(config: LoraConfig): void {
    this.core.attachLora({
      rank: config.rank,
      alpha: config.alpha,
      useRslora: config.useRslora,
      dropout: config.dropout,
      targetMask: loraTargetMask(config.targetModules),
      seed: config.seed >>> 0,
    });
    this.loraConfig = { ...config, targetModules: [...config.targetModules] };
  }
  get lora(): LoraConfig | null {
    return this.loraConfig;
  }

  setTrainMode(mode: TrainMode): void {
    this.core.setTrainMode(mode === 'full' ? 1 : 0);
    this.mode = mode;
  }
  get trainMode(): TrainMode {
    return this.mode;
  }

  forward(batch: TokenBatch): Promise<Float32Array> {
    return this.core.forward(batch.ids, batch.batch, batch.seqLen);
  }

  async forwardBackward(batch: TrainBatch, options: ForwardBackwardOptions): Promise<StepStats> {
    const stats = await this.core.forwardBackward(batch.ids, batch.targets, batch.batch, batch.seqLen, {
      lossScale: options.lossScale,
      dropoutSeed: options.dropoutSeed >>> 0,
      needInputGrad: options.needInputGrad ?? false,
      recompute: options.recompute ?? false,
    });
    if (options.needInputGrad) this.lastInputRows = batch.batch * batch.seqLen;
    return stats;
  }

  getGrad(name: string): Float32Array {
    return this.core.getGrad(name);
  }
  inputGrad(): Float32Array {
    return this.core.inputGrad(this.lastInputRows);
  }
  zeroGrad(): void {
    this.core.zeroGrad();
  }

  async optimizerStep(hyper: AdamWHyperparameters): Promise<OptimizerStepResult> {
    return { gradNorm: await this.core.optimizerStep(hyper) };
  }

  createSession(maxLength: number): DecodeSession {
    const core = this.core;
    const handle = core.sessionCreate(maxLength);
    let length = 0;
    return {
      async append(ids: readonly number[]): Promise<Float32Array> {
        const logits = await core.sessionAppend(handle, Int32Array.from(ids));
        length += ids.length;
        return logits;
      },
      get length() {
        return length;
      },
      dispose() {
        core.sessionFree(handle);
      },
    };
  }

  dispose(): void {
    this.core.dispose();
  }
}
