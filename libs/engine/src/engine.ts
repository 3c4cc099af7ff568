/**
 * The engine's TypeScript face: `Engine` (native or tfjs) loads a `Model` from a Hugging Face
 * directory; a model carries at most one `Adapter`; an `Optimizer` runs training steps on it.
 */
import { loadModelConfig, openCheckpoint, validateCheckpointAgainstConfig, type LlamaConfig } from '@expertune/formats';

import { hash3 } from './rng.js';
import { learningRate, type LearningRateSchedule } from './schedule.js';
import { createTfjsModel, type TfjsModelOptions } from './tfjs/index.js';
import { NativeModelBackend, setNativeThreads } from './native-model.js';
import { deviceFromEnv, parseDevice, type Device } from './device.js';
import type {
  AdamWHyperparameters,
  AdapterConfig,
  AuxLosses,
  ForwardOptions,
  LoraConfig,
  ModelBackend,
  SiteRoutingStats,
  StepStats,
  TokenBatch,
  TrainBatch,
  TrainMode,
} from './types.js';

export type EngineName = 'native' | 'tfjs';

export interface EngineOptions {
  /** Native engine threads (0 = all cores). */
  threads?: number;
  /** tfjs backend (tfjs engine only). */
  tfjsBackend?: TfjsModelOptions['backend'];
  /** Native engine only: `cpu` or `cuda:<n>` (or parsed); default: EXPERTUNE_DEVICE, else the CPU. */
  device?: Device | string;
}

export class Engine {
  private constructor(
    readonly name: EngineName,
    private readonly options: EngineOptions,
  ) {}

  static create(name: EngineName, options: EngineOptions = {}): Engine {
    if (name !== 'native' && name !== 'tfjs')
      throw new RangeError(`unknown engine '${String(name)}': use native or tfjs`);
    if (name === 'native' && options.threads !== undefined) setNativeThreads(options.threads);
    if (name === 'native') {
      const device =
        options.device === undefined
          ? deviceFromEnv()
          : typeof options.device === 'string'
            ? parseDevice(options.device, 'device')
            : options.device;
      return new Engine(name, { ...options, device });
    }
    return new Engine(name, options);
  }

  /** A model with every base tensor still unset (or zero, for tfjs): fill it with `setTensor`. */
  async createModel(config: LlamaConfig): Promise<Model> {
    const backend: ModelBackend =
      this.name === 'native'
        ? new NativeModelBackend(config, this.options.device as Device)
        : await createTfjsModel(config, { backend: this.options.tfjsBackend ?? 'cpu' });
    return new Model(backend);
  }

  /** Loads config.json and the safetensors weights of a Hugging Face model directory. */
  async loadModel(dir: string): Promise<Model> {
    const config = loadModelConfig(dir);
    const checkpoint = openCheckpoint(dir);
    try {
      validateCheckpointAgainstConfig(config, checkpoint, dir);
      const model = await this.createModel(config);
      try {
        for (const name of model.backend.tensorNames('base'))
          model.backend.setTensor(name, checkpoint.readFloat32(name));
      } catch (error) {
        model.dispose();
        throw error;
      }
      model.sourceDir = dir;
      return model;
    } finally {
      checkpoint.close();
    }
  }
}

export class Model {
  /** The directory it was loaded from, when it was. */
  sourceDir: string | null = null;
  private currentAdapter: Adapter | null = null;

  constructor(readonly backend: ModelBackend) {}

  get config(): LlamaConfig {
    return this.backend.config;
  }
  get adapter(): Adapter | null {
    return this.currentAdapter;
  }
  get trainMode(): TrainMode {
    return this.backend.trainMode;
  }

  /** Attaches a fresh LoRA adapter (A from the seed, B = 0), replacing any previous one. */
  attachLora(config: LoraConfig): Adapter {
    return this.attachAdapter({ ...config, method: 'lora' });
  }

  /** Attaches a fresh adapter of any method (docs/methods.md), replacing any previous one. */
  attachAdapter(config: AdapterConfig): Adapter {
    this.backend.attachAdapter(config);
    this.currentAdapter = new Adapter(this.backend, config);
    return this.currentAdapter;
  }

  /** Routing statistics per adapted site since the last call (reading resets them). */
  routingStats(): SiteRoutingStats[] {
    return this.backend.routingStats();
  }

  setTrainMode(mode: TrainMode): void {
    this.backend.setTrainMode(mode);
  }

  /** Logits `[batch, seqLen, V]`; with `collectRouting`, the routers' statistics accumulate (calibration). */
  logits(batch: TokenBatch, options: ForwardOptions = {}): Promise<Float32Array> {
    return this.backend.forward(batch, options);
  }

  /** Names and values of the trainable tensors (the adapter, or every weight in full mode). */
  trainableTensors(): Map<string, Float32Array> {
    return new Map(this.backend.tensorNames('trainable').map((name) => [name, this.backend.getTensor(name)]));
  }

  parameterCount(kind: 'base' | 'trainable'): number {
    let total = 0;
    for (const name of this.backend.tensorNames(kind))
      total += this.backend.tensorShape(name).reduce((a, b) => a * b, 1);
    return total;
  }

