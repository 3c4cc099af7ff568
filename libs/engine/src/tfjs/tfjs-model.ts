/**
 * The tfjs engine: a `ModelBackend` whose forward pass is `llama-graph.ts` and whose gradients come
 * from tfjs autograd. It is the oracle the native engine is tested against, so it favours plain,
 * checkable code over speed: no KV cache (a decode session recomputes its prefix), no activation
 * recomputation (`recompute` is accepted and ignored: tfjs keeps what autograd needs), and the
 * optimizer runs in plain JS over float32 arrays.
 *
 * Adapters of every method of docs/methods.md (`adapter-graph.ts`): their auxiliary losses
 * (`aux-losses.ts`) join the objective as `auxScale · L_aux`; the routing statistics and the
 * optimizer step's balance buffers live in `routing-state.ts`; FlyLoRA's bias moves after each
 * training micro-batch (never in `forward`).
 */
import * as tf from '@tensorflow/tfjs';
import type { LlamaConfig } from '@expertune/formats';
import type {
  AdamWHyperparameters,
  AdapterConfig,
  AuxLosses,
  DecodeSession,
  ForwardBackwardOptions,
  ForwardOptions,
  LoraConfig,
  ModelBackend,
  OptimizerState,
  OptimizerStepResult,
  Projection,
  SiteRoutingStats,
  StepStats,
  TensorKind,
  TokenBatch,
  TrainBatch,
  TrainMode,
} from '../types.js';
import { ropeFrequencies } from '../rope.js';
import {
  adapterSites,
  adapterTensorShapes,
  hasRouter,
  initialAdapterTensors,
  validateAdapterConfig,
  type AdapterSite,
  type AdapterTensorInfo,
} from '../methods/index.js';
import { flyloraBiasUpdate } from '../methods/flylora/index.js';
import { adamWUpdate, clipCoefficient, createAdamWState, globalGradNorm, type AdamWState } from './adamw.js';
import { AdapterGraph, type SiteRecord } from './adapter-graph.js';
import { auxiliaryLosses, recordPoolSums, type PoolSums } from './aux-losses.js';
import { initBackend, useBackend, type TfjsBackendName } from './backend.js';
import { crossEntropy, finalHidden, lmHead, logits, type GraphInput } from './llama-graph.js';
import { RoutingState } from './routing-state.js';
import { baseTensorShapes } from './tensor-layout.js';

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

/** One site's routing in a forward pass, `[T, E]` row-major (see `TfjsModel.lastRouting`). */
export interface SiteRoutingRecord {
  layer: number;
  projection: Projection;
  experts: number;
  /** Router probabilities (null for FlyLoRA). */
  probs: Float32Array | null;
  /** Kept experts: the top-k set (mola), the argmax (loramoe), the mask (dynmole), the selected ranks (flylora). */
  selection: Uint8Array;
  /** The gate values `G`. */
  gates: Float64Array;
  /** DynMoLE: 1 per broadcast token. */
  broadcast: Uint8Array | null;
}

const ZERO_AUX: AuxLosses = { balance: 0, zLoss: 0, entropy: 0, lbc: 0, total: 0 };

/** A private copy of a tensor's float32 values (tfjs may hand out its own buffer). */
function readValues(tensor: tf.Tensor): Float32Array {
  return Float32Array.from(tensor.dataSync() as Float32Array);
}

