/**
 * Exported adapters and models (docs/adapter-format.md in the shared docs, restated in this
 * repository's docs/adapter-format.md): a directory of safetensors and JSON, never pickle,
 * written under a temporary name and renamed into place so a reader never sees half of it.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import type { DType } from './dtype.js';
import { CheckpointError } from './errors.js';
import { SafetensorsFile, serializeSafetensors, type TensorsToWrite } from './safetensors.js';
import { showValue } from './show.js';

/** PEFT's prefix on every tensor key of a LoRA adapter. */
export const PEFT_PREFIX = 'base_model.model.';

export interface ManifestInfo {
  runId: string;
  baseModel: string;
  method: string;
  datasetHash: string | null;
  finalMetrics: Record<string, number>;
}

export interface FileEntry {
  sha256: string;
  bytes: number;
}

/**
 * Writes `files` plus `manifest.json` (sha256 and size of each file, and `info`) as directory
 * `dir`, replacing it atomically: the new content is complete before the old one goes.
 */
export function writeExportDirectory(
  dir: string,
  files: Record<string, Uint8Array | string>,
  info: ManifestInfo,
): void {
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const staging = join(parent, `.${basename(dir)}.partial-${process.pid}-${Date.now()}`);
  mkdirSync(staging);
  try {
    for (const [name, content] of Object.entries(files)) {
      // Names may hold sub-directories ('expert-0/adapter_config.json'), never '..'.
      if (name.split('/').some((part) => part === '' || part === '.' || part === '..'))
        throw new RangeError(`bad export file name '${name}'`);
      mkdirSync(dirname(join(staging, name)), { recursive: true });
      writeFileSync(join(staging, name), typeof content === 'string' ? Buffer.from(content, 'utf8') : content);
    }
    writeFileSync(join(staging, 'manifest.json'), manifestJson(files, info));
    const previous = existsSync(dir) ? `${staging}.old` : null;
    if (previous) renameSync(dir, previous);
    renameSync(staging, dir);
    if (previous) rmSync(previous, { recursive: true, force: true });
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}

/** The manifest.json text of `files` (sha256 and size of each) and `info`. */
export function manifestJson(files: Record<string, Uint8Array | string>, info: ManifestInfo): string {
  const entries: Record<string, FileEntry> = {};
  for (const [name, content] of Object.entries(files)) {
    const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    entries[name] = { sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.byteLength };
  }
  const manifest = {
    format_version: 1,
    created_at: new Date().toISOString(),
    run_id: info.runId,
    base_model: info.baseModel,
    method: info.method,
    dataset_hash: info.datasetHash,
    final_metrics: info.finalMetrics,
    files: entries,
  };
  return JSON.stringify(manifest, null, 2) + '\n';
}

/** Checks every file listed in an export's manifest.json against its size and sha256. */
export function verifyExportDirectory(dir: string): void {
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) throw new CheckpointError('no manifest.json in the export directory', dir);
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { files?: Record<string, FileEntry> };
  for (const [name, entry] of Object.entries(manifest.files ?? {})) {
    const path = join(dir, name);
    if (!existsSync(path)) throw new CheckpointError(`manifest lists ${name}, which is missing`, dir);
    const bytes = readFileSync(path);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    if (bytes.byteLength !== entry.bytes || sha256 !== entry.sha256)
      throw new CheckpointError(`${name} does not match manifest.json (size or sha256 differ)`, dir);
  }
}

export interface LoraHyperparameters {
  rank: number;
  alpha: number;
  dropout: number;
  useRslora: boolean;
  targetModules: string[];
}

export interface PeftLoraExport extends LoraHyperparameters {
  baseModel: string;
  /** Adapter tensors under the engine's names (`model.layers.0.self_attn.q_proj.lora_A.weight`). */
  tensors: ReadonlyMap<string, { shape: number[]; data: Float32Array }>;
  dtype?: Extract<DType, 'F32' | 'BF16' | 'F16'>;
  manifest: Omit<ManifestInfo, 'baseModel' | 'method'>;
  /** Lines for the model card (hyperparameters, metrics, …). */
  card: Record<string, string | number>;
  /** PEFT's `layers_to_transform`: the decoder layers the tensors cover; null or absent: every layer. */
  layersToTransform?: number[] | null;
  /** Model card title (default "LoRA adapter") and extra sections. */
  title?: string;
  sections?: CardSection[];
}

/** A titled block of Markdown lines in a model card. */
export interface CardSection {
  title: string;
  lines: string[];
}

