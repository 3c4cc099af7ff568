import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { CheckpointError, ModelConfigError } from './errors.js';
import { showValue } from './show.js';

/**
 * A Llama-family decoder configuration, normalised from a Hugging Face `config.json`.
 * Every field the engines read is here, resolved (defaults applied, aliases unified),
 * so no engine looks at the raw JSON.
 */
export type SupportedArchitecture = 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM';

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export interface LlamaConfig {
  architecture: SupportedArchitecture;
  modelType: 'llama' | 'mistral' | 'qwen2';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on q_proj, k_proj, v_proj (Qwen2 always; Llama when `attention_bias`). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama when `attention_bias`). */
  oBias: boolean;
  /** Bias on gate_proj, up_proj, down_proj (Llama when `mlp_bias`). */
  mlpBias: boolean;
  /** Mistral's sliding attention window in tokens, or null for full causal attention. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** The `torch_dtype` the checkpoint declares (informational: tensors carry their own dtype). */
  torchDtype: string | null;
}

// ---------------------------------------------------------------------------------------------
// Parsing config.json

export const SUPPORTED_ARCHITECTURES: readonly SupportedArchitecture[] = [
  'LlamaForCausalLM',
  'MistralForCausalLM',
  'Qwen2ForCausalLM',
];

const MODEL_TYPE_OF: Record<SupportedArchitecture, LlamaConfig['modelType']> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
};

/** Hugging Face's defaults for the optional fields (LlamaConfig). */
export const CONFIG_DEFAULTS = {
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  maxPositionEmbeddings: 2048,
  tieWordEmbeddings: false,
} as const;

type Json = Record<string, unknown>;

export const MAX_VOCAB_SIZE = 2 ** 31 - 1;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function show(value: unknown): string {
  return showValue(value, 60);
}

/** Field accessors that fail with the file and field named. */
class FieldReader {
  constructor(
    private readonly raw: Json,
    readonly source: string,
  ) {}

  fail(field: string | undefined, problem: string): never {
    const where = field === undefined ? this.source : `${this.source}: "${field}"`;
    throw new ModelConfigError(`${where}: ${problem}`, this.source, field);
  }

  /** The field's value, with null treated as absent (HF writes null for "unset"). */
  get(field: string, from: Json = this.raw): unknown {
    const value = from[field];
    return value === null ? undefined : value;
  }

  has(field: string): boolean {
    return this.get(field) !== undefined;
  }

  positiveInteger(field: string, fallback?: number, from: Json = this.raw, label = field): number {
    const value = this.get(field, from);
    if (value === undefined) {
      if (fallback !== undefined) return fallback;
      this.fail(label, 'required field is missing');
    }
    // Safe integers only: 1e21 is an integer to JavaScript, and a size like it hangs whatever loops over it.
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
      this.fail(label, `= ${show(value)}: expected a positive integer`);
    }
    return value;
  }

  positiveNumber(field: string, fallback?: number, from: Json = this.raw, label = field): number {
    const value = this.get(field, from);
    if (value === undefined) {
      if (fallback !== undefined) return fallback;
      this.fail(label, 'required field is missing');
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      this.fail(label, `= ${show(value)}: expected a positive number`);
    }
    return value;
  }

  boolean(field: string, fallback: boolean): boolean {
    const value = this.get(field);
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') this.fail(field, `= ${show(value)}: expected true or false`);
    return value;
  }

  tokenId(field: string, value: unknown): number {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
      this.fail(field, `= ${show(value)}: expected a non-negative integer token id`);
    }
    return value;
  }
}

/**
 * Normalises a Hugging Face `config.json` of a supported Llama-family model, refusing every
 * setting that would change the math the engines implement (docs/engine.md).
 */
