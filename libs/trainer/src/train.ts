/**
 * The training loop behind `expertune train`: load the base model and the data, attach the
 * configured adapter (LoRA or a mixture) or switch to full fine-tuning, run optimizer steps with
 * gradient accumulation, report metrics (and the routers' auxiliary losses and routing
 * statistics) to files and a callback, stop cleanly on an AbortSignal, save the run and write its
 * export.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import type { TrainConfig } from '@expertune/contracts';
import {
  blasHint,
  Engine,
  Optimizer,
  hasRouter,
  hasRouting,
  trainableParametersPerLayer,
  validateAdapterConfig,
  type AdapterConfig,
  type SiteRoutingStats,
  type OptimizerConfig,
  type TrainStepResult,
} from '@expertune/engine';
import { loadTokenizer } from '@expertune/formats';

import { adapterConfigFor } from './adapter-config.js';
import { microBatches } from './batches.js';
import { dataOptionsFor, loadTrainingData, type DataStats, type RowProblem } from './data.js';
import {
  configHash,
  loadCheckpointInto,
  readCheckpoint,
  resolveCheckpoint,
  runDirOf,
  writeCheckpoint,
  type CheckpointState,
} from './checkpoints.js';
import { evaluate, type EvalResult } from './evaluate.js';
import { exportRunAtomically, saveRunState } from './run-state.js';

export interface StepReport extends TrainStepResult {
  totalSteps: number;
  tokensPerSecond: number;
  elapsedSeconds: number;
}

export interface StartInfo {
  totalSteps: number;
  data: DataStats;
  /** Bad rows of the training data, left out of training. */
  badRows: RowProblem[];
  /** Bad rows of the validation file, left out. */
  badValidationRows: RowProblem[];
  /** Held-out sequences, evaluated every training.eval_every steps and after the last step. */
  validationSequences: number;
  trainableParameters: number;
  /** The attached adapter (null in full fine-tuning). */
  adapter: AdapterConfig | null;
  /** Trainable adapter parameters of each decoder layer (empty in full fine-tuning). */
  trainablePerLayer: number[];
  engine: string;
  /** Things the user should know before the run goes on (e.g. task types that nothing uses). */
  notes: string[];
}

/** One evaluation of the validation data (an eval.jsonl line). */
export interface EvalReport extends EvalResult {
  /** Optimizer steps completed when it ran. */
  step: number;
  totalSteps: number;
}

/** Things that happen to a run besides steps and evaluations (the job worker records them). */
export type TrainEvent =
  | { type: 'checkpoint'; step: number; path: string }
  | { type: 'stopped'; step: number }
  | { type: 'finished'; step: number; exportDir: string; metrics: Record<string, number> };

export interface TrainCallbacks {
  onStart?(info: StartInfo): void;
  /** After every `training.log_every` steps and the last one. */
  onStep?(report: StepReport): void;
  /** A mixture's routing statistics of every site, after each step (the same as routing.jsonl). */
  onRouting?(report: { step: number; sites: ReturnType<typeof routingRow>[] }): void;
  onEval?(report: EvalReport): void;
  onEvent?(event: TrainEvent): void;
  /** Aborting finishes the current step, checkpoints it and stops (the run can resume exactly). */
  signal?: AbortSignal;
}

export interface TrainResult {
  runId: string;
  outputDir: string;
  exportDir: string;
  stepsCompleted: number;
  totalSteps: number;
  losses: number[];
  /** The evaluation after the last step (null without validation data). */
  finalEval: EvalResult | null;
  stopped: boolean;
  /** The step the run resumed after (0 for a fresh run); `losses` are of the later steps. */
  resumedFrom: number;
}

export interface TrainOptions {
  /** A checkpoint directory (`…/checkpoints/step-N`) or a run directory (its latest checkpoint) to continue. */
  resume?: string;
}

/**
 * Keeps the lines of a JSONL log whose `step` is at most `step` (a resumed run drops what the
 * interrupted process wrote after its checkpoint); creates the file empty when absent.
 */
