/**
 * The job API across processes: the built API (`node apps/api/dist/main.js`) and worker
 * (`apps/worker/bin/worker.js`) run as separate processes on the real Postgres (a throwaway,
 * migrated database) and Redis (a queue prefix of this run), and the test talks HTTP only, with
 * fetch and the typed client: a job's whole life on a tiny random model (upload → create → train →
 * metrics and the SSE stream → adapter tar → `expertune logits --adapter`), a cancel during
 * training, a restart of the API during a run (the stream resumes with Last-Event-ID), and a
 * worker killed with SIGKILL mid-run.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  createExpertuneClient,
  type ExpertuneClient,
  type JobCreateRequest,
  type JobEvent,
} from '@expertune/contracts';
import { connect, createApiKey, createDataSource } from '@expertune/db';
import { initRandomModel } from '@expertune/trainer';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  apiMain,
  createThrowawayServices,
  digestDirectory,
  ensureAppBuilt,
  freePort,
  jobWaiter,
  readSse,
  REDIS_URL,
  runCliOk,
  type ServiceProcess,
  startNodeProcess,
  temporaryDirectory,
  type ThrowawayServices,
  waitForHealth,
  waitForOutput,
  waitUntil,
  workerBin,
} from './helpers.js';

/**
 * Steps of the jobs that must still be running when the test acts on them: a cancel after a few
 * steps, an API restart (a few seconds) after the first checkpoint, a worker kill after step 25.
 */
const CANCEL_STEPS = 2000;
const RESTART_STEPS = 6000;
const KILL_STEPS = 400;
const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

const ROWS = ['one fish', 'two fish', 'red fish', 'blue fish', 'old fish', 'new fish', 'big cat', 'small cat'];
const jsonl = (texts: string[]) => texts.map((text) => JSON.stringify({ text })).join('\n') + '\n';

let services: ThrowawayServices | undefined;
let dir: ReturnType<typeof temporaryDirectory> | undefined;
let db: DataSource | undefined;
const processes: ServiceProcess[] = [];
let api: ServiceProcess;
let worker: ServiceProcess;
let port: number;
let baseUrl: string;
let apiKey: string;
let client: ExpertuneClient;
let modelId: string;
let modelDir: string;
let trainingFile: string;
let validationFile: string;
let workers = 0;

/** What the API and the workers share: the database, Redis, the data directory and the queue prefix. */
function servicesEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: services!.databaseUrl,
    REDIS_URL,
    EXPERTUNE_DATA_DIR: join(dir!.path, 'data'),
    EXPERTUNE_QUEUE_PREFIX: services!.queuePrefix,
  };
}

function apiEnv(): NodeJS.ProcessEnv {
  return {
    ...servicesEnv(),
    EXPERTUNE_ACCELERATORS: 'cpu',
    EXPERTUNE_RATE_LIMIT_PER_MINUTE: '0',
    PORT: String(port),
    HOST: '127.0.0.1',
  };
}

function workerEnv(): NodeJS.ProcessEnv {
  workers += 1;
  return {
    ...servicesEnv(),
    EXPERTUNE_ACCELERATOR: 'cpu',
    EXPERTUNE_WORKER_ID: `lifecycle-worker-${workers}`,
    // Short heartbeats and locks: a killed worker's job is picked up again within seconds.
    EXPERTUNE_HEARTBEAT_MS: '300',
    EXPERTUNE_STALE_AFTER_MS: '2000',
    EXPERTUNE_LOCK_DURATION_MS: '2000',
    EXPERTUNE_STALLED_INTERVAL_MS: '1000',
    EXPERTUNE_METRIC_FLUSH_MS: '200',
    EXPERTUNE_TRAINER_THREADS: '1',
  };
}

async function startApi(): Promise<ServiceProcess> {
  const started = startNodeProcess('api', apiMain, apiEnv());
  processes.push(started);
  await waitForHealth(baseUrl, started);
  return started;
}

async function startWorker(): Promise<ServiceProcess> {
  const started = startNodeProcess(`worker ${workers + 1}`, workerBin, workerEnv());
  processes.push(started);
  await waitForOutput(started, / on queue /);
  return started;
}