export function parseModelConfig(json: unknown, source = 'config.json'): LlamaConfig {
  if (!isObject(json)) throw new ModelConfigError(`${source}: not a JSON object`, source);
  const read: FieldReader = new FieldReader(json, source);

  const { architecture, modelType } = readArchitecture(read);
  refuseUnsupportedFeatures(read, modelType);

  const vocabSize = read.positiveInteger('vocab_size');
  // Token ids travel in Int32Arrays (training sequences, the native engine).
  if (vocabSize > MAX_VOCAB_SIZE) read.fail('vocab_size', `= ${vocabSize}: token ids must fit in 32 bits`);
  const hiddenSize = read.positiveInteger('hidden_size');
  const intermediateSize = read.positiveInteger('intermediate_size');
  const numLayers = read.positiveInteger('num_hidden_layers');
  const numHeads = read.positiveInteger('num_attention_heads');
  const numKvHeads = read.positiveInteger('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    read.fail(
      'num_key_value_heads',
      `= ${numKvHeads} does not divide num_attention_heads = ${numHeads} (grouped-query attention needs it)`,
    );
  }
  let headDim: number;
  if (read.has('head_dim')) {
    headDim = read.positiveInteger('head_dim');
  } else {
    if (hiddenSize % numHeads !== 0) {
      read.fail(
        'hidden_size',
        `= ${hiddenSize} is not a multiple of num_attention_heads = ${numHeads}, and no head_dim is given`,
      );
    }
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) {
    read.fail('head_dim', `= ${headDim} is odd: rotary embeddings rotate pairs of dimensions`);
  }

  const hiddenAct = read.get('hidden_act');
  if (hiddenAct !== undefined && hiddenAct !== 'silu') {
    read.fail('hidden_act', `= ${show(hiddenAct)} is not supported: the engines implement "silu" only`);
  }

  // Newer transformers versions move rope_theta and the scaling into `rope_parameters`.
  const rawRopeParameters = read.get('rope_parameters');
  let ropeParameters: Json | undefined;
  if (rawRopeParameters !== undefined) {
    if (!isObject(rawRopeParameters)) read.fail('rope_parameters', `= ${show(rawRopeParameters)}: expected an object`);
    ropeParameters = rawRopeParameters;
  }
  const ropeTheta = read.has('rope_theta')
    ? read.positiveNumber('rope_theta')
    : ropeParameters !== undefined
      ? read.positiveNumber('rope_theta', CONFIG_DEFAULTS.ropeTheta, ropeParameters, 'rope_parameters.rope_theta')
      : CONFIG_DEFAULTS.ropeTheta;
  const ropeScaling = read.has('rope_scaling')
    ? readRopeScaling(read, read.get('rope_scaling'), 'rope_scaling')
    : ropeParameters !== undefined
      ? readRopeScaling(read, ropeParameters, 'rope_parameters')
      : null;

  let qkvBias = false;
  let oBias = false;
  let mlpBias = false;
  if (modelType === 'llama') {
    qkvBias = oBias = read.boolean('attention_bias', false);
    mlpBias = read.boolean('mlp_bias', false);
  } else if (modelType === 'qwen2') {
    qkvBias = true; // Qwen2's q/k/v projections always carry a bias, its o_proj never does
  }

  let slidingWindow: number | null = null;
  if (modelType === 'mistral' && read.has('sliding_window')) {
    slidingWindow = read.positiveInteger('sliding_window');
  }

  return {
    architecture,
    modelType,
    vocabSize,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: read.positiveNumber('rms_norm_eps', CONFIG_DEFAULTS.rmsNormEps),
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: read.positiveInteger('max_position_embeddings', CONFIG_DEFAULTS.maxPositionEmbeddings),
    tieWordEmbeddings: read.boolean('tie_word_embeddings', CONFIG_DEFAULTS.tieWordEmbeddings),
    qkvBias,
    oBias,
    mlpBias,
    slidingWindow,
    ...readTokenIds(read),
    torchDtype: readTorchDtype(read),
  };
}

