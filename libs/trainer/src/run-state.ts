/**
 * What a finished (or stopped) run leaves in its output directory, and its export:
 *   run.json                      the resolved config, the base model, metrics, dataset hash
 *   metrics.jsonl                 one line per optimizer step (loss, accuracy, lr, grad norm)
 *   final/trainable.safetensors   every trainable tensor under its engine name
 *   export/                       the exported adapter (PEFT LoRA) or model (full fine-tuning)
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import type { TrainConfig } from '@expertune/contracts';
import { SafetensorsFile, writeFullModelExport, writePeftLoraExport, writeSafetensors } from '@expertune/formats';

export interface RunRecord {
  run_id: string;
  base_model: string;
  method: 'lora' | 'full';
  config: TrainConfig;
  dataset_hash: string;
  steps_completed: number;
  total_steps: number;
  final_metrics: Record<string, number>;
  finished_at: string;
}

export function saveRunState(
  outputDir: string,
  record: RunRecord,
  tensors: ReadonlyMap<string, { shape: number[]; data: Float32Array }>,
): void {
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

const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'generation_config.json',
];

/** Writes the run's export: PEFT LoRA for `lora`, a Hugging Face model directory for `full`. */
export function exportRun(runDir: string, outDir: string, dtype: 'F32' | 'BF16' | 'F16' = 'F32'): void {
  const record = readRunRecord(runDir);
  const file = SafetensorsFile.open(join(runDir, 'final', 'trainable.safetensors'));
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  try {
    for (const name of file.names())
      tensors.set(name, { shape: [...file.info(name).shape], data: file.readFloat32(name) });
  } finally {
    file.close();
  }
  const manifest = { runId: record.run_id, datasetHash: record.dataset_hash, finalMetrics: record.final_metrics };
  const card = {
    steps: record.steps_completed,
    learning_rate: record.config.optimizer.lr,
    schedule: `${record.config.schedule.kind}, warmup ${record.config.schedule.warmup_steps}`,
    micro_batch_size: record.config.training.micro_batch_size,
    grad_accumulation: record.config.training.grad_accumulation,
    max_seq_len: record.config.data.max_seq_len,
    seed: record.config.seed,
  };
  if (record.method === 'lora') {
    const lora = record.config.lora;
    writePeftLoraExport(resolve(outDir), {
      baseModel: record.base_model,
      rank: lora.rank,
      alpha: lora.alpha,
      dropout: lora.dropout,
      useRslora: lora.use_rslora,
      targetModules: lora.target_modules,
      tensors,
      dtype,
      manifest,
      card: { ...card, rank: lora.rank, alpha: lora.alpha, dropout: lora.dropout, use_rslora: String(lora.use_rslora) },
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
