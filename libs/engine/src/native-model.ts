/**
 * The native engine: `ModelBackend` over the C++ core (`@expertune/native`). Weights, adapter,
 * optimizer state and activations live in the core; each call here is one batch or one step.
 */
import type { LlamaConfig } from '@expertune/formats';
import native from '@expertune/native';
import type { NativeAdapterConfig, NativeModelConfig } from '@expertune/native';

import { CPU_DEVICE, deviceError, nativeDeviceOrdinal, type Device } from './device.js';
import {
  ADAPTER_METHODS,
  PROJECTIONS,
  type AdamWHyperparameters,
  type AdapterConfig,
  type DecodeSession,
  type ForwardBackwardOptions,
  type ForwardOptions,
  type ModelBackend,
  type SiteRoutingStats,
  type OptimizerState,
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

/** The C API's et_adapter_config of an adapter (docs/methods.md). */
export function nativeAdapterConfig(config: AdapterConfig): NativeAdapterConfig {
  const base: NativeAdapterConfig = {
    method: ADAPTER_METHODS.indexOf(config.method),
    rank: config.rank,
    alpha: config.alpha,
    useRslora: config.useRslora,
    dropout: config.dropout,
    targetMask: loraTargetMask(config.targetModules),
    seed: config.seed >>> 0,
  };
  if (config.method === 'lora') return base;
  if (config.method === 'flylora')
    return { ...base, flyTopK: config.topK, flySelectAbs: config.select === 'abs', flyBiasRate: config.biasRate };
  const routed: NativeAdapterConfig = {
    ...base,
    numExperts: [...config.numExperts],
    balanceCoef: config.balance.coef,
    balancePooled: config.balance.form === 'pooled',
    balanceGlobal: config.balance.scope === 'global',
    zLossCoef: config.zLossCoef,
  };
  switch (config.method) {
    case 'mola':
      return { ...routed, topK: [...config.topK] };
    case 'loramoe':
      return { ...routed, blcAlpha: config.blcAlpha, blcWeight: config.blcWeight };
    case 'dynmole':
      return {
        ...routed,
        topP: config.topP,
        keepTopK: config.keepTopK,
        entropyIndex: config.entropyIndex,
        entropyThreshold: config.entropyThreshold,
        entropyEps: config.entropyEps,
        entropyCoef: config.entropyCoef,
      };
  }
}

/** Decodes et_routing_stats' flat layout (include/expertune.h). */
export function decodeRoutingStats(flat: Float64Array): SiteRoutingStats[] {
  const sites: SiteRoutingStats[] = [];
  for (let at = 0; at < flat.length;) {
    const [layer, projection, experts, tokens, entropySum, broadcast] = flat.subarray(at, at + 6);
    const E = experts!;
    const load = Array.from(flat.subarray(at + 6, at + 6 + E));
    const gateSum = Array.from(flat.subarray(at + 6 + E, at + 6 + 2 * E));
    const per = (v: number) => (tokens! > 0 ? v / tokens! : 0);
    sites.push({
      layer: layer!,
      projection: PROJECTIONS[projection!]!,
      experts: E,
      tokens: tokens!,
      load: load.map(per),
      meanGate: gateSum.map(per),
      entropy: per(entropySum!),
      broadcast: per(broadcast!),
    });
    at += 6 + 2 * E;
  }
  return sites;
}

export function nativeInfo(): { kernels: string; blas: string; threads: number; addon: string } {
  return {
    kernels: native.cpuKernels(),
    blas: native.blasInfo(),
    threads: native.getNumThreads(),
    addon: native.addonPath,
  };
}

/**
 * Fails now, with the reason and the way out, when `device` cannot be had: a CUDA device from a
 * CPU-only build, or an ordinal past the visible devices. The CPU always can.
 */
export function assertNativeDevice(device: Device, cudaDeviceCount: () => number = native.cudaDeviceCount): void {
  if (device.kind === 'cpu') return;
  let count: number;
  try {
    count = cudaDeviceCount();
  } catch (error) {
    throw deviceError(device, error instanceof Error ? error.message : String(error));
  }
  if (device.index >= count) throw deviceError(device, `CUDA device ${device.index} does not exist (${count} visible)`);
}

/** OpenBLAS core types whose sgemm kernels stop at AVX2. */
const AVX2_BLAS_CORES = /core=(Haswell|Zen|Sandybridge|Nehalem|Prescott|Core2|Penryn|Dunnington|Atom)\b/;

/**
 * A one-line hint when OpenBLAS runs AVX2 kernels on a CPU that has AVX-512 because
 * `OPENBLAS_CORETYPE` forces it (matrix products run about half as fast; bench/RESULTS.md), else null.
 */
export function blasHint(info = nativeInfo(), env: NodeJS.ProcessEnv = process.env): string | null {
  const forced = env.OPENBLAS_CORETYPE;
  if (info.kernels !== 'avx512' || !forced || !AVX2_BLAS_CORES.test(info.blas)) return null;
  return (
    `OPENBLAS_CORETYPE=${forced} makes OpenBLAS use AVX2 kernels on this AVX-512 CPU; ` +
    'unset it for about twice as fast matrix products'
  );
}

export class NativeModelBackend implements ModelBackend {
  readonly engineName = 'native';
  private readonly core: InstanceType<typeof native.NativeModel>;
  private adapterConfig: AdapterConfig | null = null;
  private mode: TrainMode = 'lora';
  private lastInputRows = 0;

  constructor(
    readonly config: LlamaConfig,
    readonly device: Device = CPU_DEVICE,
  ) {
    if (device.kind === 'cpu') {
      this.core = new native.NativeModel(nativeModelConfig(config));
    } else {
      try {
        this.core = new native.NativeModel(nativeModelConfig(config), nativeDeviceOrdinal(device));
      } catch (error) {
        throw deviceError(device, error instanceof Error ? error.message : String(error));
      }
    }
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

  attachAdapter(config: AdapterConfig): void {
    this.core.attachAdapter(nativeAdapterConfig(config));
    this.adapterConfig = structuredClone(config);
  }
  get adapter(): AdapterConfig | null {
    return this.adapterConfig;
  }
  routingStats(): SiteRoutingStats[] {
    const sites = decodeRoutingStats(this.core.routingStats());
    if (this.adapterConfig?.method === 'flylora') for (const site of sites) site.entropy = null;
    return sites;
  }

  setTrainMode(mode: TrainMode): void {
    this.core.setTrainMode(mode === 'full' ? 1 : 0);
    this.mode = mode;
  }
  get trainMode(): TrainMode {
    return this.mode;
  }

  forward(batch: TokenBatch, options: ForwardOptions = {}): Promise<Float32Array> {
    return this.core.forward(batch.ids, batch.batch, batch.seqLen, {
      collectRouting: options.collectRouting ?? false,
      ...(options.tokenMask ? { tokenMask: options.tokenMask } : {}),
    });
  }

  async forwardBackward(batch: TrainBatch, options: ForwardBackwardOptions): Promise<StepStats> {
    const stats = await this.core.forwardBackward(batch.ids, batch.targets, batch.batch, batch.seqLen, {
      lossScale: options.lossScale,
      dropoutSeed: options.dropoutSeed >>> 0,
      needInputGrad: options.needInputGrad ?? false,
      recompute: options.recompute ?? false,
      auxScale: options.auxScale ?? 1,
      ...(batch.tokenMask ? { tokenMask: batch.tokenMask } : {}),
      ...(batch.taskTypes ? { taskTypes: batch.taskTypes } : {}),
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

  optimizerState(): OptimizerState {
    return this.core.getOptimizerState();
  }
  setOptimizerState(state: OptimizerState): void {
    this.core.setOptimizerState(state.steps, state.m, state.v);
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