function truncateLog(path: string, step: number): void {
  if (!existsSync(path)) {
    writeFileSync(path, '');
    return;
  }
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .filter((line) => {
      try {
        return (JSON.parse(line) as { step?: number }).step! <= step;
      } catch {
        return false; // a line cut short by the kill
      }
    });
  writeFileSync(path, kept.map((line) => line + '\n').join(''));
}

/** The engine optimizer's settings for a training config running `totalSteps` updates. */
export function optimizerConfigFor(config: TrainConfig, totalSteps: number): OptimizerConfig {
  return {
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
  };
}

export async function runTraining(
  config: TrainConfig,
  callbacks: TrainCallbacks = {},
  options: TrainOptions = {},
): Promise<TrainResult> {
  const modelDir = resolve(config.model);
  // A resumed run continues in the directory of its checkpoint, whatever output_dir says.
  // resolveCheckpoint checks the manifest's sums: what it returns is read as whole below.
  const checkpointDir =
    options.resume !== undefined
      ? resolveCheckpoint(resolve(options.resume), (dir, problem) =>
          console.warn(`skipping checkpoint ${dir}: ${problem}`),
        )
      : null;
  const outputDir = checkpointDir ? resolve(runDirOf(checkpointDir)) : resolve(config.output_dir);
  const engine = Engine.create(config.engine, { threads: config.threads });
  const model = await engine.loadModel(modelDir);
  try {
    const tokenizer = existsSync(join(modelDir, 'tokenizer.json')) ? loadTokenizer(modelDir) : null;
    // Bad rows are skipped (reported through onStart) unless data.on_bad_rows is fail.
    const data = loadTrainingData(
      resolve(config.data.train),
      dataOptionsFor(config.data, config.seed, tokenizer, model.config.vocabSize),
    );
    const adapterConfig = adapterConfigFor(config, model.config.numLayers);
    if (adapterConfig) {
      try {
        validateAdapterConfig(adapterConfig, model.config);
      } catch (error) {
        throw new Error(`${config.method}: ${(error as Error).message}`, { cause: error });
      }
      model.attachAdapter(adapterConfig);
    } else {
      model.setTrainMode('full');
    }
    const notes: string[] = [];
    const hint = config.engine === 'native' ? blasHint() : null;
    if (hint) notes.push(hint);
    if (data.stats.withTaskType > 0) {
      if (adapterConfig?.method !== 'loramoe')
        notes.push(`${data.stats.withTaskType} row(s) carry a task_type, which only method loramoe uses`);
      else if (adapterConfig.blcWeight === 0)
        notes.push('rows carry task types but loramoe.blc_weight is 0: the localized balancing constraint is off');
      else if (data.stats.withTaskType < data.stats.rows)
        notes.push(
          `${data.stats.rows - data.stats.withTaskType} row(s) have no task_type: batches with any of them skip the constraint`,
        );
    }
    const { micro_batch_size: batchSize, grad_accumulation: accumulation } = config.training;
    const stepsPerEpoch = Math.ceil(data.sequences.length / (batchSize * accumulation));
    const totalSteps = config.training.max_steps ?? Math.max(1, Math.ceil(config.training.epochs * stepsPerEpoch));
    const optimizer = new Optimizer(model, optimizerConfigFor(config, totalSteps));
    // Micro-batches per epoch; the data position after s updates is s·accumulation of them.
    const perEpoch = Math.ceil(data.sequences.length / batchSize);
    const positionAfter = (steps: number) => ({
      epoch: Math.floor((steps * accumulation) / perEpoch),
      position: (steps * accumulation) % perEpoch,
    });
    let resumed: CheckpointState | null = null;
    if (checkpointDir) {
      resumed = readCheckpoint(checkpointDir, config, model.backend.engineName);
      const expected = positionAfter(resumed.step);
      if (resumed.epoch !== expected.epoch || resumed.position !== expected.position)
        throw new Error(
          `cannot resume from ${checkpointDir}: its data position (epoch ${resumed.epoch}, micro-batch ${resumed.position}) ` +
            `does not match this data (epoch ${expected.epoch}, micro-batch ${expected.position})`,
        );
      if (resumed.step >= totalSteps)
        throw new Error(
          `cannot resume from ${checkpointDir}: it is at step ${resumed.step} of ${totalSteps}, nothing is left`,
        );
      loadCheckpointInto(checkpointDir, model);
      optimizer.resumeAt(resumed.step);
    }
    const startStep = resumed?.step ?? 0;
    callbacks.onStart?.({
      totalSteps,
      data: data.stats,
      badRows: data.problems,
      badValidationRows: data.validationProblems,
      validationSequences: data.validation.length,
      trainableParameters: model.parameterCount('trainable'),
      adapter: adapterConfig,
      trainablePerLayer: adapterConfig ? trainableParametersPerLayer(model.config, adapterConfig) : [],
      engine: model.backend.engineName,
      notes,
    });

    // metrics.jsonl: one line per optimizer step, full precision, written as the run goes.
    mkdirSync(outputDir, { recursive: true });
    const metricsPath = join(outputDir, 'metrics.jsonl');
    const resetLog = (path: string) => (resumed ? truncateLog(path, startStep) : writeFileSync(path, ''));
    resetLog(metricsPath);
    // routing.jsonl: mixtures only, one line per step with every site's routing statistics.
    const routingPath = adapterConfig && hasRouting(adapterConfig) ? join(outputDir, 'routing.jsonl') : null;
    if (routingPath) resetLog(routingPath);
    const routed = adapterConfig !== null && hasRouter(adapterConfig);
    // eval.jsonl: one line per evaluation of the validation data.
    const evalPath = join(outputDir, 'eval.jsonl');
    if (data.validation.length > 0) resetLog(evalPath);
    let finalEval: EvalResult | null = null;

    const padId = tokenizer?.eosTokenId ?? model.config.eosTokenIds[0] ?? 0;
    let evalSeconds = 0;
    const runEval = async (step: number): Promise<EvalResult> => {
      const evalStarted = performance.now();
      const result = await evaluate(model, data.validation, {
        padId,
        batchSize: config.eval.batch_size,
        maxAnswerTokens: config.eval.max_answer_tokens,
        maxGenerateRows: config.eval.max_generate_rows,
        stopIds: model.config.eosTokenIds,
      });
      evalSeconds += (performance.now() - evalStarted) / 1000;
      appendFileSync(evalPath, JSON.stringify({ step, ...result }) + '\n');
      callbacks.onEval?.({ ...result, step, totalSteps });
      return result;
    };
    let evaluatedAt = -1;
    const batches = microBatches(data.sequences, batchSize, config.seed, padId, positionAfter(startStep));
    const hash = configHash(config);
    const losses: number[] = [];
    const started = performance.now();
    let tokens = 0;
    let stopped = false;
    let last: TrainStepResult | null = null;
    const checkpointEvery = config.training.checkpoint_every;
    let checkpointedAt = startStep;
    const checkpoint = (done: number) => {
      const path = writeCheckpoint(
        outputDir,
        model,
        {
          step: done,
          ...positionAfter(done),
          seed: config.seed,
          engine: model.backend.engineName,
          config_hash: hash,
          config,
          eval_loss: evaluatedAt === done && finalEval ? finalEval.loss : null,
        },
        config.training.keep_checkpoints,
      );
      checkpointedAt = done;
      callbacks.onEvent?.({ type: 'checkpoint', step: done, path });
    };
    for (let step = startStep; step < totalSteps; step++) {
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
          ...(routed
            ? {
                aux_balance: last.aux.balance,
                aux_z_loss: last.aux.zLoss,
                aux_entropy: last.aux.entropy,
                aux_lbc: last.aux.lbc,
                aux_total: last.aux.total,
              }
            : {}),
          elapsed_s: elapsedSeconds,
        }) + '\n',
      );
      if (routingPath) {
        const routing = { step: last.step, sites: model.routingStats().map(routingRow) };
        appendFileSync(routingPath, JSON.stringify(routing) + '\n');
        callbacks.onRouting?.(routing);
      }
      if (!Number.isFinite(last.loss))
        throw new Error(`the loss became ${last.loss} at step ${step + 1}: lower the learning rate`);
      if ((step + 1) % config.training.log_every === 0 || step + 1 === totalSteps)
        callbacks.onStep?.({ ...last, totalSteps, elapsedSeconds, tokensPerSecond: tokens / elapsedSeconds });
      const every = config.training.eval_every;
      if (data.validation.length > 0 && every > 0 && (step + 1) % every === 0) {
        finalEval = await runEval(step + 1);
        evaluatedAt = step + 1;
      }
      if (checkpointEvery > 0 && (step + 1) % checkpointEvery === 0) checkpoint(step + 1);
    }
    const completed = startStep + losses.length;
    const trainSeconds = (performance.now() - started) / 1000 - evalSeconds;
    // A cooperative stop (AbortSignal, Ctrl-C) finishes its step and checkpoints it, so the run can
    // resume from exactly there whatever checkpoint_every says.
    if (stopped && completed > checkpointedAt) checkpoint(completed);
    if (stopped) callbacks.onEvent?.({ type: 'stopped', step: completed });
    if (data.validation.length > 0 && losses.length > 0 && evaluatedAt !== completed)
      finalEval = await runEval(completed);

    const runId = randomUUID();
    const finalMetrics = {
      ...(last ? { train_loss: last.loss, token_accuracy: last.correct / last.tokens } : {}),
      ...(finalEval ? finalEvalMetrics(finalEval) : {}),
    };
    // Every adapter tensor, frozen ones included (FlyLoRA's A and bias), or every trained weight.
    const shapes = new Map<string, { shape: number[]; data: Float32Array }>();
    const values = model.adapter ? model.adapter.weights() : model.trainableTensors();
    for (const [name, data] of values) shapes.set(name, { shape: model.backend.tensorShape(name), data });
    saveRunState(
      outputDir,
      {
        run_id: runId,
        base_model: modelDir,
        method: config.method,
        config,
        adapter: adapterConfig,
        num_layers: model.config.numLayers,
        dataset_hash: data.hash,
        steps_completed: completed,
        total_steps: totalSteps,
        final_metrics: finalMetrics,
        throughput: {
          trainable_parameters: model.parameterCount('trainable'),
          tokens,
          seconds: trainSeconds,
          tokens_per_second: trainSeconds > 0 ? tokens / trainSeconds : 0,
        },
        finished_at: new Date().toISOString(),
      },
      shapes,
    );
    const exportDir = join(outputDir, 'export');
    exportRunAtomically(outputDir, exportDir, config.export_dtype);
    if (!stopped) callbacks.onEvent?.({ type: 'finished', step: completed, exportDir, metrics: finalMetrics });
    return {
      runId,
      outputDir,
      exportDir,
      stepsCompleted: completed,
      totalSteps,
      losses,
      finalEval,
      stopped,
      resumedFrom: startStep,
    };
  } finally {
    model.dispose();
  }
}

/** The final evaluation's entries of run.json's final_metrics (numbers only). */
function finalEvalMetrics(result: EvalResult): Record<string, number> {
  const metrics: Record<string, number> = {
    eval_loss: result.loss,
    eval_perplexity: result.perplexity,
    eval_token_accuracy: result.token_accuracy,
  };
  if (result.exact_match !== null) metrics.eval_exact_match = result.exact_match;
  for (const [task, t] of Object.entries(result.per_task)) metrics[`eval_exact_match/${task}`] = t.exact_match;
  return metrics;
}

/** A site's routing statistics as a routing.jsonl entry (snake_case, like metrics.jsonl). */
function routingRow(site: SiteRoutingStats) {
  return {
    layer: site.layer,
    projection: site.projection,
    experts: site.experts,
    tokens: site.tokens,
    load: site.load,
    mean_gate: site.meanGate,
    entropy: site.entropy,
    broadcast: site.broadcast,
  };
}
