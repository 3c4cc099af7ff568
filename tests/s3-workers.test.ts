/**
 * The scale-out storage path end to end: the built API and two CPU workers that share no disk and
 * keep everything in an S3-compatible store (EXPERTUNE_STORAGE=s3; s3rver in this process). Like
 * pods, both workers mount their scratch space at the same path, and the second one starts with it
 * empty (the first one's is deleted), so all it can resume from is what the store holds. The dataset goes from the
 * API to the store, a worker downloads it and trains; SIGTERM drains that worker, whose checkpoint
 * is in the store, and the other worker resumes from it to success; the adapter tar the API builds
 * from the store is the export the worker digested.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { createExpertuneClient, type ExpertuneClient, type Job } from '@expertune/contracts';
import { connect, createApiKey, createDataSource, S3Storage } from '@expertune/db';
// @ts-expect-error -- s3rver ships no type declarations
import S3rver from 's3rver';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  apiMain,
  createThrowawayServices,
  digestDirectory,
  ensureAppBuilt,
  freePort,
  REDIS_URL,
  repoRoot,
  type ServiceProcess,
  startNodeProcess,
  temporaryDirectory,
  type ThrowawayServices,
  waitForHealth,
  waitForOutput,
  waitUntil,
  workerBin,
} from './helpers.js';

const BUCKET = 'expertune-artifacts';
const STEPS = 400;
const ROWS = ['one fish', 'two fish', 'red fish', 'blue fish', 'old fish', 'new fish', 'big cat', 'small cat'];

let services: ThrowawayServices | undefined;
let dir: ReturnType<typeof temporaryDirectory> | undefined;
let s3server: { run(): Promise<{ port: number }>; close(): Promise<void> } | undefined;
let s3Env: NodeJS.ProcessEnv;
let db: DataSource | undefined;
const processes: ServiceProcess[] = [];
let client: ExpertuneClient;
let baseUrl: string;
let apiKey: string;

function env(dataDir: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...s3Env,
    DATABASE_URL: services!.databaseUrl,
    REDIS_URL,
    EXPERTUNE_DATA_DIR: join(dir!.path, dataDir),
    EXPERTUNE_QUEUE_PREFIX: services!.queuePrefix,
  };
}

async function startWorker(id: string): Promise<ServiceProcess> {
  const worker = startNodeProcess(id, workerBin, {
    ...env('worker-scratch'),
    EXPERTUNE_ACCELERATOR: 'cpu',
    EXPERTUNE_WORKER_ID: id,
    EXPERTUNE_HEARTBEAT_MS: '300',
    EXPERTUNE_METRIC_FLUSH_MS: '200',
    EXPERTUNE_TRAINER_THREADS: '1',
  });
  processes.push(worker);
  await waitForOutput(worker, / on queue /);
  return worker;
}

const logs = () => processes.map((p) => `--- ${p.name}\n${p.output().slice(-3000)}`).join('\n');

beforeAll(async () => {
  ensureAppBuilt('api');
  ensureAppBuilt('worker');
  services = await createThrowawayServices('s3workers');
  dir = temporaryDirectory('s3workers');
  s3server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: join(dir.path, 's3rver'),
    configureBuckets: [{ name: BUCKET }],
  });
  const { port: s3port } = await s3server!.run();
  s3Env = {
    EXPERTUNE_STORAGE: 's3',
    EXPERTUNE_S3_BUCKET: BUCKET,
    EXPERTUNE_S3_ENDPOINT: `http://127.0.0.1:${s3port}`,
    EXPERTUNE_S3_PREFIX: services.queuePrefix,
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
  };
  db = await connect(createDataSource({ url: services.databaseUrl, poolSize: 2 }));
  apiKey = (await createApiKey(db, { name: 's3 workers test', scopes: ['launch'] })).key;
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  client = createExpertuneClient({ baseUrl, apiKey });
  const api = startNodeProcess('api', apiMain, {
    ...env('api'),
    EXPERTUNE_ACCELERATORS: 'cpu',
    EXPERTUNE_RATE_LIMIT_PER_MINUTE: '0',
    PORT: String(port),
    HOST: '127.0.0.1',
  });
  processes.push(api);
  await waitForHealth(baseUrl, api);
}, 120_000);

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGTERM', 3_000)));
  await db?.destroy();
  await services?.drop();
  await s3server?.close();
  dir?.remove();
}, 60_000);

describe('workers that share only an S3-compatible store', () => {
  it('train from the store, hand a drained job over through it, and the API serves the export from it', async () => {
    const store = new S3Storage({
      bucket: BUCKET,
      endpoint: s3Env.EXPERTUNE_S3_ENDPOINT,
      accessKeyId: 'S3RVER',
      secretAccessKey: 'S3RVER',
      prefix: s3Env.EXPERTUNE_S3_PREFIX,
    });
    const model = await client.models.register({
      path: join(repoRoot, 'models', 'expertune-tiny-en'),
      name: 'expertune-tiny-en',
    });
    const form = new FormData();
    form.set('model', model.id);
    form.set('file', new Blob([ROWS.map((text) => JSON.stringify({ text })).join('\n') + '\n']), 'train.jsonl');
    const response = await fetch(`${baseUrl}/v1/datasets`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}` },
      body: form,
    });
    const body = (await response.json()) as { id: string };
    expect(response.status, JSON.stringify(body)).toBe(200);
    const datasetId = body.id;
    expect(await store.list('datasets'), 'the dataset is in the store, not on a disk').toHaveLength(1);
    expect(existsSync(join(dir!.path, 'api', 'datasets'))).toBe(false);

    const first = await startWorker('s3-worker-1');
    const created = await client.jobs.create({
      model: model.id,
      training_file: datasetId,
      validation_file: null,
      method: 'lora',
      seed: 2,
      hyperparameters: {
        lora: { rank: 2, target_modules: ['q_proj', 'v_proj'] },
        data: { max_seq_len: 16 },
        training: { max_steps: STEPS, micro_batch_size: 2, checkpoint_every: 10, eval_every: 0 },
      },
    });
    await waitUntil(
      'the job past its first checkpoint',
      async () => {
        const job = await client.jobs.get(created.id);
        return job.status === 'running' && job.steps_completed >= 15;
      },
      60_000,
      100,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n${logs()}`);
    });
    await first.stop('SIGTERM', 30_000);
    expect(await first.exited, first.output()).toEqual({ code: 0, signal: null });
    const uploaded1 = await store.list(`jobs/${created.id}/checkpoints`);
    expect(
      uploaded1.some((key) => key.endsWith('/state.json')),
      'the drained checkpoint is in the store',
    ).toBe(true);

    // A new pod: an empty scratch directory; all it resumes from comes from the store.
    rmSync(join(dir!.path, 'worker-scratch'), { recursive: true, force: true });
    await startWorker('s3-worker-2');
    const done = await waitUntil(
      'the job to finish on the second worker',
      async () => {
        const job = await client.jobs.get(created.id);
        return ['succeeded', 'failed', 'cancelled'].includes(job.status) && job;
      },
      90_000,
      150,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n${logs()}`);
    });
    expect(done as Job, `${JSON.stringify((done as Job).error)}\n${logs()}`).toMatchObject({
      status: 'succeeded',
      steps_completed: STEPS,
      attempt: 2,
    });
    const attempts = (await db!.query(
      'SELECT worker_id, outcome, resumed_from_step FROM job_attempts WHERE job_id = $1 ORDER BY attempt',
      [created.id],
    )) as { worker_id: string; outcome: string; resumed_from_step: number | null }[];
    expect(attempts.map((a) => [a.worker_id, a.outcome])).toEqual([
      ['s3-worker-1', 'interrupted'],
      ['s3-worker-2', 'succeeded'],
    ]);
    expect(attempts[1]!.resumed_from_step).toBeGreaterThanOrEqual(10);

    // The export: uploaded by the worker, tarred by the API from the store, the same bytes the worker digested.
    const adapter = await client.adapters.get((done as Job).result_adapter!);
    expect(adapter.files?.length).toBeGreaterThan(0);
    const download = await client.adapters.download(adapter.id);
    expect(download.status).toBe(200);
    const tarFile = join(dir!.path, 'adapter.tar');
    writeFileSync(tarFile, Buffer.from(await download.arrayBuffer()));
    const unpacked = join(dir!.path, 'unpacked');
    mkdirSync(unpacked);
    execFileSync('tar', ['-xf', tarFile, '-C', unpacked]);
    expect(digestDirectory(unpacked)).toBe(adapter.sha256);
  }, 120_000);
});