function readArchitecture(read: FieldReader): {
  architecture: SupportedArchitecture;
  modelType: LlamaConfig['modelType'];
} {
  const supported = SUPPORTED_ARCHITECTURES.join(', ');
  const architectures = read.get('architectures');
  const modelType = read.get('model_type');
  let architecture: string;
  if (architectures === undefined) {
    // Some hand-written configs omit `architectures`; model_type then decides.
    const inferred = SUPPORTED_ARCHITECTURES.find((arch) => MODEL_TYPE_OF[arch] === modelType);
    if (inferred === undefined) {
      read.fail(
        'architectures',
        `is missing and model_type ${show(modelType)} is not one of llama, mistral, qwen2 (supported: ${supported})`,
      );
    }
    architecture = inferred;
  } else {
    if (!Array.isArray(architectures) || typeof architectures[0] !== 'string') {
      read.fail('architectures', `= ${show(architectures)}: expected a list of architecture names`);
    }
    architecture = architectures[0];
  }
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture)) {
    read.fail('architectures', `architecture ${architecture} is not supported (supported: ${supported})`);
  }
  const arch = architecture as SupportedArchitecture;
  const expectedType = MODEL_TYPE_OF[arch];
  if (modelType !== undefined && modelType !== expectedType) {
    read.fail('model_type', `= ${show(modelType)} does not match architecture ${arch} (expected "${expectedType}")`);
  }
  return { architecture: arch, modelType: expectedType };
}

/** Settings that would make the engines compute something other than this model. */
function refuseUnsupportedFeatures(read: FieldReader, modelType: LlamaConfig['modelType']): void {
  if (read.has('quantization_config')) {
    read.fail('quantization_config', 'quantized checkpoints are not supported; use the unquantized weights');
  }
  for (const field of ['attn_logit_softcapping', 'final_logit_softcapping']) {
    if (read.has(field)) read.fail(field, `= ${show(read.get(field))}: logit soft-capping is not supported`);
  }
  const partialRotary = read.get('partial_rotary_factor');
  if (partialRotary !== undefined && partialRotary !== 1) {
    read.fail('partial_rotary_factor', `= ${show(partialRotary)}: only full rotary embeddings (1) are supported`);
  }
  for (const field of ['num_experts', 'num_local_experts', 'num_experts_per_tok']) {
    const value = read.get(field);
    if (value !== undefined && value !== 0) {
      read.fail(field, `= ${show(value)}: mixture-of-experts models are not supported`);
    }
  }
  const attentionDropout = read.get('attention_dropout');
  if (attentionDropout !== undefined && attentionDropout !== 0) {
    read.fail('attention_dropout', `= ${show(attentionDropout)}: attention dropout is not implemented (must be 0)`);
  }
  if (modelType === 'qwen2' && read.boolean('use_sliding_window', false)) {
    read.fail('use_sliding_window', "= true: Qwen2's per-layer sliding-window attention is not supported");
  }
  const layerTypes = read.get('layer_types');
  if (layerTypes !== undefined) {
    if (!Array.isArray(layerTypes)) read.fail('layer_types', `= ${show(layerTypes)}: expected a list`);
    const other = layerTypes.find((type) => type !== 'full_attention');
    if (other !== undefined) {
      read.fail('layer_types', `contains ${show(other)}: only "full_attention" layers are supported`);
    }
  }
}

function readRopeScaling(read: FieldReader, value: unknown, field: string): RopeScaling | null {
  if (value === undefined) return null;
  if (!isObject(value)) read.fail(field, `= ${show(value)}: expected an object or null`);
  // `type` is the key older configs used before `rope_type`.
  const ropeType = value['rope_type'] ?? value['type'];
  switch (ropeType) {
    case undefined:
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: read.positiveNumber('factor', undefined, value, `${field}.factor`) };
    case 'llama3': {
      const number = (key: string): number => read.positiveNumber(key, undefined, value, `${field}.${key}`);
      const scaling = {
        type: 'llama3' as const,
        factor: number('factor'),
        lowFreqFactor: number('low_freq_factor'),
        highFreqFactor: number('high_freq_factor'),
        originalMaxPositionEmbeddings: read.positiveInteger(
          'original_max_position_embeddings',
          undefined,
          value,
          `${field}.original_max_position_embeddings`,
        ),
      };
      if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
        read.fail(`${field}.high_freq_factor`, `must be larger than low_freq_factor (${scaling.lowFreqFactor})`);
      }
      return scaling;
    }
    default:
      return read.fail(
        field,
        `rope type ${show(ropeType)} is not supported (supported: "linear", "llama3", "default")`,
      );
  }
}