export class TfjsModel implements ModelBackend {
  readonly engineName: string;
  private readonly baseShapes: Map<string, number[]>;
  private readonly baseTensors = new Map<string, tf.Tensor>();
  private adapterShapes = new Map<string, AdapterTensorInfo>();
  private readonly adapterTensors = new Map<string, tf.Tensor>();
  private adapterConfig: AdapterConfig | null = null;
  private sites: AdapterSite[] = [];
  private routing: RoutingState | null = null;
  private lastRecords: SiteRoutingRecord[] = [];
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
    switch (kind) {
      case 'base':
        return base;
      case 'adapter':
        return [...this.adapterShapes.keys()];
      case 'trainable': {
        const trainable = [...this.adapterShapes].filter(([, info]) => info.trainable).map(([name]) => name);
        return this.mode === 'full' ? [...base, ...trainable] : trainable;
      }
    }
  }

  private shapeOf(name: string): number[] {
    const shape = this.baseShapes.get(name) ?? this.adapterShapes.get(name)?.shape;
    if (shape === undefined) throw new Error(`unknown tensor ${name}`);
    return shape;
  }

  private tensorByName(name: string): tf.Tensor {
    const tensor = this.baseTensors.get(name) ?? this.adapterTensors.get(name);
    if (tensor === undefined) throw new Error(`unknown tensor ${name}`);
    return tensor;
  }

  // ---- adapter and mode ----------------------------------------------------------------------

  get adapter(): AdapterConfig | null {
    return this.adapterConfig;
  }

  get trainMode(): TrainMode {
    return this.mode;
  }

  /**
   * Attaches a fresh adapter of any method (docs/methods.md), replacing any previous one (its
   * tensors, gradients, optimizer state, routing statistics and balance buffers).
   */
  attachAdapter(config: AdapterConfig): void {
    this.enter();
    validateAdapterConfig(config, this.config);
    for (const name of this.adapterShapes.keys()) {
      this.adapterTensors.get(name)?.dispose();
      this.adapterTensors.delete(name);
      this.gradients.get(name)?.dispose();
      this.gradients.delete(name);
      this.optimizerStates.delete(name);
    }
    this.adapterConfig = structuredClone(config);
    this.sites = adapterSites(this.config, this.adapterConfig);
    this.adapterShapes = adapterTensorShapes(this.config, this.adapterConfig);
    for (const [name, values] of initialAdapterTensors(this.config, this.adapterConfig))
      this.adapterTensors.set(name, tf.tensor(values, this.adapterShapes.get(name)!.shape));
    this.routing = new RoutingState(this.adapterConfig, this.sites);
    this.lastRecords = [];
  }

  /** Attaches a fresh plain LoRA adapter (A from the seed, B = 0). */
  attachLora(config: LoraConfig): void {
    this.attachAdapter({ ...config, method: 'lora' });
  }

  /** Routing statistics per site since the last call (reading resets them); empty without routing. */
  routingStats(): SiteRoutingStats[] {
    return this.routing?.readStats() ?? [];
  }

  /**
   * What every site with routing decided in the latest forward or forwardBackward (a testing and
   * debugging aid, not part of `ModelBackend`): probabilities, selections and gates per token.
   */
  lastRouting(): SiteRoutingRecord[] {
    return this.lastRecords.map((record) => ({ ...record }));
  }

  /**
   * Empties the optimizer step's balance buffers, as `optimizerStep` does, without an update
   * (tests evaluating the loss repeatedly at one point use it; not part of `ModelBackend`).
   */
  resetStepState(): void {
    this.routing?.resetStep();
  }

  /** Changing the mode drops the accumulated gradients; optimizer state is kept per tensor. */
  setTrainMode(mode: TrainMode): void {
    this.enter();
    if (mode !== 'lora' && mode !== 'full') throw new RangeError(`unknown train mode ${String(mode)}`);
    if (mode !== this.mode) this.zeroGrad();
    this.mode = mode;
  }

  // ---- forward and backward ------------------------------------------------------------------

  async forward(batch: TokenBatch, options: ForwardOptions = {}): Promise<Float32Array> {
    this.enter();
    const rows = batch.batch * batch.seqLen;
    this.validateIds(batch.ids, rows);
    const collect = options.collectRouting === true;
    const tokenMask = collect ? this.maskValues(options.tokenMask, rows) : null;
    const logitsTensor = tf.tidy(() => {
      const { input, graph } = this.graphInput(batch, null, (name) => this.tensorByName(name));
      const result = logits(input);
      if (graph !== null && tokenMask !== null) this.routing?.accumulate(graph.records, tokenMask);
      this.keepRecords(graph);
      return result;
    });
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
    const tokenMask = this.maskValues(batch.tokenMask, rows);
    if (batch.taskTypes !== undefined) this.validateTaskTypes(batch.taskTypes, batch.batch);
    const auxScale = options.auxScale ?? 1;

    const trainableNames = this.tensorNames('trainable');
    const needInputGrad = options.needInputGrad === true;
    const probe = needInputGrad ? tf.zeros([rows, this.config.hiddenSize]) : null;
    const differentiated = trainableNames.map((name) => this.tensorByName(name));
    if (probe !== null) differentiated.push(probe);

    // The loss as a function of the differentiated tensors, in `differentiated` order. The stats
    // are kept out of the autograd scope (tf.keep) and disposed below; the site records' JS values
    // (selections, gates, pool sums) are used after the backward.
    const captured: { stats?: tf.Tensor; records?: SiteRecord[]; pools?: Map<number, PoolSums> } = {};
    const scaledLoss = (...args: tf.Tensor[]): tf.Scalar => {
      const byName = new Map(trainableNames.map((name, i) => [name, args[i]!]));
      const { input, graph } = this.graphInput(
        batch,
        options.dropoutSeed,
        (name) => byName.get(name) ?? this.tensorByName(name),
      );
      if (probe !== null) input.inputProbe = args[trainableNames.length]!;
      const { lossSum, correct } = crossEntropy(logits(input), batch.targets);
      let objective = tf.mul(lossSum, options.lossScale) as tf.Scalar;
      const adapter = this.adapterConfig;
      let auxValues: tf.Tensor[] = [tf.zeros([5])];
      if (graph !== null) captured.records = graph.records;
      this.keepRecords(graph);
      if (graph !== null && adapter !== null && hasRouter(adapter)) {
        const pools = recordPoolSums(adapter, graph.records, tokenMask);
        captured.pools = pools;
        const aux = auxiliaryLosses(adapter, graph.records, {
          tokenMask,
          batch: batch.batch,
          seqLen: batch.seqLen,
          ...(batch.taskTypes === undefined ? {} : { taskTypes: batch.taskTypes }),
          pools,
          stepBuffer: (key) => this.routing?.stepBuffer(key),
        });
        if (auxScale !== 0) objective = tf.add(objective, tf.mul(aux.total, auxScale));
        auxValues = [tf.stack([aux.balance, aux.zLoss, aux.entropy, aux.lbc, aux.total])];
      }
      captured.stats = tf.keep(tf.concat([tf.stack([lossSum, correct]), ...auxValues]));
      return objective;
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
      const [lossSum, correct, balance, zLoss, entropy, lbc, total] = (await stats.data()) as Float32Array;
      stats.dispose();
      if (captured.pools !== undefined) this.routing?.commitStep(captured.pools);
      if (captured.records !== undefined) {
        this.routing?.accumulate(captured.records, tokenMask);
        this.updateFlyloraBias(captured.records, tokenMask);
      }
      const aux: AuxLosses =
        this.adapterConfig !== null && hasRouter(this.adapterConfig)
          ? { balance: balance!, zLoss: zLoss!, entropy: entropy!, lbc: lbc!, total: total! }
          : { ...ZERO_AUX };
      return {
        lossSum: lossSum!,
        tokens: batch.targets.filter((target) => target >= 0).length,
        correct: correct!,
        aux,
        balanceStep: this.routing?.balanceStep() ?? 0,
      };
    } finally {
      probe?.dispose();
    }
  }

  private keepRecords(graph: AdapterGraph | null): void {
    this.lastRecords = (graph?.records ?? []).map((record) => ({
      layer: record.site.layer,
      projection: record.site.projection,
      experts: record.site.experts,
      probs: record.probValues,
      selection: record.selection,
      gates: record.gateValues,
      broadcast: record.broadcast,
    }));
  }

  /**
   * FlyLoRA's aux-loss-free balancing after a training micro-batch: `c_i` real tokens selected
   * rank `i`; `d_i ← d_i + u·sign(mean c − c_i)` (docs/methods.md "FlyLoRA").
   */
  private updateFlyloraBias(records: readonly SiteRecord[], tokenMask: Float32Array): void {
    const adapter = this.adapterConfig;
    if (adapter?.method !== 'flylora') return;
    for (const record of records) {
      const r = record.site.experts;
      const counts = new Float64Array(r);
      for (let t = 0; t < record.rows; t++) {
        if (tokenMask[t] === 0) continue;
        for (let i = 0; i < r; i++) counts[i] = counts[i]! + tokenMask[t]! * record.selection[t * r + i]!;
      }
      const name = record.site.bias!;
      this.setTensor(name, flyloraBiasUpdate(this.getTensor(name), counts, adapter.biasRate));
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
    this.routing?.resetStep();
    return { gradNorm };
  }

  optimizerState(): OptimizerState {
    const names = this.tensorNames('trainable');
    const sizes = names.map((name) => this.shapeOf(name).reduce((a, b) => a * b, 1));
    const total = sizes.reduce((a, b) => a + b, 0);
    const out: OptimizerState = { steps: 0, m: new Float32Array(total), v: new Float32Array(total) };
    let at = 0;
    names.forEach((name, i) => {
      const state = this.optimizerStates.get(name);
      if (state !== undefined) {
        out.m.set(state.m, at);
        out.v.set(state.v, at);
        out.steps = Math.max(out.steps, state.step);
      }
      at += sizes[i]!;
    });
    return out;
  }

  setOptimizerState(state: OptimizerState): void {
    const names = this.tensorNames('trainable');
    const sizes = names.map((name) => this.shapeOf(name).reduce((a, b) => a * b, 1));
    const total = sizes.reduce((a, b) => a + b, 0);
    if (state.m.length !== total || state.v.length !== total) {
      throw new RangeError(
        `optimizer state has ${total} values per moment, got m ${state.m.length} and v ${state.v.length}`,
      );
    }
    let at = 0;
    names.forEach((name, i) => {
      const size = sizes[i]!;
      this.optimizerStates.set(name, {
        m: state.m.slice(at, at + size),
        v: state.v.slice(at, at + size),
        step: state.steps,
      });
      at += size;
    });
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
      const { input } = this.graphInput(batch, null, (name) => this.tensorByName(name));
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

  /** The graph's input and, with an adapter, the adapter graph that records its sites. */
  private graphInput(
    batch: TokenBatch,
    dropoutSeed: number | null,
    weight: (name: string) => tf.Tensor,
  ): { input: GraphInput; graph: AdapterGraph | null } {
    const graph = this.adapterConfig === null ? null : new AdapterGraph(this.adapterConfig, this.sites, weight);
    const input: GraphInput = {
      config: this.config,
      weight,
      adapter: graph,
      ids: batch.ids,
      batch: batch.batch,
      seqLen: batch.seqLen,
      dropoutSeed,
    };
    return { input, graph };
  }

  /** The token mask as float32 0/1 values `[rows]` (all 1 when absent). */
  private maskValues(mask: Uint8Array | undefined, rows: number): Float32Array {
    if (mask === undefined) return new Float32Array(rows).fill(1);
    if (mask.length !== rows) throw new RangeError(`expected ${rows} token-mask values, got ${mask.length}`);
    for (const m of mask) if (m !== 0 && m !== 1) throw new RangeError(`token-mask values must be 0 or 1, got ${m}`);
    return Float32Array.from(mask);
  }

  private validateTaskTypes(taskTypes: Int32Array, batch: number): void {
    if (taskTypes.length !== batch) throw new RangeError(`expected ${batch} task types, got ${taskTypes.length}`);
    for (const type of taskTypes)
      if (type !== 0 && type !== 1) throw new RangeError(`task types must be 0 or 1, got ${type}`);
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
