/**
 * Resource guards run before a job starts (the API at job creation, the worker again before it
 * forks the trainer): a job that cannot fit in memory or on disk is refused with a clear error
 * instead of dying later (an OOM kill mid-step, ENOSPC mid-checkpoint). The estimate is a model
 * of the native engine's F32 buffers, deliberately on the high side; docs/security.md lists it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statfsSync } from 'node:fs';
import { freemem } from 'node:os';
import { dirname, resolve } from 'node:path';

import { adapterSection, type TrainConfig } from '@expertune/contracts';

/** The HF config.json fields the estimate reads (a registered model's stored config). */
export interface ModelDims {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  vocab_size: number;
  num_attention_heads: number;
  num_key_value_heads: number;
}

export interface MemoryEstimate {
  weights: number;
  adapter: number;
  /** Gradients and AdamW's two moments of the trainable values. */
  optimizer: number;
  activations: number;
  total: number;
  trainableParameters: number;
  /** What one checkpoint takes on disk (trainable values and both moments). */
  checkpointBytes: number;
}

export interface ResourceProblem {
  /** 422: the request is valid but asks for a job the workers cannot hold. */
  status: 422;
  code: 'insufficient_memory' | 'insufficient_gpu_memory' | 'insufficient_disk';
  message: string;
  param: string | null;
}

const F32 = 4;
// The process itself: the Node runtime, the tokenizer, the engine's scratch buffers.
const RUNTIME_BYTES = 256 * 2 ** 20;

/** The dimensions the estimate needs, or null when the stored config lacks one (never so for a model libs/formats accepted). */
function modelDims(config: Record<string, unknown>): ModelDims | null {
  const number = (key: string) => {
    const value = config[key];
    return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : null;
  };
  const [hidden, intermediate, layers, vocab, heads] = [
    'hidden_size',
    'intermediate_size',
    'num_hidden_layers',
    'vocab_size',
    'num_attention_heads',
  ].map(number);
  if (!hidden || !intermediate || !layers || !vocab || !heads) return null;
  return {
    hidden_size: hidden,
    intermediate_size: intermediate,
    num_hidden_layers: layers,
    vocab_size: vocab,
    num_attention_heads: heads,
    num_key_value_heads: number('num_key_value_heads') ?? heads,
  };
}

/** Input and output width of each projection a method can adapt. */
function projectionShapes(d: ModelDims): Record<string, [number, number]> {
  const kvWidth = (d.hidden_size / d.num_attention_heads) * d.num_key_value_heads;
  const h = d.hidden_size;
  const i = d.intermediate_size;
  return {
    q_proj: [h, h],
    k_proj: [h, kvWidth],
    v_proj: [h, kvWidth],
    o_proj: [h, h],
    gate_proj: [h, i],
    up_proj: [h, i],
    down_proj: [i, h],
  };
}

/** Experts per adapted projection: the largest layer's count (MoLA's list or preset counts as its widest). */
function expertsOf(section: Record<string, unknown>): number {
  const spec = section.num_experts;
  if (typeof spec === 'number') return spec;
  if (Array.isArray(spec)) return Math.max(1, ...spec.filter((n): n is number => typeof n === 'number'));
  return spec === undefined ? 1 : 8;
}

/**
 * Memory of training `config` on a model of `modelConfig` (its HF config.json) with `parameterCount`
 * weights: the frozen weights, the adapter, gradients and AdamW moments of what trains, and the
 * activations a micro-batch of max_seq_len tokens keeps for the backward pass.
 */
export function estimateTrainingMemory(
  config: TrainConfig,
  modelConfig: Record<string, unknown>,
  parameterCount: number,
): MemoryEstimate {
  const d = modelDims(modelConfig);
  if (!d) throw new Error("the model's config.json lacks the sizes the memory estimate needs");
  const adapter = adapterSection(config);
  let trainable = parameterCount;
  if (adapter) {
    const section = adapter.section as unknown as { rank: number; target_modules: string[] } & Record<string, unknown>;
    const shapes = projectionShapes(d);
    const perLayer = section.target_modules.reduce((sum, name) => {
      const [inputs, outputs] = shapes[name] ?? [d.hidden_size, d.hidden_size];
      return sum + section.rank * (inputs + outputs);
    }, 0);
    trainable = d.num_hidden_layers * perLayer * expertsOf(section);
  }
  const tokens = config.training.micro_batch_size * config.data.max_seq_len;
  // Per token and layer the backward keeps the normed inputs, q/k/v/o, the attention output and the
  // MLP's gate, up and product (≈ 12·h + 4·I values); the logits and their gradient add 2·V.
  const perToken = d.num_hidden_layers * (12 * d.hidden_size + 4 * d.intermediate_size) + 2 * d.vocab_size;
  const estimate = {
    weights: parameterCount * F32,
    adapter: adapter ? trainable * F32 : 0,
    optimizer: 3 * trainable * F32,
    activations: tokens * perToken * F32,
    trainableParameters: trainable,
    checkpointBytes: 3 * trainable * F32,
  };
  return {
    ...estimate,
    total: estimate.weights + estimate.adapter + estimate.optimizer + estimate.activations + RUNTIME_BYTES,
  };
}