function readTokenIds(read: FieldReader): { bosTokenId: number | null; eosTokenIds: number[] } {
  const bos = read.get('bos_token_id');
  const eos = read.get('eos_token_id');
  let eosTokenIds: number[];
  if (eos === undefined) eosTokenIds = [];
  else if (Array.isArray(eos)) eosTokenIds = eos.map((id) => read.tokenId('eos_token_id', id));
  else eosTokenIds = [read.tokenId('eos_token_id', eos)];
  return { bosTokenId: bos === undefined ? null : read.tokenId('bos_token_id', bos), eosTokenIds };
}

function readTorchDtype(read: FieldReader): string | null {
  // transformers ≥ 4.56 writes `dtype`; older versions `torch_dtype`.
  for (const field of ['torch_dtype', 'dtype']) {
    const value = read.get(field);
    if (value === undefined) continue;
    if (typeof value !== 'string') read.fail(field, `= ${show(value)}: expected a string such as "bfloat16"`);
    return value;
  }
  return null;
}

/** Reads and parses `<dir>/config.json`. */
export function loadModelConfig(dir: string): LlamaConfig {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new ModelConfigError(`no config.json in ${dir}`, path);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new ModelConfigError(`${path}: cannot read as JSON (${(error as Error).message})`, path);
  }
  return parseModelConfig(json, path);
}

// ---------------------------------------------------------------------------------------------
// Checking weights against the config

/**
 * Every tensor the model needs, name → shape, in model order (docs/engine.md): biases only when
 * the config has them, lm_head only when the embeddings are not tied.
 */
export function expectedTensorShapes(config: LlamaConfig): Map<string, number[]> {
  const { vocabSize: V, hiddenSize: d, intermediateSize: F, numHeads: H, numKvHeads: KV, headDim: hd } = config;
  const shapes = new Map<string, number[]>();
  shapes.set('model.embed_tokens.weight', [V, d]);
  const linear = (prefix: string, out: number, inFeatures: number, bias: boolean): void => {
    shapes.set(`${prefix}.weight`, [out, inFeatures]);
    if (bias) shapes.set(`${prefix}.bias`, [out]);
  };
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `model.layers.${i}`;
    shapes.set(`${layer}.input_layernorm.weight`, [d]);
    linear(`${layer}.self_attn.q_proj`, H * hd, d, config.qkvBias);
    linear(`${layer}.self_attn.k_proj`, KV * hd, d, config.qkvBias);
    linear(`${layer}.self_attn.v_proj`, KV * hd, d, config.qkvBias);
    linear(`${layer}.self_attn.o_proj`, d, H * hd, config.oBias);
    shapes.set(`${layer}.post_attention_layernorm.weight`, [d]);
    linear(`${layer}.mlp.gate_proj`, F, d, config.mlpBias);
    linear(`${layer}.mlp.up_proj`, F, d, config.mlpBias);
    linear(`${layer}.mlp.down_proj`, d, F, config.mlpBias);
  }
  shapes.set('model.norm.weight', [d]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [V, d]);
  return shapes;
}

/** What `validateCheckpointAgainstConfig` reads: `Checkpoint` and `SafetensorsFile` both fit. */
export interface TensorDirectory {
  names(): string[];
  info(name: string): { dtype: string; shape: readonly number[] };
}

