import { hostname } from 'node:os';
import path from 'node:path';

import { DEFAULT_QUEUE_PREFIX, trainQueueName } from '@expertune/contracts';
import { databaseUrl, dataDir } from '@expertune/db';
import { deviceFromEnv, deviceName } from '@expertune/trainer';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';
export { CANCEL_CHANNEL, DEFAULT_QUEUE_PREFIX, jobEventChannel as jobChannel } from '@expertune/contracts';

export interface WorkerSettings {
  accelerator: string;
  /** Where the native engine trains: `cpu` or `cuda:<n>` (EXPERTUNE_DEVICE, checked at start; docs/cuda.md). */
  device: string;
  /** BullMQ queue name (`train-<accelerator>`, contracts' trainQueueName). */
  queueName: string;
  /** BullMQ key prefix; tests use a unique one. */
  queuePrefix: string;
  databaseUrl: string;
  redisUrl: string;
  dataDir: string;
  workerId: string;
  /** jobs.heartbeat_at is refreshed this often while a job runs. */
  heartbeatMs: number;
  /** A running job whose heartbeat is older than this belongs to a dead worker and may be claimed. */
  staleAfterMs: number;
  /** BullMQ: the active job's lock (renewed every half of it), how often stalled jobs are looked for, and how many stalls a job survives. */
  lockDurationMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
  /** Metric points are written and published at least this often, or when this many are waiting. */
  metricFlushMs: number;
  metricFlushPoints: number;
  /** Native engine threads for the trainer (null: the job's config, 0 = all cores). */
  threads: number | null;
  /** The runner module (built `runner.js`) forked for each job. */
  runnerPath: string;
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0)
    throw new Error(`${name}=${JSON.stringify(raw)}: expected a whole number ≥ 0`);
  return value;
}

/** The built runner next to this module; from the TypeScript sources (tests), the package's dist/. */
export function defaultRunnerPath(): string {
  const here = new URL(import.meta.url).pathname;
  if (here.endsWith('.js')) return path.join(path.dirname(here), 'runner.js');
  return path.resolve(path.dirname(here), '..', 'dist', 'runner.js');
}

export function settingsFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerSettings {
  const accelerator = env.EXPERTUNE_ACCELERATOR || 'cpu';
  const heartbeatMs = int(env, 'EXPERTUNE_HEARTBEAT_MS', 5_000);
  return {
    accelerator,
    device: deviceName(deviceFromEnv(env)),
    queueName: trainQueueName(accelerator),
    queuePrefix: env.EXPERTUNE_QUEUE_PREFIX || DEFAULT_QUEUE_PREFIX,
    databaseUrl: databaseUrl(env),
    redisUrl: env.REDIS_URL || DEFAULT_REDIS_URL,
    dataDir: dataDir(env),
    workerId: env.EXPERTUNE_WORKER_ID || `${hostname()}:${process.pid}`,
    heartbeatMs,
    staleAfterMs: int(env, 'EXPERTUNE_STALE_AFTER_MS', Math.max(30_000, 6 * heartbeatMs)),
    lockDurationMs: int(env, 'EXPERTUNE_LOCK_DURATION_MS', 30_000),
    stalledIntervalMs: int(env, 'EXPERTUNE_STALLED_INTERVAL_MS', 30_000),
    maxStalledCount: int(env, 'EXPERTUNE_MAX_STALLED_COUNT', 10),
    metricFlushMs: int(env, 'EXPERTUNE_METRIC_FLUSH_MS', 1_000),
    metricFlushPoints: int(env, 'EXPERTUNE_METRIC_FLUSH_POINTS', 200),
    threads: env.EXPERTUNE_TRAINER_THREADS ? int(env, 'EXPERTUNE_TRAINER_THREADS', 0) : null,
    runnerPath: env.EXPERTUNE_RUNNER_PATH || defaultRunnerPath(),
  };
}
