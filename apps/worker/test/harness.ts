/**
 * Real services for the worker's tests: a throwaway Postgres database per file (created through
 * the server's `postgres` database, migrated with libs/db's runMigrations, dropped after), a unique
 * BullMQ prefix per test, a tiny random base model and a small dataset in a temporary data dir.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { connect, createDataSource } from '@expertune/db';
import { createTestDatabase } from '@expertune/db/testing';
import { initRandomModel } from '@expertune/trainer';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';

import { settingsFromEnv, type WorkerSettings } from '../src/settings.js';

export const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

export interface Harness {
  url: string;
  db: DataSource;
  dataDir: string;
  modelId: string;
  modelDir: string;
  trainDatasetId: string;
  validationDatasetId: string;
  redis: Redis;
  /** Worker settings for a queue prefix, with short heartbeats and locks. */
  settings(prefix: string): WorkerSettings;
  env(prefix: string): NodeJS.ProcessEnv;
  queue(prefix: string): Queue;
  /** Inserts a queued job with `config` and enqueues it (BullMQ job id = the job's id). */
  submit(
    prefix: string,
    config: Record<string, unknown>,
    options?: { attempts?: number; validation?: boolean },
  ): Promise<string>;
  close(): Promise<void>;
}

const ROWS = ['one fish', 'two fish', 'red fish', 'blue fish', 'old fish', 'new fish', 'big cat', 'small cat'].map(
  (text) => ({ text }),
);

export async function createHarness(): Promise<Harness> {
  const database = await createTestDatabase();
  const { url, name } = database;
  const db = await connect(createDataSource({ url, poolSize: 4 }));
  const dataDir = mkdtempSync(path.join(tmpdir(), 'expertune-worker-'));
  const modelDir = path.join(dataDir, 'models', 'tiny');
  initRandomModel(modelDir, 'tiny', 7);
  mkdirSync(path.join(dataDir, 'datasets'), { recursive: true });
  const jsonl = (rows: object[]) => rows.map((row) => JSON.stringify(row)).join('\n') + '\n';
  writeFileSync(path.join(dataDir, 'datasets', 'train.jsonl'), jsonl(ROWS));
  writeFileSync(path.join(dataDir, 'datasets', 'validation.jsonl'), jsonl(ROWS.slice(0, 3)));
  const [model] = (await db.query(
    `INSERT INTO models (name, path, config, parameter_count) VALUES ($1, $2, '{}', 1000) RETURNING id`,
    [`tiny-${name}`, modelDir],
  )) as { id: string }[];
  const dataset = async (key: string, rows: number) =>
    (
      (await db.query(
        `INSERT INTO datasets (name, filename, storage_key, bytes, sha256, rows, stats, preview)
         VALUES ($1, $2, $3, 100, $4, $5, '{}', '[]') RETURNING id`,
        [key, `${key}.jsonl`, `datasets/${key}.jsonl`, 'a'.repeat(64), rows],
      )) as { id: string }[]
    )[0]!.id;
  const trainDatasetId = await dataset('train', ROWS.length);
  const validationDatasetId = await dataset('validation', 3);
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queues: Queue[] = [];

  const env = (prefix: string): NodeJS.ProcessEnv => ({
    ...process.env,
    DATABASE_URL: url,
    REDIS_URL,
    EXPERTUNE_DATA_DIR: dataDir,
    EXPERTUNE_QUEUE_PREFIX: prefix,
    EXPERTUNE_WORKER_ID: `test-${prefix}-${randomUUID().slice(0, 4)}`,
    EXPERTUNE_HEARTBEAT_MS: '300',
    EXPERTUNE_STALE_AFTER_MS: '2000',
    EXPERTUNE_LOCK_DURATION_MS: '2000',
    EXPERTUNE_STALLED_INTERVAL_MS: '1000',
    EXPERTUNE_METRIC_FLUSH_MS: '200',
    EXPERTUNE_TRAINER_THREADS: '1',
  });
  const queue = (prefix: string) => {
    const q = new Queue(settingsFromEnv(env(prefix)).queueName, {
      connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }),
      prefix,
    });
    queues.push(q);
    return q;
  };
  return {
    url,
    db,
    dataDir,
    modelId: model!.id,
    modelDir,
    trainDatasetId,
    validationDatasetId,
    redis,
    env,
    settings: (prefix) => settingsFromEnv(env(prefix)),
    queue,
    async submit(prefix, config, options = {}) {
      const [job] = (await db.query(
        `INSERT INTO jobs (method, base_model_id, training_dataset_id, validation_dataset_id, config, seed)
         VALUES ($1, $2, $3, $4, $5, 3) RETURNING id`,
        [
          String(config.method ?? 'lora'),
          model!.id,
          trainDatasetId,
          options.validation === false ? null : validationDatasetId,
          JSON.stringify(config),
        ],
      )) as { id: string }[];
      await queue(prefix).add('train', { jobId: job!.id }, { jobId: job!.id, attempts: options.attempts ?? 1 });
      return job!.id;
    },
    async close() {
      for (const q of queues) {
        await q.obliterate({ force: true }).catch(() => undefined);
        await q.close();
      }
      redis.disconnect();
      await db.destroy();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
