/**
 * The trainer's side of a job, in a child process of the worker (`child_process.fork`): the
 * worker's event loop stays free for heartbeats, lock renewal and cancel messages, and a crash of
 * the trainer (or of the native engine) takes only this process down.
 *
 * Receives one `input` message, trains, streams `RunnerMessage`s, exits 0 (finished or stopped),
 * EXIT_USER_ERROR (bad config or data: not worth retrying) or EXIT_CRASH. A `stop` message (or
 * SIGTERM) aborts the run's signal: the current step finishes, is checkpointed, and the run stops.
 * When the worker dies the IPC channel closes and the runner exits at once, so a dead worker never
 * leaves a trainer behind that would race the worker that picks the job up.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { ConfigError, MIXTURE_METHOD_NAMES, parseTrainConfig, type TrainConfig } from '@expertune/contracts';
import { DatasetError, manifestProblem, runTraining } from '@expertune/trainer';

import { listRunCheckpoints, trainConfigInput } from './job-files.js';
import {
  EXIT_CRASH,
  EXIT_OK,
  EXIT_USER_ERROR,
  type MetricPoint,
  type ParentMessage,
  type RunnerInput,
  type RunnerMessage,
} from './protocol.js';

function send(message: RunnerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

/** A metrics.jsonl line (snake_case, as the trainer writes it) as metric points. */
export function stepPoints(line: Record<string, unknown>, mixture: boolean): MetricPoint[] {
  const step = Number(line.step);
  const names: [string, string][] = [
    ['loss', 'train/loss'],
    ['token_accuracy', 'train/token_accuracy'],
    ['lr', 'train/lr'],
    ['grad_norm', 'train/grad_norm'],
    ['tokens', 'train/tokens'],
    ['tokens_per_second', 'train/tokens_per_second'],
  ];
  if (mixture)
    for (const aux of ['balance', 'z_loss', 'entropy', 'lbc', 'total']) names.push([`aux_${aux}`, `train/aux_${aux}`]);
  return names
    .filter(([key]) => typeof line[key] === 'number' && Number.isFinite(line[key]))
    .map(([key, name]) => ({ name, step, value: line[key] as number }));
}

/** An evaluation (an eval.jsonl line) as metric points. */
export function evalPoints(step: number, result: Record<string, unknown>): MetricPoint[] {
  const points: MetricPoint[] = [];
  for (const key of ['loss', 'perplexity', 'token_accuracy', 'exact_match'])
    if (typeof result[key] === 'number' && Number.isFinite(result[key]))
      points.push({ name: `eval/${key}`, step, value: result[key] as number });
  const perTask = (result.per_task ?? {}) as Record<string, { exact_match?: number }>;
  for (const [task, t] of Object.entries(perTask))
    if (typeof t.exact_match === 'number')
      points.push({ name: `eval/exact_match/${task}`, step, value: t.exact_match });
  return points;
}

interface RoutingSite {
  layer: number;
  load: number[];
  /** null where a router has no distribution (FlyLoRA). */
  entropy: number | null;
  broadcast?: number | null;
}

/**
 * A step's routing statistics (a routing.jsonl line's sites) as metric points for the console's
 * routing panel: per decoder layer, each expert's load, the router entropy and DynMoLE's
 * broadcast fraction, each the mean over the layer's adapted projections.
 */
export function routingPoints(step: number, sites: readonly RoutingSite[]): MetricPoint[] {
  const byLayer = new Map<number, RoutingSite[]>();
  for (const site of sites) byLayer.set(site.layer, [...(byLayer.get(site.layer) ?? []), site]);
  const points: MetricPoint[] = [];
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  for (const [layer, group] of byLayer) {
    group[0]!.load.forEach((_, expert) =>
      points.push({
        name: `routing/load/${layer}/${expert}`,
        step,
        value: mean(group.map((s) => s.load[expert] ?? 0)),
      }),
    );
    const entropy = group.map((s) => s.entropy).filter((e): e is number => typeof e === 'number');
    if (entropy.length > 0) points.push({ name: `routing/entropy/${layer}`, step, value: mean(entropy) });
    const broadcast = group.map((s) => s.broadcast).filter((b): b is number => typeof b === 'number');
    if (broadcast.length > 0) points.push({ name: `routing/broadcast/${layer}`, step, value: mean(broadcast) });
  }
  return points.filter((p) => Number.isFinite(p.value));
}

