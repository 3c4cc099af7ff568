/**
 * What a finished (or stopped) run leaves in its output directory, and its export:
 *   run.json                      the resolved config, the engine adapter config, the base model,
 *                                 metrics, dataset hash
 *   metrics.jsonl                 one line per optimizer step (loss, accuracy, lr, grad norm, aux losses)
 *   routing.jsonl                 mixtures: one line per step, the routing statistics of every site
 *   final/trainable.safetensors   every adapter tensor (frozen ones too: FlyLoRA's A and bias) under its
 *                                 engine name, or every trainable weight after full fine-tuning
 *   export/                       the exported adapter (PEFT LoRA, or the expertune-mole layout for a
 *                                 mixture) or model (full fine-tuning)
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { adapterSection, type TrainConfig } from '@expertune/contracts';
import type { AdapterConfig } from '@expertune/engine';
import {
  SafetensorsFile,
  writeExpertSplitExport,
  writeFullModelExport,
  writeMixtureExport,
  writePeftLoraExport,
  writeSafetensors,
  type AdapterSpec,
  type MixtureSpec,
} from '@expertune/formats';

import { exportSpecOf } from './adapter-config.js';

export interface RunRecord {
  run_id: string;
  base_model: string;
  method: TrainConfig['method'];
  config: TrainConfig;
  /** The engine adapter the run trained (per-layer values resolved); null after full fine-tuning. */
  adapter?: AdapterConfig | null;
  /** Decoder layers of the base model. */
  num_layers?: number;
  dataset_hash: string;
  steps_completed: number;
  total_steps: number;
  final_metrics: Record<string, number>;
  /** Training throughput of this process (a resumed run: since the resume); evaluations excluded. */
  throughput?: { trainable_parameters: number; tokens: number; seconds: number; tokens_per_second: number };
  finished_at: string;
}

export type SavedTensors = ReadonlyMap<string, { shape: number[]; data: Float32Array }>;

export function saveRunState(outputDir: string, record: RunRecord, tensors: SavedTensors): void {
  const finalDir = join(outputDir, 'final');
  mkdirSync(finalDir, { recursive: true });
  writeSafetensors(
    join(finalDir, 'trainable.safetensors'),
    new Map([...tensors].map(([name, t]) => [name, { dtype: 'F32', shape: t.shape, data: t.data }] as const)),
  );
  const temporary = join(outputDir, `.run.json.${process.pid}`);
  writeFileSync(temporary, JSON.stringify(record, null, 2) + '\n');
  renameSync(temporary, join(outputDir, 'run.json'));
}

export function readRunRecord(runDir: string): RunRecord {
  const path = join(runDir, 'run.json');
  if (!existsSync(path))
    throw new Error(`${runDir} is not a run directory (no run.json): pass the output_dir of a training run`);
  return JSON.parse(readFileSync(path, 'utf8')) as RunRecord;
}

/** The run's saved tensors (final/trainable.safetensors) with their shapes. */
export function readRunTensors(runDir: string): Map<string, { shape: number[]; data: Float32Array }> {
  const file = SafetensorsFile.open(join(runDir, 'final', 'trainable.safetensors'));
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  try {
    for (const name of file.names())
      tensors.set(name, { shape: [...file.info(name).shape], data: file.readFloat32(name) });
  } finally {
    file.close();
  }
  return tensors;
}

/**
 * The adapter a run trained. Runs from before mixtures recorded no `adapter`: their LoRA is
 * rebuilt from the config's `lora` section.
 */
export function runAdapter(record: RunRecord): AdapterConfig | null {
  if (record.adapter !== undefined) return record.adapter;
  if (record.method !== 'lora') return null;
  const lora = record.config.lora;
  return {
    method: 'lora',
    rank: lora.rank,
    alpha: lora.alpha,
    dropout: lora.dropout,
    useRslora: lora.use_rslora,
    targetModules: lora.target_modules,
    seed: record.config.seed,
  };
}

/** The run's adapter as an export records it, and the layers it spans. */
export function runExportSpec(record: RunRecord, tensors: SavedTensors): AdapterSpec | null {
  const adapter = runAdapter(record);
  if (!adapter) return null;
  const layers =
    record.num_layers ??
    1 + Math.max(...[...tensors.keys()].map((name) => Number(/^model\.layers\.(\d+)\./.exec(name)?.[1] ?? 0)));
  return exportSpecOf(adapter, layers);
}

