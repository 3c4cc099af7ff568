/**
 * The training loop behind `expertune train`: load the base model and the data, attach LoRA or
 * switch to full fine-tuning, run optimizer steps with gradient accumulation, report metrics to a
 * callback, stop cleanly on an AbortSignal, save the run and write its export.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import type { TrainConfig } from '@expertune/contracts';
import { Engine, Optimizer, type TrainStepResult } from '@expertune/engine';
import { loadTokenizer } from '@expertune/formats';

import { microBatches } from './batches.js';
import { loadTrainingData, type DataStats } from './data.js';
import { exportRun, saveRunState } from './run-state.js';

export interface StepReport extends TrainStepResult {
  totalSteps: number;
  tokensPerSecond: number;
  elapsedSeconds: number;
}

export interface TrainCallbacks {
  onStart?(info: { totalSteps: number; data: DataStats; trainableParameters: number; engine: string }): void;
  onStep?(report: StepReport): void;
  signal?: AbortSignal;
}

export interface TrainResult {
  runId: string;
  outputDir: string;
  exportDir: string;
  stepsCompleted: number;
  totalSteps: number;
  losses: number[];
  stopped: boolean;
}

export async function runTraining(config: TrainConfig, callbacks: TrainCallbacks = {}): Promise<TrainResult> {
  const modelDir = resolve(config.model);
  const outputDir = resolve(config.output_dir);
  const engine = Engine.create(config.engine, { threads: config.threads });
  const model = await engine.loadModel(modelDir);
  try {
    const tokenizer = existsSync(join(modelDir, 'tokenizer.json')) ? loadTokenizer(modelDir) : null;
    const data = loadTrainingData(resolve(config.data.train), {
      tokenizer,
      vocabSize: model.config.vocabSize,
      maxSeqLen: config.data.max_seq_len,
      addEos: config.data.add_eos,
    });
    if (config.method === 'lora') {
      model.attachLora({
        rank: config.lora.rank,
        alpha: config.lora.alpha,
        dropout: config.lora.dropout,
        useRslora: config.lora.use_rslora,
        targetModules: config.lora.target_modules,
        seed: config.seed,
      });
    } else {
      model.setTrainMode('full');
    }
    const { micro_batch_size: batchSize, grad_accumulation: accumulation } = config.training;
    const stepsPerEpoch = Math.ceil(data.sequences.length / (batchSize * accumulation));
    const totalSteps = config.training.max_steps ?? Math.max(1, Math.ceil(config.training.epochs * stepsPerEpoch));
    const optimizer = new Optimizer(model, {
      beta1: config.optimizer.beta1,
      beta2: config.optimizer.beta2,
      eps: config.optimizer.eps,
      weightDecay: config.optimizer.weight_decay,
      maxGradNorm: config.optimizer.max_grad_norm,
      seed: config.seed,
      recompute: config.training.recompute,
      schedule: {
        kind: config.schedule.kind,
        lr: config.optimizer.lr,
        warmupSteps: config.schedule.warmup_steps,
        totalSteps,
        minLrRatio: config.schedule.min_lr_ratio,
      },
    });
    callbacks.onStart?.({
      totalSteps,
      data: data.stats,
      trainableParameters: model.parameterCount('trainable'),
      engine: model.backend.engineName,
    });

    // metrics.jsonl: one line per optimizer step, full precision, written as the run goes.
    mkdirSync(outputDir, { recursive: true });
    const metricsPath = join(outputDir, 'metrics.jsonl');
    writeFileSync(metricsPath, '');

    const padId = tokenizer?.eosTokenId ?? model.config.eosTokenIds[0] ?? 0;
    const batches = microBatches(data.sequences, batchSize, config.seed, padId);
    const losses: number[] = [];
    const started = performance.now();
    let tokens = 0;
    let stopped = false;
    let last: TrainStepResult | null = null;
    for (let step = 0; step < totalSteps; step++) {
      if (callbacks.signal?.aborted) {
        stopped = true;
        break;
      }
      const micro = Array.from({ length: accumulation }, () => batches.next().value!);
      last = await optimizer.step(micro);
      losses.push(last.loss);
      tokens += micro.reduce((sum, b) => sum + b.batch * b.seqLen, 0);
      const elapsedSeconds = (performance.now() - started) / 1000;
      appendFileSync(
        metricsPath,
        JSON.stringify({
          step: last.step,
          loss: last.loss,
          token_accuracy: last.correct / last.tokens,
          lr: last.lr,
          grad_norm: last.gradNorm,
          tokens: last.tokens,
          elapsed_s: elapsedSeconds,
        }) + '\n',
      );
      if (!Number.isFinite(last.loss))
        throw new Error(`the loss became ${last.loss} at step ${step + 1}: lower the learning rate`);
      if ((step + 1) % config.training.log_every === 0 || step + 1 === totalSteps)
        callbacks.onStep?.({ ...last, totalSteps, elapsedSeconds, tokensPerSecond: tokens / elapsedSeconds });
    }

    const runId = randomUUID();
    const shapes = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, values] of model.trainableTensors())
      shapes.set(name, { shape: model.backend.tensorShape(name), data: values });
    saveRunState(
      outputDir,
      {
        run_id: runId,
        base_model: modelDir,
        method: config.method,
        config,
        dataset_hash: data.hash,
        steps_completed: losses.length,
        total_steps: totalSteps,
        final_metrics: last ? { train_loss: last.loss, token_accuracy: last.correct / last.tokens } : {},
        finished_at: new Date().toISOString(),
      },
      shapes,
    );
    const exportDir = join(outputDir, 'export');
    exportRun(outputDir, exportDir, config.export_dtype);
    return { runId, outputDir, exportDir, stepsCompleted: losses.length, totalSteps, losses, stopped };
  } finally {
    model.dispose();
  }
}
