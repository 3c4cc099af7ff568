/**
 * The tfjs engine: a `ModelBackend` whose forward pass is `llama-graph.ts` and whose gradients come
 * from tfjs autograd. It is the oracle the native engine is tested against, so it favours plain,
 * checkable code over speed: no KV cache (a decode session recomputes its prefix), no activation
 * recomputation (`recompute` is accepted and ignored: tfjs keeps what autograd needs), and the
 * optimizer runs in plain JS over float32 arrays.
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaConfig } from '@expertune/formats';
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
} from '../types.js';
import { loraInitA } from '../rng.js';
import { ropeFrequencies } from '../rope.js';
import { adamWUpdate, clipCoefficient, createAdamWState, globalGradNorm, type AdamWState } from './adamw.js';
import { initBackend, useBackend, type TfjsBackendName } from './backend.js';
import { crossEntropy, finalHidden, lmHead, logits, type GraphInput } from './llama-graph.js';
import { baseTensorShapes, loraSites } from './tensor-layout.js';

export interface TfjsModelOptions {
  /** tfjs backend; default `cpu`. `tensorflow` falls back to `cpu` with a warning when unavailable. */
  backend?: TfjsBackendName;
}

/** Creates a tfjs model whose base tensors are all zero until `setTensor`. */
export function createTfjsModel(config: LlamaConfig, options: TfjsModelOptions = {}): Promise<TfjsModel> {
  return TfjsModel.create(config, options);
}

function validateConfig(config: LlamaConfig): void {
  const positive = [
    'vocabSize',
    'hiddenSize',
    'intermediateSize',
    'numLayers',
    'numHeads',
    'numKvHeads',
    'headDim',
  ] as const;
  for (const key of positive) {
    if (!Number.isInteger(config[key]) || config[key] <= 0)
      throw new RangeError(`config.${key} must be a positive integer`);
  }
  if (config.numHeads % config.numKvHeads !== 0) {
    throw new RangeError(`numHeads (${config.numHeads}) must be a multiple of numKvHeads (${config.numKvHeads})`);
  }
  if (config.slidingWindow !== null && !(Number.isInteger(config.slidingWindow) && config.slidingWindow > 0)) {
    throw new RangeError('config.slidingWindow must be a positive integer or null');
  }
  ropeFrequencies(config); // throws on an odd head dimension or an unsupported rope_scaling type
}

function validateLora(config: LoraConfig): void {
  if (!Number.isInteger(config.rank) || config.rank <= 0) throw new RangeError('LoRA rank must be a positive integer');
  if (!(config.dropout >= 0 && config.dropout < 1)) throw new RangeError('LoRA dropout must be in [0, 1)');
  for (const module of config.targetModules) {
    if (!PROJECTIONS.includes(module)) throw new RangeError(`unknown LoRA target module ${String(module)}`);
  }
}

/** A private copy of a tensor's float32 values (tfjs may hand out its own buffer). */
function readValues(tensor: tf.Tensor): Float32Array {
  return Float32Array.from(tensor.dataSync() as Float32Array);
}

export class TfjsModel implements ModelBackend {
  readonly engineName: string;
  private readonly baseShapes: Map<string, number[]>;
  private readonly baseTensors = new Map<string, tf.Tensor>();
  private adapterShapes = new Map<string, number[]>();
  private readonly adapterTensors = new Map<string, tf.Tensor>();
  private loraConfig: LoraConfig | null = null;
  private mode: TrainMode = 'lora';
  /** Accumulated gradients of trainable tensors; absent means zero. */
  private readonly gradients = new Map<string, tf.Tensor>();
  private readonly optimizerStates = new Map<string, AdamWState>();
  private lastInputGrad: Float32Array | null = null;
  private disposed = false;

  static async create(config: LlamaConfig, options: TfjsModelOptions = {}): Promise<TfjsModel> {
    validateConfig(config);
    const backend = await initBackend(options.backend ?? 'cpu');
    return new TfjsModel(config, backend);
  }

  private constructor(
    readonly config: LlamaConfig,
    /** The tfjs backend actually in use (`tensorflow` may have fallen back to `cpu`). */
    readonly backendName: TfjsBackendName,
  ) {
    this.engineName = `tfjs-${backendName}`;
    this.baseShapes = baseTensorShapes(config);
    useBackend(backendName);
    for (const [name, shape] of this.baseShapes) this.baseTensors.set(name, tf.zeros(shape));
  }