/** The files of a plain LoRA export in HF PEFT's layout (manifest.json aside). */
export function peftLoraFiles(adapter: PeftLoraExport): Record<string, Uint8Array | string> {
  const dtype = adapter.dtype ?? 'F32';
  const tensors: TensorsToWrite = new Map(
    [...adapter.tensors].map(([name, t]) => [PEFT_PREFIX + name, { dtype, shape: t.shape, data: t.data }] as const),
  );
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: adapter.baseModel,
    r: adapter.rank,
    lora_alpha: adapter.alpha,
    lora_dropout: adapter.dropout,
    target_modules: adapter.targetModules,
    bias: 'none',
    use_rslora: adapter.useRslora,
    use_dora: false,
    modules_to_save: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_to_transform: adapter.layersToTransform ?? null,
    revision: null,
  };
  const trainable = [...adapter.tensors.values()].reduce((sum, t) => sum + t.data.length, 0);
  return {
    'adapter_config.json': JSON.stringify(config, null, 2) + '\n',
    'adapter_model.safetensors': serializeSafetensors(tensors, { format: 'pt' }),
    'README.md': modelCard({
      title: adapter.title ?? 'LoRA adapter',
      baseModel: adapter.baseModel,
      method: 'lora',
      trainable,
      card: adapter.card,
      metrics: adapter.manifest.finalMetrics,
      sections: adapter.sections ?? [],
    }),
  };
}

/** A plain LoRA export in HF PEFT's layout (loads in PEFT, vLLM and SGLang). */
export function writePeftLoraExport(dir: string, adapter: PeftLoraExport): void {
  writeExportDirectory(dir, peftLoraFiles(adapter), {
    ...adapter.manifest,
    baseModel: adapter.baseModel,
    method: 'lora',
  });
}

export interface LoadedLoraAdapter extends LoraHyperparameters {
  baseModel: string | null;
  /** PEFT's `layers_to_transform` as a list; null: every layer. */
  layers: number[] | null;
  tensors: Map<string, Float32Array>;
  /** Shape of each tensor, by the same names. */
  shapes: Map<string, number[]>;
}

/** An adapter's adapter_config.json: a JSON object, or a CheckpointError saying what it is instead. */
export function readAdapterConfigJson(dir: string): Record<string, unknown> {
  let config: unknown;
  try {
    config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  } catch (error) {
    throw new CheckpointError(`adapter_config.json is not valid JSON (${(error as Error).message})`, dir);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config))
    throw new CheckpointError(`adapter_config.json is not a JSON object (found ${showValue(config)})`, dir);
  return config as Record<string, unknown>;
}

/** Reads a PEFT LoRA directory (ours or any PEFT-written one) back into engine tensor names. */
export function readPeftLoraAdapter(dir: string): LoadedLoraAdapter {
  const configPath = join(dir, 'adapter_config.json');
  if (!existsSync(configPath)) throw new CheckpointError('no adapter_config.json: not a PEFT adapter directory', dir);
  const config = readAdapterConfigJson(dir);
  const fail = (message: string): never => {
    throw new CheckpointError(`adapter_config.json: ${message}`, dir);
  };
  if (config.peft_type !== 'LORA') fail(`peft_type is ${JSON.stringify(config.peft_type)}, expected "LORA"`);
  if (config.use_dora === true) fail('use_dora is true: DoRA adapters are not supported');
  if (config.fan_in_fan_out === true) fail('fan_in_fan_out is true: only nn.Linear-layout adapters are supported');
  if (config.bias !== undefined && config.bias !== 'none')
    fail(`bias is ${JSON.stringify(config.bias)}, only "none" is supported`);
  const rank = config.r;
  const alpha = config.lora_alpha;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank <= 0)
    fail(`r must be a positive integer, got ${JSON.stringify(rank)}`);
  if (typeof alpha !== 'number' || !(alpha > 0))
    fail(`lora_alpha must be a positive number, got ${JSON.stringify(alpha)}`);
  const targets = config.target_modules;
  if (!Array.isArray(targets) || targets.some((t) => typeof t !== 'string'))
    fail('target_modules must be a list of module names (regex strings are not supported)');
  for (const key of ['rank_pattern', 'alpha_pattern'] as const) {
    const pattern = config[key];
    if (pattern !== undefined && pattern !== null && (typeof pattern !== 'object' || Object.keys(pattern).length > 0))
      fail(`${key} is set: adapters with per-module ranks or alphas are not supported`);
  }
  let layers: number[] | null = null;
  const layersToTransform = config.layers_to_transform;
  if (typeof layersToTransform === 'number') layers = [layersToTransform];
  else if (Array.isArray(layersToTransform)) layers = layersToTransform as number[];
  else if (layersToTransform !== undefined && layersToTransform !== null)
    fail('layers_to_transform must be null, a layer index or a list of them');
  if (layers && layers.some((l) => !Number.isInteger(l) || l < 0))
    fail(`layers_to_transform must hold layer indices, got ${JSON.stringify(layersToTransform)}`);
  const weightsPath = join(dir, 'adapter_model.safetensors');
  if (!existsSync(weightsPath)) {
    if (existsSync(join(dir, 'adapter_model.bin')))
      throw new CheckpointError('adapter_model.bin is a pickle file and is not loaded: convert it to safetensors', dir);
    throw new CheckpointError('no adapter_model.safetensors', dir);
  }
  const file = SafetensorsFile.open(weightsPath);
  try {
    const tensors = new Map<string, Float32Array>();
    const shapes = new Map<string, number[]>();
    for (const key of file.names()) {
      if (!key.startsWith(PEFT_PREFIX))
        throw new CheckpointError(`tensor ${key} lacks the "${PEFT_PREFIX}" prefix`, weightsPath);
      // PEFT writes `lora_A.weight`; some tools keep the adapter name (`lora_A.default.weight`).
      const name = key.slice(PEFT_PREFIX.length).replace(/\.lora_([AB])\.default\.weight$/, '.lora_$1.weight');
      tensors.set(name, file.readFloat32(key));
      shapes.set(name, [...file.info(key).shape]);
    }
    return {
      baseModel: typeof config.base_model_name_or_path === 'string' ? config.base_model_name_or_path : null,
      rank: rank as number,
      alpha: alpha as number,
      dropout: typeof config.lora_dropout === 'number' ? config.lora_dropout : 0,
      useRslora: config.use_rslora === true,
      targetModules: targets as string[],
      layers: layers ? [...new Set(layers)].sort((a, b) => a - b) : null,
      tensors,
      shapes,
    };
  } finally {
    file.close();
  }
}