  dispose(): void {
    this.backend.dispose();
  }
}

export class Adapter {
  constructor(
    private readonly backend: ModelBackend,
    readonly config: AdapterConfig,
  ) {}

  get method(): AdapterConfig['method'] {
    return this.config.method;
  }

  /** Every tensor of the adapter, trained or not (FlyLoRA's frozen A and its bias included). */
  tensorNames(): string[] {
    return this.backend.tensorNames('adapter');
  }
  weights(): Map<string, Float32Array> {
    return new Map(this.tensorNames().map((name) => [name, this.backend.getTensor(name)]));
  }
  /** Loads adapter tensors by name; every one of the adapter's tensors must be given. */
  load(weights: ReadonlyMap<string, Float32Array>): void {
    const expected = this.tensorNames();
    const missing = expected.filter((name) => !weights.has(name));
    if (missing.length > 0)
      throw new Error(`adapter weights missing ${missing.length} tensor(s): ${missing.slice(0, 5).join(', ')}`);
    const unexpected = [...weights.keys()].filter((name) => !expected.includes(name));
    if (unexpected.length > 0)
      throw new Error(`adapter weights have unexpected tensor(s): ${unexpected.slice(0, 5).join(', ')}`);
    for (const name of expected) this.backend.setTensor(name, weights.get(name)!);
  }
}

export interface OptimizerConfig extends Omit<AdamWHyperparameters, 'lr'> {
  schedule: LearningRateSchedule;
  /** Seeds the dropout masks of each micro-batch. */
  seed: number;
  recompute?: boolean;
}

export interface TrainStepResult extends Omit<StepStats, 'balanceStep'> {
  /** Mean cross-entropy over the step's counted tokens. */
  loss: number;
  gradNorm: number;
  lr: number;
  step: number;
}

/** AdamW with a learning-rate schedule; one `step` is one optimizer update over its micro-batches. */
export class Optimizer {
  private updates = 0;

  constructor(
    private readonly model: Model,
    readonly config: OptimizerConfig,
  ) {}

  /** Updates taken so far (the schedule position). */
  get stepsTaken(): number {
    return this.updates;
  }

  /**
   * Continues a checkpointed run: the schedule position and dropout seeds follow the update
   * count. The model's optimizer state is restored separately (`ModelBackend.setOptimizerState`).
   */
  resumeAt(updates: number): void {
    if (!Number.isInteger(updates) || updates < 0)
      throw new RangeError(`update count must be a non-negative integer, got ${updates}`);
    this.updates = updates;
  }

  /**
   * Forward and backward over every micro-batch (gradient accumulation), then one update.
   * Gradients are of the mean loss over all counted tokens of the step, whatever the split.
   */
  async step(microBatches: readonly TrainBatch[]): Promise<TrainStepResult> {
    if (microBatches.length === 0) throw new RangeError('a training step needs at least one micro-batch');
    const tokens = microBatches.reduce((sum, b) => sum + countTargets(b.targets), 0);
    if (tokens === 0) throw new RangeError('the step has no counted target (every target is -1)');
    const realTokens = microBatches.map(countRealTokens);
    const stepRealTokens = realTokens.reduce((a, b) => a + b, 0);
    const total = { lossSum: 0, tokens: 0, correct: 0 };
    const aux: AuxLosses = { balance: 0, zLoss: 0, entropy: 0, lbc: 0, total: 0 };
    const adapter = this.model.adapter?.config;
    const globalBalance = adapter !== undefined && 'balance' in adapter && adapter.balance.scope === 'global';
    for (const [index, batch] of microBatches.entries()) {
      const auxScale = stepRealTokens > 0 ? realTokens[index]! / stepRealTokens : 0;
      const stats = await this.model.backend.forwardBackward(batch, {
        lossScale: 1 / tokens,
        dropoutSeed: hash3(this.config.seed, this.updates, index),
        recompute: this.config.recompute ?? false,
        auxScale,
      });
      total.lossSum += stats.lossSum;
      total.tokens += stats.tokens;
      total.correct += stats.correct;
      for (const key of ['balance', 'zLoss', 'entropy', 'lbc', 'total'] as const) aux[key] += auxScale * stats.aux[key];
      // The step's global balance loss is the one from the whole step's counts (docs/methods.md).
      if (globalBalance) aux.balance = stats.balanceStep;
    }
    const lr = learningRate(this.config.schedule, this.updates);
    const { gradNorm } = await this.model.backend.optimizerStep({
      lr,
      beta1: this.config.beta1,
      beta2: this.config.beta2,
      eps: this.config.eps,
      weightDecay: this.config.weightDecay,
      maxGradNorm: this.config.maxGradNorm,
    });
    this.updates += 1;
    return { ...total, aux, loss: total.lossSum / total.tokens, gradNorm, lr, step: this.updates };
  }
}

function countRealTokens(batch: TrainBatch): number {
  if (batch.tokenMask === undefined) return batch.batch * batch.seqLen;
  let n = 0;
  for (const m of batch.tokenMask) n += m;
  return n;
}

function countTargets(targets: Int32Array): number {
  let n = 0;
  for (const t of targets) if (t >= 0) n += 1;
  return n;
}