  // ---- tensors -------------------------------------------------------------------------------

  setTensor(name: string, values: Float32Array): void {
    this.enter();
    const shape = this.shapeOf(name);
    const size = shape.reduce((a, b) => a * b, 1);
    if (values.length !== size)
      throw new RangeError(`${name}: got ${values.length} values, expected ${size} for [${shape.join(', ')}]`);
    const tensors = this.baseShapes.has(name) ? this.baseTensors : this.adapterTensors;
    tensors.get(name)?.dispose();
    // Copied: tfjs's cpu backend would otherwise keep the caller's array as its storage.
    tensors.set(name, tf.tensor(Float32Array.from(values), shape));
  }

  getTensor(name: string): Float32Array {
    this.enter();
    return readValues(this.tensorByName(name));
  }

  tensorShape(name: string): number[] {
    return [...this.shapeOf(name)];
  }

  tensorNames(kind: TensorKind): string[] {
    const base = [...this.baseShapes.keys()];
    const adapter = [...this.adapterShapes.keys()];
    switch (kind) {
      case 'base':
        return base;
      case 'adapter':
        return adapter;
      case 'trainable':
        return this.mode === 'full' ? [...base, ...adapter] : adapter;
    }
  }

  private shapeOf(name: string): number[] {
    const shape = this.baseShapes.get(name) ?? this.adapterShapes.get(name);
    if (shape === undefined) throw new Error(`unknown tensor ${name}`);
    return shape;
  }

  private tensorByName(name: string): tf.Tensor {
    const tensor = this.baseTensors.get(name) ?? this.adapterTensors.get(name);
    if (tensor === undefined) throw new Error(`unknown tensor ${name}`);
    return tensor;
  }

  // ---- adapter and mode ----------------------------------------------------------------------

  get lora(): LoraConfig | null {
    return this.loraConfig;
  }

  get trainMode(): TrainMode {
    return this.mode;
  }

  /** Replaces any previous adapter (its tensors, gradients and optimizer state) with a fresh one. */
  attachLora(config: LoraConfig): void {
    this.enter();
    validateLora(config);
    for (const name of this.adapterShapes.keys()) {
      this.adapterTensors.get(name)?.dispose();
      this.adapterTensors.delete(name);
      this.gradients.get(name)?.dispose();
      this.gradients.delete(name);
      this.optimizerStates.delete(name);
    }
    this.loraConfig = { ...config, targetModules: [...config.targetModules] };
    this.adapterShapes = new Map();
    for (const site of loraSites(this.config, config)) {
      const aShape = [config.rank, site.inFeatures];
      const bShape = [site.outFeatures, config.rank];
      this.adapterShapes.set(site.aName, aShape);
      this.adapterShapes.set(site.bName, bShape);
      this.adapterTensors.set(
        site.aName,
        tf.tensor(loraInitA(config.seed, site.site, config.rank, site.inFeatures), aShape),
      );
      this.adapterTensors.set(site.bName, tf.zeros(bShape));
    }
  }

  /** Changing the mode drops the accumulated gradients; optimizer state is kept per tensor. */
  setTrainMode(mode: TrainMode): void {
    this.enter();
    if (mode !== 'lora' && mode !== 'full') throw new RangeError(`unknown train mode ${String(mode)}`);
    if (mode !== this.mode) this.zeroGrad();
    this.mode = mode;
  }

  // ---- forward and backward ------------------------------------------------------------------

  async forward(batch: TokenBatch): Promise<Float32Array> {
    this.enter();
    this.validateIds(batch.ids, batch.batch * batch.seqLen);
    const logitsTensor = tf.tidy(() => logits(this.graphInput(batch, null, (name) => this.tensorByName(name))));
    try {
      return Float32Array.from((await logitsTensor.data()) as Float32Array);
    } finally {
      logitsTensor.dispose();
    }
  }