export interface FullModelExport {
  baseModel: string;
  /** The base model's config.json as read (it is written back unchanged but for torch_dtype). */
  configJson: Record<string, unknown>;
  tensors: ReadonlyMap<string, { shape: number[]; data: Float32Array }>;
  dtype?: Extract<DType, 'F32' | 'BF16' | 'F16'>;
  /** Extra files copied as they are (tokenizer.json, tokenizer_config.json, …). */
  extraFiles: Record<string, Uint8Array>;
  manifest: Omit<ManifestInfo, 'baseModel' | 'method'>;
  card: Record<string, string | number>;
}

const TORCH_DTYPE: Record<string, string> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' };

/** A fully fine-tuned model as a Hugging Face model directory. */
export function writeFullModelExport(dir: string, model: FullModelExport): void {
  const dtype = model.dtype ?? 'F32';
  const tensors: TensorsToWrite = new Map(
    [...model.tensors].map(([name, t]) => [name, { dtype, shape: t.shape, data: t.data }] as const),
  );
  const parameters = [...model.tensors.values()].reduce((sum, t) => sum + t.data.length, 0);
  writeExportDirectory(
    dir,
    {
      ...model.extraFiles,
      'config.json': JSON.stringify({ ...model.configJson, torch_dtype: TORCH_DTYPE[dtype] }, null, 2) + '\n',
      'model.safetensors': serializeSafetensors(tensors, { format: 'pt' }),
      'README.md': modelCard({
        title: 'Fully fine-tuned model',
        baseModel: model.baseModel,
        method: 'full',
        trainable: parameters,
        card: model.card,
        metrics: model.manifest.finalMetrics,
      }),
    },
    { ...model.manifest, baseModel: model.baseModel, method: 'full' },
  );
}

export interface ModelCard {
  title: string;
  baseModel: string;
  method: string;
  trainable: number;
  /** Hyperparameters, one table row each. */
  card: Record<string, string | number>;
  metrics: Record<string, number>;
  /** Extra sections after the hyperparameters (routing, per-layer parameters, fallback notes, …). */
  sections?: CardSection[];
  /** Lines right under the summary (warnings a reader must see first). */
  notice?: string[];
}

/** README.md of an export. */
export function modelCard(model: ModelCard): string {
  const rows = (record: Record<string, string | number>) =>
    Object.entries(record)
      .map(([k, v]) => `| ${k} | ${v} |`)
      .join('\n');
  const lines = [
    `# ${model.title} (Expertune)`,
    '',
    `- Base model: \`${model.baseModel}\``,
    `- Method: ${model.method}`,
    `- Trainable parameters: ${model.trainable.toLocaleString('en-US')}`,
    '',
  ];
  if (model.notice && model.notice.length > 0) lines.push(...model.notice, '');
  lines.push('## Hyperparameters', '', '| name | value |', '|---|---|', rows(model.card), '');
  for (const section of model.sections ?? []) lines.push(`## ${section.title}`, '', ...section.lines, '');
  lines.push('## Final metrics', '', '| metric | value |', '|---|---|', rows(model.metrics), '');
  return lines.join('\n');
}