/** Buffers some exports include that carry nothing the engines need (recomputed from the config). */
const HARMLESS_EXTRA = /(^|\.)rotary_emb\.inv_freq$/;
const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);
const LIST_LIMIT = 10;

function listSome(items: string[]): string {
  const shown = items.slice(0, LIST_LIMIT).join(', ');
  return items.length > LIST_LIMIT ? `${shown} and ${items.length - LIST_LIMIT} more` : shown;
}

/**
 * Checks that the weights are exactly the model the config describes. Throws a CheckpointError
 * listing missing tensors, unexpected tensors, shape mismatches and non-float dtypes. Returns
 * the tensors present but ignored (rotary `inv_freq` buffers; `lm_head.weight` of a tied model).
 */
export function validateCheckpointAgainstConfig(
  config: LlamaConfig,
  checkpoint: TensorDirectory,
  source = 'checkpoint',
): { ignored: string[] } {
  const present = new Set(checkpoint.names());
  // Counted before listing: a config declaring millions of layers must not be enumerated.
  const perLayer = 9 + (config.qkvBias ? 3 : 0) + (config.oBias ? 1 : 0) + (config.mlpBias ? 3 : 0);
  const needed = 2 + config.numLayers * perLayer + (config.tieWordEmbeddings ? 0 : 1);
  if (needed > present.size + 1_000) {
    throw new CheckpointError(
      `${source} does not match ${config.architecture} config: the config's ${config.numLayers} layers need ` +
        `${needed} tensors, the checkpoint holds ${present.size}`,
      source,
    );
  }
  const expected = expectedTensorShapes(config);
  const missing = [...expected.keys()].filter((name) => !present.has(name));
  const unexpected: string[] = [];
  const ignored: string[] = [];
  const wrongShapes: string[] = [];
  const wrongDtypes: string[] = [];
  const sameShape = (a: readonly number[], b: readonly number[]): boolean =>
    a.length === b.length && a.every((size, i) => size === b[i]);

  for (const name of present) {
    const info = checkpoint.info(name);
    const shape = expected.get(name);
    if (shape === undefined) {
      // A tied model's lm_head is unused (the embedding serves), so an extra copy is harmless.
      const tiedHead = name === 'lm_head.weight' && config.tieWordEmbeddings;
      if (tiedHead && !sameShape(info.shape, [config.vocabSize, config.hiddenSize])) {
        wrongShapes.push(
          `${name}: found [${info.shape.join(', ')}], expected [${config.vocabSize}, ${config.hiddenSize}]`,
        );
      } else if (tiedHead || HARMLESS_EXTRA.test(name)) {
        ignored.push(name);
      } else {
        unexpected.push(name);
      }
      continue;
    }
    if (!sameShape(info.shape, shape)) {
      wrongShapes.push(`${name}: found [${info.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    if (!FLOAT_DTYPES.has(info.dtype)) wrongDtypes.push(`${name}: ${info.dtype}`);
  }

  const problems: string[] = [];
  if (missing.length > 0) problems.push(`${missing.length} missing tensor(s): ${listSome(missing)}`);
  if (unexpected.length > 0) {
    problems.push(`${unexpected.length} unexpected tensor(s) the config does not describe: ${listSome(unexpected)}`);
  }
  if (wrongShapes.length > 0) problems.push(`${wrongShapes.length} shape mismatch(es): ${listSome(wrongShapes)}`);
  if (wrongDtypes.length > 0) {
    problems.push(
      `${wrongDtypes.length} tensor(s) not F32/F16/BF16/F64 (quantized weights are not supported): ${listSome(wrongDtypes)}`,
    );
  }
  if (problems.length > 0) {
    throw new CheckpointError(
      `${source} does not match ${config.architecture} config ` +
        `(${config.numLayers} layers, hidden ${config.hiddenSize}):\n  ${problems.join('\n  ')}`,
      source,
    );
  }
  return { ignored };
}