/** The processes' output, for a failing assertion's message. */
const logs = () => processes.map((p) => `--- ${p.name}\n${p.output().slice(-4000)}`).join('\n');

async function uploadDataset(texts: string[], filename: string) {
  const form = new FormData();
  form.set('model', modelId);
  form.set('file', new Blob([jsonl(texts)]), filename);
  const response = await fetch(`${baseUrl}/v1/datasets`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}` },
    body: form,
  });
  const body = (await response.json()) as { id: string; stats: { rows: number; tokens: number | null } };
  expect(response.status, JSON.stringify(body)).toBe(200);
  return body;
}

function molaJob(
  steps: number,
  training: { eval_every?: number; checkpoint_every?: number } = {},
  validation = true,
): JobCreateRequest {
  return {
    model: modelId,
    training_file: trainingFile,
    validation_file: validation ? validationFile : null,
    method: 'mola',
    seed: 3,
    hyperparameters: {
      mola: { rank: 2, num_experts: 2, top_k: 1 },
      data: { max_seq_len: 32 },
      training: { max_steps: steps, micro_batch_size: 2, checkpoint_every: 10, eval_every: 0, ...training },
      eval: { max_generate_rows: 2 },
    },
  };
}

const waitForJob = (...args: Parameters<ReturnType<typeof jobWaiter>>) => jobWaiter(client, logs, 150)(...args);

interface Received {
  id: string;
  event: string | null;
  data: JobEvent;
}

const isTerminal = (event: JobEvent) =>
  event.type === 'status' && FINISHED.has(String((event.data as { status?: string } | null)?.status));

/**
 * Follows a job's SSE stream with a real HTTP client, appending each event to `received`, until the
 * terminal status event (resolves 'terminal'); a stream the server ends resolves 'ended', a broken
 * connection rejects.
 */
async function follow(jobId: string, received: Received[], lastEventId?: string): Promise<'terminal' | 'ended'> {
  const response = await client.jobs.stream(jobId, lastEventId);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const outcome = await readSse(response.body!, (message) => {
    expect(message.id).toMatch(/^\d+$/);
    const data = JSON.parse(message.data) as JobEvent;
    expect(data.id).toBe(message.id);
    expect(message.event).toBe(data.type);
    received.push({ id: message.id!, event: message.event, data });
    return isTerminal(data);
  });
  return outcome === 'stopped' ? 'terminal' : 'ended';
}

function expectStrictlyIncreasing(ids: string[]): void {
  for (let i = 1; i < ids.length; i++)
    expect(BigInt(ids[i]!) > BigInt(ids[i - 1]!), `event ids ${ids[i - 1]} then ${ids[i]}`).toBe(true);
}

async function storedEventIds(jobId: string): Promise<string[]> {
  const page = await client.jobs.events(jobId, { limit: 1000 });
  expect(page.has_more).toBe(false);
  return page.data.map((event) => event.id);
}

async function trainLossSteps(jobId: string): Promise<number[]> {
  const series = await client.jobs.metrics(jobId, { names: 'train/loss', max_points: 10_000 });
  const loss = series.data.find((s) => s.name === 'train/loss');
  expect(loss?.downsampled).toBe(false);
  return loss!.steps;
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

beforeAll(async () => {
  ensureAppBuilt('api');
  ensureAppBuilt('worker');
  services = await createThrowawayServices('lifecycle');
  dir = temporaryDirectory('lifecycle');
  mkdirSync(join(dir.path, 'data'), { recursive: true });
  modelDir = join(dir.path, 'models', 'tiny');
  initRandomModel(modelDir, 'tiny', 11);
  db = await connect(createDataSource({ url: services.databaseUrl, poolSize: 2 }));
  apiKey = (await createApiKey(db, { name: 'job-lifecycle test', scopes: ['launch'] })).key;
  port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  client = createExpertuneClient({ baseUrl, apiKey });
  [api, worker] = await Promise.all([startApi(), startWorker()]);

  const model = await client.models.register({ path: modelDir, name: 'tiny' });
  modelId = model.id;
  const training = await uploadDataset(ROWS, 'train.jsonl');
  expect(training.stats).toMatchObject({ rows: ROWS.length, tokens: expect.any(Number) });
  expect(training.stats.tokens).toBeGreaterThan(0);
  trainingFile = training.id;
  validationFile = (await uploadDataset(ROWS.slice(0, 3), 'validation.jsonl')).id;
}, 120_000);

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGTERM', 3_000)));
  await db?.destroy();
  await services?.drop();
  dir?.remove();
}, 60_000);

describe('the job API with real API and worker processes', () => {
  it('runs a job from upload to a downloaded adapter that `expertune logits` loads, streaming its events over SSE', async () => {
    const steps = 30;
    const created = await client.jobs.create(molaJob(steps, { eval_every: 10 }));
    expect(created).toMatchObject({ status: 'queued', method: 'mola', model: modelId, training_file: trainingFile });
    expect(created.hyperparameters.training).toMatchObject({ max_steps: steps, checkpoint_every: 10 });

    const received: Received[] = [];
    expect(await follow(created.id, received)).toBe('terminal');
    expectStrictlyIncreasing(received.map((r) => r.id));
    expect(received.map((r) => r.id)).toEqual(await storedEventIds(created.id));
    const statuses = received
      .filter((r) => r.data.type === 'status')
      .map((r) => (r.data.data as { status?: string } | null)?.status);
    expect(statuses[0]).toBe('queued');
    expect(statuses).toContain('running');
    expect(statuses.at(-1)).toBe('succeeded');
    expect(received.filter((r) => r.event === 'checkpoint').length).toBeGreaterThanOrEqual(1);
    expect(received.filter((r) => r.event === 'metrics').length).toBeGreaterThanOrEqual(1); // the evaluations

    const job = await client.jobs.get(created.id);
    expect(job, logs()).toMatchObject({ status: 'succeeded', steps_completed: steps, total_steps: steps, error: null });
    expect(job.tokens_processed).toBeGreaterThan(0);
    expect(job.latest_metrics['train/loss']).toEqual(expect.any(Number));
    expect(await trainLossSteps(created.id)).toEqual(range(1, steps));
    const evalLoss = (await client.jobs.metrics(created.id, { names: 'eval/loss' })).data[0]!;
    expect(evalLoss.steps).toEqual([10, 20, 30]);
    expect((await client.jobs.checkpoints(created.id)).data.length).toBeGreaterThanOrEqual(1);

    expect(job.result_adapter).toEqual(expect.any(String));
    const adapter = await client.adapters.get(job.result_adapter!);
    expect(adapter).toMatchObject({ job_id: created.id, method: 'mola' });
    const download = await client.adapters.download(adapter.id);
    expect(download.headers.get('content-type')).toBe('application/x-tar');
    const tarFile = join(dir!.path, 'adapter.tar');
    writeFileSync(tarFile, Buffer.from(await download.arrayBuffer()));
    const unpacked = join(dir!.path, 'adapter');
    mkdirSync(unpacked);
    execFileSync('tar', ['-xf', tarFile, '-C', unpacked]);
    for (const file of adapter.files ?? []) expect(existsSync(join(unpacked, file)), file).toBe(true);
    expect(digestDirectory(unpacked)).toBe(adapter.sha256);

    const out = join(dir!.path, 'logits.safetensors');
    runCliOk(['logits', '--model', modelDir, '--adapter', unpacked, '--ids', '1,2,3', '--out', out]);
    expect(statSync(out).size).toBeGreaterThan(0);
  }, 60_000);

  it('cancels a job during training: cancelled, a checkpoint kept, and the worker runs the next job', async () => {
    const created = await client.jobs.create(molaJob(CANCEL_STEPS, {}, false));
    await waitForJob(created.id, 'a few steps', (job) => job.status === 'running' && job.steps_completed >= 3);
    const answer = await client.jobs.cancel(created.id);
    expect(answer.cancel_requested || answer.status === 'cancelled').toBe(true);
    const cancelled = await waitForJob(created.id, 'to stop', (job) => FINISHED.has(job.status));
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.cancel_requested).toBe(false);
    expect(cancelled.steps_completed).toBeLessThan(CANCEL_STEPS);
    const checkpoints = (await client.jobs.checkpoints(created.id)).data;
    expect(checkpoints.length).toBeGreaterThanOrEqual(1);
    expect(Math.max(...checkpoints.map((c) => c.step_number))).toBe(cancelled.steps_completed);

    const next = await client.jobs.create(molaJob(5, {}, false));
    const done = await waitForJob(next.id, 'to finish', (job) => FINISHED.has(job.status));
    expect(done.status).toBe('succeeded');
  }, 60_000);

  it('keeps a run going while the API restarts; the stream resumes from Last-Event-ID with no event lost or repeated', async () => {
    const created = await client.jobs.create(molaJob(RESTART_STEPS, {}, false));
    const received: Received[] = [];
    const firstStream = follow(created.id, received).then(
      (outcome) => outcome,
      () => 'broken' as const,
    );
    await waitUntil('a checkpoint event on the stream', () => received.some((r) => r.event === 'checkpoint'), 60_000);
    expect((await client.jobs.get(created.id)).status).toBe('running');

    api.child.kill('SIGKILL');
    await api.exited;
    expect(await firstStream).not.toBe('terminal');
    const before = received.length;
    const lastId = received.at(-1)!.id;
    api = await startApi();
    // Restarted during the run: the worker never needed the API.
    expect((await client.jobs.get(created.id)).status, 'the job finished before the API was back').toBe('running');

    // The worker went on meanwhile: the new stream has stored events to replay before the live ones.
    const missed = await client.jobs.events(created.id, { after: lastId, limit: 1000 });
    expect(missed.data.length, 'events stored while no stream was open').toBeGreaterThan(0);
    expect(await follow(created.id, received, lastId)).toBe('terminal');
    expect(received.length).toBeGreaterThan(before);
    const ids = received.map((r) => r.id);
    expectStrictlyIncreasing(ids);
    expect(ids).toEqual(await storedEventIds(created.id));
    expect((received.at(-1)!.data.data as { status?: string }).status).toBe('succeeded');
    const job = await client.jobs.get(created.id);
    expect(job).toMatchObject({ status: 'succeeded', steps_completed: RESTART_STEPS, attempt: 1 });
  }, 90_000);

  it('resumes a job whose worker was killed (SIGKILL) on another worker; every train/loss step stored once', async () => {
    const created = await client.jobs.create(molaJob(KILL_STEPS, {}, false));
    await waitForJob(created.id, 'a checkpoint', (job) => job.status === 'running' && job.steps_completed >= 25);
    worker.child.kill('SIGKILL');
    await worker.exited;
    worker = await startWorker();
    const done = await waitForJob(created.id, 'to finish', (job) => FINISHED.has(job.status), 90_000);
    expect(done).toMatchObject({ status: 'succeeded', steps_completed: KILL_STEPS, attempt: 2 });
    expect(await trainLossSteps(created.id)).toEqual(range(1, KILL_STEPS));
    const rows = (await db!.query(
      `SELECT count(*)::int AS n, count(DISTINCT step)::int AS steps FROM metrics WHERE job_id = $1 AND name = 'train/loss'`,
      [created.id],
    )) as { n: number; steps: number }[];
    expect(rows[0]).toEqual({ n: KILL_STEPS, steps: KILL_STEPS });
    const attempts = (await db!.query(
      'SELECT worker_id, outcome, resumed_from_step FROM job_attempts WHERE job_id = $1 ORDER BY attempt',
      [created.id],
    )) as { worker_id: string; outcome: string; resumed_from_step: number | null }[];
    expect(attempts).toHaveLength(2);
    expect(attempts[1]).toMatchObject({ outcome: 'succeeded' });
    expect(attempts[1]!.resumed_from_step).toBeGreaterThanOrEqual(10);
    expect(attempts[1]!.worker_id).not.toBe(attempts[0]!.worker_id);
  }, 120_000);
});
