/**
 * Issue 9 with real API and worker processes (built dist/): the worker's own resource guard fails a
 * job too large for its memory cleanly and goes on to run the next one; and no secret of the
 * processes' environment (database password, S3 secret key, API keys) appears in their output or
 * in any job event, whatever the run went through.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { createExpertuneClient, type ExpertuneClient, type JobCreateRequest } from '@expertune/contracts';
import { connect, createApiKey, createDataSource } from '@expertune/db';
import { initRandomModel } from '@expertune/trainer';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  apiMain,
  createThrowawayServices,
  ensureAppBuilt,
  freePort,
  jobWaiter,
  REDIS_URL,
  type ServiceProcess,
  startNodeProcess,
  temporaryDirectory,
  type ThrowawayServices,
  waitForHealth,
  waitForOutput,
  workerBin,
} from './helpers.js';

// Postgres here trusts local connections, so the password is sent and ignored: it only has to stay unprinted.
const PG_PASSWORD = 'pg-Hardening-Pass-4921';
const S3_SECRET = 'wJalrXUtnFEMI-K7MDENG-hardening-s3-secret';
const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

/**
 * A stand-in trainer runner (EXPERTUNE_RUNNER_PATH) that does the worst it can: prints the secrets
 * it was handed under innocent names, and a Bearer header, to stdout and stderr, and fails with
 * them in its error. The worker's own credentials never reach it: it says which it sees.
 */
const LEAKY_RUNNER = `
process.once('message', () => {
  const seen = ['DATABASE_URL', 'EXPERTUNE_S3_SECRET_ACCESS_KEY'].filter((name) => name in process.env);
  const secrets = 'pw ' + process.env.LEAKED_PW + ' s3 ' + process.env.LEAKED_S3;
  console.log('runner sees [' + seen.join(',') + '] ' + secrets + ' Authorization: Bearer ' + process.env.LEAKED_KEY);
  console.error('runner error: ' + secrets);
  process.send({ type: 'error', error: { code: 'internal_error', message: 'crashed: ' + secrets + ' key ' + process.env.LEAKED_KEY, param: null } }, () => process.exit(3));
});
`;

let services: ThrowawayServices | undefined;
let dir: ReturnType<typeof temporaryDirectory> | undefined;
let db: DataSource | undefined;
const processes: ServiceProcess[] = [];
let apiKey: string;
let client: ExpertuneClient;
let baseUrl: string;
let modelId: string;
let trainingFile: string;

const logs = () => processes.map((p) => `--- ${p.name}\n${p.output().slice(-4000)}`).join('\n');

function env(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const url = new URL(services!.databaseUrl);
  url.password = PG_PASSWORD;
  return {
    ...process.env,
    DATABASE_URL: url.toString(),
    REDIS_URL,
    EXPERTUNE_DATA_DIR: join(dir!.path, 'data'),
    EXPERTUNE_QUEUE_PREFIX: services!.queuePrefix,
    EXPERTUNE_S3_SECRET_ACCESS_KEY: S3_SECRET,
    AWS_SECRET_ACCESS_KEY: S3_SECRET,
    ...extra,
  };
}

const job = (micro_batch_size: number, max_seq_len: number): JobCreateRequest => ({
  model: modelId,
  training_file: trainingFile,
  method: 'lora',
  hyperparameters: {
    lora: { rank: 2 },
    data: { max_seq_len },
    training: { max_steps: 3, micro_batch_size, checkpoint_every: 0 },
  },
});