function readJsonl(file: string): Record<string, unknown>[] {
  if (!existsSync(file)) return [];
  const rows: Record<string, unknown>[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      rows.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line cut short by the kill of the previous attempt
    }
  }
  return rows;
}

/**
 * The points an earlier attempt logged up to the checkpoint this one resumes from. Its worker may
 * have died before sending them to Postgres, and the resumed run only reports later steps;
 * re-sending them is harmless (metrics are insert-if-absent, and resuming is exact).
 */
async function replayLogs(outputDir: string, upTo: number, mixture: boolean): Promise<void> {
  for (const line of readJsonl(path.join(outputDir, 'metrics.jsonl'))) {
    const step = Number(line.step);
    if (Number.isInteger(step) && step <= upTo)
      await send({ type: 'metrics', step, points: stepPoints(line, mixture) });
  }
  for (const line of readJsonl(path.join(outputDir, 'eval.jsonl'))) {
    const step = Number(line.step);
    if (Number.isInteger(step) && step <= upTo) await send({ type: 'metrics', step, points: evalPoints(step, line) });
  }
  for (const line of readJsonl(path.join(outputDir, 'routing.jsonl'))) {
    const step = Number(line.step);
    if (Number.isInteger(step) && step <= upTo)
      await send({ type: 'metrics', step, points: routingPoints(step, line.sites as RoutingSite[]) });
  }
}