const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'generation_config.json',
];

/** Model-card rows: training settings, then the method section's settings. */
export function runCard(record: RunRecord): Record<string, string | number> {
  const card: Record<string, string | number> = {
    steps: record.steps_completed,
    learning_rate: record.config.optimizer.lr,
    schedule: `${record.config.schedule.kind}, warmup ${record.config.schedule.warmup_steps}`,
    micro_batch_size: record.config.training.micro_batch_size,
    grad_accumulation: record.config.training.grad_accumulation,
    max_seq_len: record.config.data.max_seq_len,
    seed: record.config.seed,
  };
  const selected = adapterSection(record.config);
  if (selected) {
    const flatten = (prefix: string, value: unknown): void => {
      if (Array.isArray(value)) card[prefix] = value.join(', ');
      else if (typeof value === 'object' && value !== null)
        for (const [key, inner] of Object.entries(value)) flatten(prefix ? `${prefix}.${key}` : key, inner);
      else card[prefix] = typeof value === 'number' ? value : String(value);
    };
    flatten('', selected.section);
    const adapter = runAdapter(record);
    if (adapter && 'numExperts' in adapter) card.num_experts = adapter.numExperts.join(', ');
    if (adapter?.method === 'mola') card.top_k = adapter.topK.join(', ');
  }
  return card;
}

export type ExportFallback = 'split';

/**
 * `exportRun` into a staging directory beside `outDir`, renamed over it when whole: a process
 * killed while exporting leaves the previous export or none, never a mix of both.
 */
export function exportRunAtomically(runDir: string, outDir: string, dtype: 'F32' | 'BF16' | 'F16' = 'F32'): void {
  const staging = `${outDir}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  exportRun(runDir, staging, dtype);
  rmSync(outDir, { recursive: true, force: true });
  renameSync(staging, outDir);
}

/**
 * Writes the run's export: PEFT LoRA for `lora`, the expertune-mole layout for a mixture, a
 * Hugging Face model directory for `full`; with `fallback: 'split'`, each expert of a mixture as
 * its own PEFT LoRA (the collapse fallback needs the engine: `exportCollapsedRun`).
 */
export function exportRun(
  runDir: string,
  outDir: string,
  dtype: 'F32' | 'BF16' | 'F16' = 'F32',
  options: { fallback?: ExportFallback } = {},
): void {
  const record = readRunRecord(runDir);
  const tensors = readRunTensors(runDir);
  const manifest = { runId: record.run_id, datasetHash: record.dataset_hash, finalMetrics: record.final_metrics };
  const card = runCard(record);
  const spec = runExportSpec(record, tensors);
  if (options.fallback === 'split') {
    if (!spec || spec.method === 'lora')
      throw new Error(`--fallback split needs a mixture run; this run's method is ${record.method}`);
    writeExpertSplitExport(resolve(outDir), {
      baseModel: record.base_model,
      adapter: spec,
      tensors,
      dtype,
      manifest,
      card,
      dropout: runAdapter(record)?.dropout ?? 0,
    });
    return;
  }
  if (spec?.method === 'lora') {
    writePeftLoraExport(resolve(outDir), {
      baseModel: record.base_model,
      rank: spec.rank,
      alpha: spec.alpha,
      dropout: spec.dropout,
      useRslora: spec.useRslora,
      targetModules: spec.targetModules,
      tensors,
      dtype,
      manifest,
      card,
    });
    return;
  }
  if (spec) {
    writeMixtureExport(resolve(outDir), {
      baseModel: record.base_model,
      adapter: spec as MixtureSpec,
      tensors,
      dtype,
      manifest,
      card,
    });
    return;
  }
  const configJson = JSON.parse(readFileSync(join(record.base_model, 'config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const extraFiles: Record<string, Uint8Array> = {};
  for (const name of TOKENIZER_FILES) {
    const path = join(record.base_model, name);
    if (existsSync(path)) extraFiles[name] = readFileSync(path);
  }
  writeFullModelExport(resolve(outDir), {
    baseModel: record.base_model,
    configJson,
    tensors,
    dtype,
    extraFiles,
    manifest,
    card,
  });
}