beforeAll(async () => {
  ensureAppBuilt('api');
  ensureAppBuilt('worker');
  services = await createThrowawayServices('hardening');
  dir = temporaryDirectory('hardening');
  mkdirSync(join(dir.path, 'data'), { recursive: true });
  const modelDir = join(dir.path, 'models', 'tiny');
  initRandomModel(modelDir, 'tiny', 5);
  db = await connect(createDataSource({ url: services.databaseUrl, poolSize: 2 }));
  apiKey = (await createApiKey(db, { name: 'hardening test', scopes: ['launch'] })).key;
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  client = createExpertuneClient({ baseUrl, apiKey });
  const api = startNodeProcess(
    'api',
    apiMain,
    env({
      PORT: String(port),
      HOST: '127.0.0.1',
      EXPERTUNE_MODEL_ROOTS: join(dir.path, 'models'),
      EXPERTUNE_ACCELERATORS: 'cpu,leaky',
    }),
  );
  // The worker's memory, as far as the guard knows: plenty for the tiny model, not for a huge micro-batch.
  const worker = startNodeProcess(
    'worker',
    workerBin,
    env({
      EXPERTUNE_WORKER_ID: 'hardening-worker',
      EXPERTUNE_MEMORY_LIMIT_BYTES: String(2 ** 30),
      EXPERTUNE_TRAINER_THREADS: '1',
    }),
  );
  // Jobs for the `leaky` class run the leaky runner, with a live API key in its environment.
  const leakyRunner = join(dir.path, 'leaky-runner.mjs');
  writeFileSync(leakyRunner, LEAKY_RUNNER);
  const leakyWorker = startNodeProcess(
    'leaky worker',
    workerBin,
    env({
      EXPERTUNE_ACCELERATOR: 'leaky',
      EXPERTUNE_WORKER_ID: 'leaky-worker',
      EXPERTUNE_RUNNER_PATH: leakyRunner,
      LEAKED_KEY: apiKey,
      LEAKED_PW: PG_PASSWORD,
      LEAKED_S3: S3_SECRET,
    }),
  );
  processes.push(api, worker, leakyWorker);
  await Promise.all([
    waitForHealth(baseUrl, api),
    waitForOutput(worker, / on queue /),
    waitForOutput(leakyWorker, / on queue /),
  ]);
  modelId = (await client.models.register({ path: modelDir, name: 'tiny' })).id;
  const form = new FormData();
  form.set(
    'file',
    new Blob([['one fish', 'two fish', 'red fish', 'blue fish'].map((text) => JSON.stringify({ text })).join('\n')]),
    'train.jsonl',
  );
  const upload = await fetch(`${baseUrl}/v1/datasets`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}` },
    body: form,
  });
  expect(upload.status).toBe(200);
  trainingFile = ((await upload.json()) as { id: string }).id;
}, 120_000);

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGTERM', 3_000)));
  await db?.destroy();
  await services?.drop();
  dir?.remove();
}, 60_000);

describe('hardening with real processes', () => {
  const waitForJob = (...args: Parameters<ReturnType<typeof jobWaiter>>) => jobWaiter(client, logs, 150)(...args);

  it("fails a job too large for the worker's memory with insufficient_memory, then runs the next job", async () => {
    const huge = await client.jobs.create(job(4096, 4096));
    const failed = await waitForJob(huge.id, 'failed', (j) => FINISHED.has(j.status));
    expect(failed.status, logs()).toBe('failed');
    expect(failed.error).toMatchObject({
      code: 'insufficient_memory',
      param: 'hyperparameters.training.micro_batch_size',
    });
    expect(failed.error!.message).toMatch(/training needs about [\d.]+ GiB .* of memory; [\d.]+ GiB is free/);
    expect(failed.steps_completed).toBe(0);

    const small = await client.jobs.create(job(2, 16));
    const done = await waitForJob(small.id, 'succeeded', (j) => FINISHED.has(j.status), 120_000);
    expect(done.status, logs()).toBe('succeeded');
  }, 180_000);

  it('prints no secret of its environment, and stores none in job events', async () => {
    // A runner that prints every secret it has and fails with them in its message.
    const leaky = await client.jobs.create({ ...job(2, 16), accelerator: 'leaky' });
    const failed = await waitForJob(leaky.id, 'failed', (j) => FINISHED.has(j.status));
    expect(failed.status, logs()).toBe('failed');
    expect(failed.error!.message).toContain('[redacted]');
    const leakyOutput = processes.find((p) => p.name === 'leaky worker')!.output();
    expect(leakyOutput).toContain('runner sees [] pw [redacted] s3 [redacted]');
    expect(leakyOutput).toContain('Bearer [redacted]');

    // Requests carrying keys, good and bad, in the Authorization header.
    const forged = `et_0123456789${'Z'.repeat(32)}`;
    expect((await fetch(`${baseUrl}/v1/jobs`, { headers: { authorization: `Bearer ${forged}` } })).status).toBe(401);
    expect((await fetch(`${baseUrl}/v1/jobs`, { headers: { authorization: `Bearer ${apiKey}` } })).status).toBe(200);
    const events = (
      await Promise.all(
        (await client.jobs.list({ limit: 100 })).data.map((j) => client.jobs.events(j.id, { limit: 1000 })),
      )
    ).flatMap((page) => page.data);
    expect(events.length).toBeGreaterThan(0);
    const everything = [logs(), ...processes.map((p) => p.output()), JSON.stringify(events)].join('\n');
    for (const secret of [PG_PASSWORD, S3_SECRET, apiKey.slice(13), forged.slice(13)])
      expect(everything.includes(secret), `a secret leaked:\n${everything.slice(-2000)}`).toBe(false);
  });
});