function bytesSetting(env: NodeJS.ProcessEnv, name: string): number | null {
  const raw = env[name];
  if (raw === undefined || raw === '') return null;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name}=${JSON.stringify(raw)}: expected a byte count`);
  return value;
}

/** Free disk space under `dir`: EXPERTUNE_DISK_FREE_BYTES when set (tests simulate a full disk), else statfs. */
export function freeDiskBytes(dir: string, env: NodeJS.ProcessEnv = process.env): number {
  const override = bytesSetting(env, 'EXPERTUNE_DISK_FREE_BYTES');
  if (override !== null) return override;
  // The data directory may not exist yet: its nearest existing parent is on the same disk.
  let existing = resolve(dir);
  while (!existsSync(existing) && dirname(existing) !== existing) existing = dirname(existing);
  const stats = statfsSync(existing);
  return stats.bavail * stats.bsize;
}

/**
 * Free memory of the GPU `cuda:<n>`: EXPERTUNE_GPU_MEMORY_BYTES when set; on the worker (`host`)
 * otherwise nvidia-smi's memory.free (the engine has no query of its own), null when it cannot say.
 */
export function freeGpuBytes(
  device: string,
  memory: 'host' | 'configured',
  env: NodeJS.ProcessEnv = process.env,
): number | null {
  const override = bytesSetting(env, 'EXPERTUNE_GPU_MEMORY_BYTES');
  if (override !== null || memory === 'configured') return override;
  const index = /^cuda(?::(\d+))?$/.exec(device)?.[1] ?? '0';
  try {
    const mib = execFileSync('nvidia-smi', ['--query-gpu=memory.free', '--format=csv,noheader,nounits', '-i', index], {
      encoding: 'utf8',
      timeout: 5_000,
      stdio: ['ignore', 'pipe', 'ignore'],
      env,
    });
    const value = Number(mib.trim());
    return Number.isFinite(value) && value >= 0 ? value * 2 ** 20 : null;
  } catch {
    return null;
  }
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

export interface ResourceCheck {
  /** Where checkpoints and the export are written; null: not on this machine's disk (the API with S3 storage). */
  dataDir: string | null;
  /** `host`: this machine's free memory counts (the worker); `configured`: only EXPERTUNE_MEMORY_LIMIT_BYTES (the API, which does not train). */
  memory: 'host' | 'configured';
  /** The engine's device (`cpu`, `cuda:0`): on a GPU the weights and activations live in its memory. */
  device: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * The first resource `config` lacks, or null. Memory: the estimate against EXPERTUNE_MEMORY_LIMIT_BYTES
 * and (on the worker) os.freemem(); GPU memory: against `freeGpuBytes`; disk:
 * the checkpoints kept (keep_checkpoints + 1 while a new one is written) and the export against
 * the free space of the data directory.
 */
export function checkJobResources(
  config: TrainConfig,
  modelConfig: Record<string, unknown>,
  parameterCount: number,
  check: ResourceCheck,
): ResourceProblem | null {
  // Nothing to estimate from; loading such a model fails on its own, with its own message.
  if (!modelDims(modelConfig)) return null;
  const env = check.env ?? process.env;
  const estimate = estimateTrainingMemory(config, modelConfig, parameterCount);
  const what =
    `${gib(estimate.total)} (weights ${gib(estimate.weights)}, adapter ${gib(estimate.adapter)}, ` +
    `optimizer ${gib(estimate.optimizer)}, activations ${gib(estimate.activations)} for micro_batch_size ` +
    `${config.training.micro_batch_size} × max_seq_len ${config.data.max_seq_len})`;
  const onGpu = check.device.startsWith('cuda');
  const gpuLimit = onGpu ? freeGpuBytes(check.device, check.memory, env) : null;
  if (gpuLimit !== null && estimate.total > gpuLimit)
    return {
      status: 422,
      code: 'insufficient_gpu_memory',
      message: `training needs about ${what} of GPU memory; ${gib(gpuLimit)} is free on ${check.device}`,
      param: 'hyperparameters.training.micro_batch_size',
    };
  const limits = [bytesSetting(env, 'EXPERTUNE_MEMORY_LIMIT_BYTES'), check.memory === 'host' ? freemem() : null];
  const available = Math.min(...limits.filter((n): n is number => n !== null));
  // On a GPU the host holds the weights while they are uploaded, not the activations.
  const hostNeed = onGpu ? estimate.weights + RUNTIME_BYTES : estimate.total;
  if (Number.isFinite(available) && hostNeed > available)
    return {
      status: 422,
      code: 'insufficient_memory',
      message: `training needs about ${onGpu ? gib(hostNeed) : what} of memory; ${gib(available)} is free`,
      param: 'hyperparameters.training.micro_batch_size',
    };
  if (check.dataDir === null) return null;
  const keep = config.training.keep_checkpoints;
  // keep_checkpoints 0 keeps every one, a count that depends on the data: one is the least it needs.
  const kept = keep > 0 ? keep + 1 : 1;
  const diskNeed = estimate.checkpointBytes * kept + estimate.adapter + (adapterSection(config) ? 0 : estimate.weights);
  const free = freeDiskBytes(check.dataDir, env);
  if (diskNeed > free)
    return {
      status: 422,
      code: 'insufficient_disk',
      message: `checkpoints and the export need about ${gib(diskNeed)} under ${check.dataDir}; ${gib(free)} is free`,
      param: 'hyperparameters.training.keep_checkpoints',
    };
  return null;
}