  async forwardBackward(batch: TrainBatch, options: ForwardBackwardOptions): Promise<StepStats> {
    this.enter();
    const rows = batch.batch * batch.seqLen;
    this.validateIds(batch.ids, rows);
    this.validateTargets(batch.targets, rows);

    const trainableNames = this.tensorNames('trainable');
    const needInputGrad = options.needInputGrad === true;
    const probe = needInputGrad ? tf.zeros([rows, this.config.hiddenSize]) : null;
    const differentiated = trainableNames.map((name) => this.tensorByName(name));
    if (probe !== null) differentiated.push(probe);

    // The loss as a function of the differentiated tensors, in `differentiated` order. The stats
    // are kept out of the autograd scope (tf.keep) and disposed below.
    const captured: { stats?: tf.Tensor } = {};
    const scaledLoss = (...args: tf.Tensor[]): tf.Scalar => {
      const byName = new Map(trainableNames.map((name, i) => [name, args[i]!]));
      const input = this.graphInput(batch, options.dropoutSeed, (name) => byName.get(name) ?? this.tensorByName(name));
      if (probe !== null) input.inputProbe = args[trainableNames.length]!;
      const { lossSum, correct } = crossEntropy(logits(input), batch.targets);
      captured.stats = tf.keep(tf.stack([lossSum, correct]));
      return tf.mul(lossSum, options.lossScale);
    };

    try {
      if (differentiated.length === 0) {
        // Nothing to differentiate: only the stats are wanted (the returned loss is disposed by tidy).
        tf.tidy(() => {
          scaledLoss();
        });
      } else {
        const { value, grads } = tf.tidy(() => tf.valueAndGrads(scaledLoss)(differentiated));
        value.dispose();
        trainableNames.forEach((name, i) => this.accumulateGradient(name, grads[i]));
        if (probe !== null) {
          const inputGradient = grads[trainableNames.length];
          this.lastInputGrad =
            inputGradient === undefined ? new Float32Array(rows * this.config.hiddenSize) : readValues(inputGradient);
          inputGradient?.dispose();
        }
      }
      const stats = captured.stats;
      if (stats === undefined) throw new Error('internal error: the loss function did not run');
      const [lossSum, correct] = (await stats.data()) as Float32Array;
      stats.dispose();
      return { lossSum: lossSum!, tokens: batch.targets.filter((target) => target >= 0).length, correct: correct! };
    } finally {
      probe?.dispose();
    }
  }

  /** Adds a fresh gradient to the accumulator of `name`, taking ownership of it. */
  private accumulateGradient(name: string, gradient: tf.Tensor | undefined): void {
    if (gradient === undefined) return; // not connected to the loss: contributes zero
    const previous = this.gradients.get(name);
    if (previous === undefined) {
      this.gradients.set(name, gradient);
    } else {
      this.gradients.set(name, tf.add(previous, gradient));
      previous.dispose();
      gradient.dispose();
    }
  }

  getGrad(name: string): Float32Array {
    this.enter();
    if (!this.tensorNames('trainable').includes(name))
      throw new Error(`${name} is not trainable in mode '${this.mode}'`);
    const gradient = this.gradients.get(name);
    if (gradient === undefined) return new Float32Array(this.shapeOf(name).reduce((a, b) => a * b, 1));
    return readValues(gradient);
  }

  inputGrad(): Float32Array {
    if (this.lastInputGrad === null) throw new Error('no forwardBackward with needInputGrad has run');
    return Float32Array.from(this.lastInputGrad);
  }

  zeroGrad(): void {
    for (const gradient of this.gradients.values()) gradient.dispose();
    this.gradients.clear();
  }

  async optimizerStep(hyper: AdamWHyperparameters): Promise<OptimizerStepResult> {
    this.enter();
    const names = this.tensorNames('trainable');
    const gradients = names.map((name) => this.getGrad(name));
    const gradNorm = globalGradNorm(gradients);
    const clip = clipCoefficient(gradNorm, hyper.maxGradNorm);
    names.forEach((name, i) => {
      const gradient = gradients[i]!;
      if (clip !== 1) for (let j = 0; j < gradient.length; j++) gradient[j] = gradient[j]! * clip;
      const shape = this.shapeOf(name);
      const values = this.getTensor(name);
      let state = this.optimizerStates.get(name);
      if (state === undefined) {
        state = createAdamWState(values.length);
        this.optimizerStates.set(name, state);
      }
      // Matrices and embeddings are decayed; norms and biases (1-D) are not.
      adamWUpdate(values, gradient, state, hyper, shape.length >= 2);
      this.setTensor(name, values);
    });
    this.zeroGrad();
    return { gradNorm };
  }