export async function runJob(input: RunnerInput, signal: AbortSignal): Promise<number> {
  let config: TrainConfig;
  try {
    config = parseTrainConfig(trainConfigInput(input), `the config of job ${input.jobId}`);
  } catch (error) {
    if (error instanceof ConfigError) {
      const first = error.issues[0];
      await send({
        type: 'error',
        error: { code: 'invalid_config', message: error.message, param: first ? first.path : null },
      });
      return EXIT_USER_ERROR;
    }
    throw error;
  }
  const mixture = (MIXTURE_METHOD_NAMES as readonly string[]).includes(config.method);
  // The latest checkpoint with steps left: one at the last step means the earlier attempt died
  // while saving or exporting, and the trainer refuses to resume from it (nothing is left).
  const maxSteps = config.training.max_steps;
  const chosenStep = input.resumeFrom ? /^step-(\d+)$/.exec(path.basename(input.resumeFrom)) : null;
  const latest =
    input.resumeFrom && chosenStep
      ? { step: Number(chosenStep[1]), dir: input.resumeFrom }
      : // A damaged latest checkpoint (its sha256 manifest disagrees) gives way to the one before it.
        (listRunCheckpoints(input.outputDir).findLast(
          (c) => (maxSteps === undefined || c.step < maxSteps) && manifestProblem(c.dir) === null,
        ) ?? null);
  if (latest) await replayLogs(input.outputDir, latest.step, mixture);

  let started = false;
  let lastRoutingAt = 0;
  // process.send delivers in order: waiting for the last message waits for them all.
  let lastSent: Promise<void> = Promise.resolve();
  const queue = (message: RunnerMessage) => {
    lastSent = send(message);
  };
  try {
    await runTraining(
      config,
      {
        signal,
        onStart: (info) => {
          started = true;
          queue({
            type: 'start',
            totalSteps: info.totalSteps,
            resumedFromStep: latest?.step ?? null,
            trainableParameters: info.trainableParameters,
            engine: info.engine,
            rows: info.data.rows,
            badRows: info.badRows.length,
            badValidationRows: info.badValidationRows.length,
            validationSequences: info.validationSequences,
            notes: info.notes,
          });
        },
        onStep: (report) => {
          const line: Record<string, unknown> = {
            step: report.step,
            loss: report.loss,
            token_accuracy: report.correct / report.tokens,
            lr: report.lr,
            grad_norm: report.gradNorm,
            tokens: report.tokens,
            tokens_per_second: report.tokensPerSecond,
          };
          for (const [key, value] of Object.entries(report.aux)) line[`aux_${snake(key)}`] = value;
          queue({ type: 'metrics', step: report.step, points: stepPoints(line, mixture) });
        },
        onRouting: (report) => {
          // Every step's per-layer routing is stored (the console's heatmap over steps); the live
          // message for open streams goes out at most once a second.
          queue({ type: 'metrics', step: report.step, points: routingPoints(report.step, report.sites) });
          const now = Date.now();
          if (now - lastRoutingAt < 1000) return;
          lastRoutingAt = now;
          const byLayer = new Map<number, number[][]>();
          for (const site of report.sites) byLayer.set(site.layer, [...(byLayer.get(site.layer) ?? []), site.load]);
          const layers = [...byLayer].map(([layer, loads]) => ({
            layer,
            load: loads[0]!.map((_, e) => loads.reduce((sum, l) => sum + (l[e] ?? 0), 0) / loads.length),
          }));
          queue({ type: 'routing', step: report.step, layers });
        },
        onEval: (report) => {
          const { step, totalSteps, ...result } = report;
          queue({ type: 'metrics', step, points: evalPoints(step, result as unknown as Record<string, unknown>) });
          queue({ type: 'eval', step, totalSteps, result: result as unknown as Record<string, unknown> });
        },
        onEvent: (event) => {
          if (event.type === 'checkpoint') {
            const evalLoss = checkpointEvalLoss(event.path);
            queue({ type: 'checkpoint', step: event.step, path: event.path, evalLoss });
          } else if (event.type === 'stopped') queue({ type: 'stopped', step: event.step });
          else
            queue({
              type: 'finished',
              step: event.step,
              exportDir: event.exportDir,
              adapter: config.method !== 'full',
              metrics: event.metrics,
            });
        },
      },
      latest ? { resume: latest.dir } : {},
    );
    await lastSent;
    return EXIT_OK;
  } catch (error) {
    await lastSent;
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof DatasetError) {
      await send({ type: 'error', error: { code: 'invalid_dataset', message, param: 'training_file' } });
      return EXIT_USER_ERROR;
    }
    if (/^the loss became/.test(message)) {
      await send({
        type: 'error',
        error: { code: 'training_diverged', message, param: 'hyperparameters.optimizer.lr' },
      });
      return EXIT_USER_ERROR;
    }
    if (!started && message.startsWith(`${config.method}: `)) {
      // validateAdapterConfig against the base model (e.g. a target the model does not have)
      await send({ type: 'error', error: { code: 'invalid_hyperparameters', message, param: 'hyperparameters' } });
      return EXIT_USER_ERROR;
    }
    await send({ type: 'error', error: { code: 'trainer_crashed', message, param: null } });
    return EXIT_CRASH;
  }
}

function checkpointEvalLoss(dir: string): number | null {
  try {
    const state = JSON.parse(readFileSync(path.join(dir, 'state.json'), 'utf8')) as { eval_loss?: unknown };
    return typeof state.eval_loss === 'number' ? state.eval_loss : null;
  } catch {
    return null;
  }
}

function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** The child-process entry: one job, then exit. */
function main(): void {
  const abort = new AbortController();
  process.on('SIGTERM', () => abort.abort());
  process.on('SIGINT', () => abort.abort());
  process.on('disconnect', () => process.exit(EXIT_CRASH));
  process.on('message', (message: ParentMessage) => {
    if (message.type === 'stop') abort.abort();
    else if (message.type === 'input')
      runJob(message.input, abort.signal).then(
        (code) => process.exit(code),
        async (error: unknown) => {
          const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
          await send({ type: 'error', error: { code: 'trainer_crashed', message: text, param: null } });
          process.exit(EXIT_CRASH);
        },
      );
  });
}

if (process.send) main();