  // ---- decoding ------------------------------------------------------------------------------

  createSession(maxLength: number): DecodeSession {
    this.enter();
    if (!Number.isInteger(maxLength) || maxLength <= 0) throw new RangeError('maxLength must be a positive integer');
    return new TfjsDecodeSession(this, maxLength);
  }

  /** Logits `[V]` at the last position of a single sequence (used by decode sessions). */
  async lastPositionLogits(tokens: readonly number[]): Promise<Float32Array> {
    this.enter();
    const ids = Int32Array.from(tokens);
    this.validateIds(ids, ids.length);
    const batch: TokenBatch = { ids, batch: 1, seqLen: ids.length };
    const result = tf.tidy(() => {
      const input = this.graphInput(batch, null, (name) => this.tensorByName(name));
      const hidden = finalHidden(input);
      const last = tf.slice(hidden, [ids.length - 1, 0], [1, this.config.hiddenSize]);
      return lmHead(input, last);
    });
    try {
      return Float32Array.from((await result.data()) as Float32Array);
    } finally {
      result.dispose();
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.zeroGrad();
    for (const tensor of this.baseTensors.values()) tensor.dispose();
    for (const tensor of this.adapterTensors.values()) tensor.dispose();
    this.baseTensors.clear();
    this.adapterTensors.clear();
    this.optimizerStates.clear();
    this.lastInputGrad = null;
    this.disposed = true;
  }

  // ---- helpers -------------------------------------------------------------------------------

  /** Every public operation starts here: the model must be alive and its backend current. */
  private enter(): void {
    if (this.disposed) throw new Error('the model has been disposed');
    useBackend(this.backendName);
  }

  private graphInput(batch: TokenBatch, dropoutSeed: number | null, weight: (name: string) => tf.Tensor): GraphInput {
    return {
      config: this.config,
      weight,
      lora: this.loraConfig,
      ids: batch.ids,
      batch: batch.batch,
      seqLen: batch.seqLen,
      dropoutSeed,
    };
  }

  private validateIds(ids: Int32Array, expected: number): void {
    if (ids.length !== expected || expected === 0)
      throw new RangeError(`expected ${expected} > 0 token ids, got ${ids.length}`);
    for (const id of ids) {
      if (!(id >= 0 && id < this.config.vocabSize))
        throw new RangeError(`token id ${id} outside [0, ${this.config.vocabSize})`);
    }
  }

  private validateTargets(targets: Int32Array, expected: number): void {
    if (targets.length !== expected) throw new RangeError(`expected ${expected} targets, got ${targets.length}`);
    for (const target of targets) {
      if (!(target >= -1 && target < this.config.vocabSize))
        throw new RangeError(`target ${target} outside [-1, ${this.config.vocabSize})`);
    }
  }
}

/** Decoding by recomputing the whole prefix at every call: simple, and exactly `forward`'s math. */
class TfjsDecodeSession implements DecodeSession {
  private readonly tokens: number[] = [];
  private lastLogits: Float32Array | null = null;
  private closed = false;

  constructor(
    private readonly model: TfjsModel,
    private readonly maxLength: number,
  ) {}

  get length(): number {
    return this.tokens.length;
  }

  async append(ids: readonly number[]): Promise<Float32Array> {
    if (this.closed) throw new Error('the decode session has been disposed');
    if (this.tokens.length + ids.length > this.maxLength) {
      throw new RangeError(
        `session length ${this.tokens.length + ids.length} would exceed maxLength ${this.maxLength}`,
      );
    }
    if (ids.length === 0) {
      if (this.lastLogits === null) throw new Error('append needs at least one token in an empty session');
      return Float32Array.from(this.lastLogits);
    }
    const logitsAfter = await this.model.lastPositionLogits([...this.tokens, ...ids]);
    this.tokens.push(...ids);
    this.lastLogits = logitsAfter;
    return Float32Array.from(logitsAfter);
  }

  dispose(): void {
    this.closed = true;
    this.lastLogits = null;
  }
}
