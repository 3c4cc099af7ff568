/**
 * Scale-out on one machine: the built API and three worker processes of two accelerator classes
 * (`cpu` ×2, `cpu-b` ×1; a worker's class is its EXPERTUNE_ACCELERATOR, its queue `train-<class>`)
 * on the real Postgres and Redis, 12 jobs on the embedded model. What a deployment with many
 * workers relies on: a job runs only on a worker of its class, never twice, and all finish; a
 * class with no free worker leaves its jobs visibly queued; a worker stopped with SIGTERM (what
 * Kubernetes sends on a rollout or a scale-in) checkpoints its job and another worker of the same
 * class resumes it.
 */
import { join } from 'node:path';

import { createExpertuneClient, type ExpertuneClient, type Job, type JobCreateRequest } from '@expertune/contracts';
import { connect, createApiKey, createDataSource } from '@expertune/db';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  apiMain,
  createThrowawayServices,
  ensureAppBuilt,
  freePort,
  jobWaiter,
  REDIS_URL,
  repoRoot,
  type ServiceProcess,
  startNodeProcess,
  temporaryDirectory,
  type ThrowawayServices,
  waitForHealth,
  waitForOutput,
  workerBin,
} from './helpers.js';

const MODEL_DIR = join(repoRoot, 'models', 'expertune-tiny-en');
const ROWS = ['one fish', 'two fish', 'red fish', 'blue fish', 'old fish', 'new fish', 'big cat', 'small cat'];
const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
/** Steps of the job whose worker is stopped: long enough to still be running when SIGTERM arrives. */
const DRAIN_STEPS = 500;

let services: ThrowawayServices | undefined;
let dir: ReturnType<typeof temporaryDirectory> | undefined;
let db: DataSource | undefined;
const processes: ServiceProcess[] = [];
const workers = new Map<string, ServiceProcess>();
let baseUrl: string;
let client: ExpertuneClient;
let modelId: string;
let trainingFile: string;

function servicesEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: services!.databaseUrl,
    REDIS_URL,
    EXPERTUNE_DATA_DIR: join(dir!.path, 'data'),
    EXPERTUNE_QUEUE_PREFIX: services!.queuePrefix,
  };
}

async function startWorker(id: string, accelerator: string): Promise<ServiceProcess> {
  const worker = startNodeProcess(id, workerBin, {
    ...servicesEnv(),
    EXPERTUNE_ACCELERATOR: accelerator,
    EXPERTUNE_WORKER_ID: id,
    EXPERTUNE_HEARTBEAT_MS: '300',
    EXPERTUNE_METRIC_FLUSH_MS: '200',
    EXPERTUNE_TRAINER_THREADS: '1',
  });
  processes.push(worker);
  workers.set(id, worker);
  await waitForOutput(worker, / on queue /);
  return worker;
}

const logs = () => processes.map((p) => `--- ${p.name}\n${p.output().slice(-3000)}`).join('\n');

function job(accelerator: string, steps: number, checkpointEvery = 0): JobCreateRequest {
  return {
    model: modelId,
    training_file: trainingFile,
    validation_file: null,
    method: 'lora',
    accelerator,
    seed: 1,
    hyperparameters: {
      lora: { rank: 2, target_modules: ['q_proj', 'v_proj'] },
      data: { max_seq_len: 16 },
      training: { max_steps: steps, micro_batch_size: 2, checkpoint_every: checkpointEvery, eval_every: 0 },
    },
  };
}

const waitForJob = (...args: Parameters<ReturnType<typeof jobWaiter>>) => jobWaiter(client, logs, 100)(...args);

interface Attempt {
  job_id: string;
  attempt: number;
  worker_id: string;
  outcome: string | null;
  resumed_from_step: number | null;
}

const attemptsOf = async (ids: string[]): Promise<Attempt[]> =>
  (await db!.query(
    `SELECT job_id, attempt, worker_id, outcome, resumed_from_step FROM job_attempts
      WHERE job_id = ANY($1::uuid[]) ORDER BY job_id, attempt`,
    [ids],
  )) as Attempt[];

beforeAll(async () => {
  ensureAppBuilt('api');
  ensureAppBuilt('worker');
  services = await createThrowawayServices('multiworker');
  dir = temporaryDirectory('multiworker');
  db = await connect(createDataSource({ url: services.databaseUrl, poolSize: 2 }));
  const apiKey = (await createApiKey(db, { name: 'multi-worker test', scopes: ['launch'] })).key;
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  client = createExpertuneClient({ baseUrl, apiKey });
  const api = startNodeProcess('api', apiMain, {
    ...servicesEnv(),
    EXPERTUNE_ACCELERATORS: 'cpu,cpu-b',
    EXPERTUNE_RATE_LIMIT_PER_MINUTE: '0',
    PORT: String(port),
    HOST: '127.0.0.1',
  });
  processes.push(api);
  // The cpu-b worker starts later, inside the test: first its class has no worker at all.
  await Promise.all([waitForHealth(baseUrl, api), startWorker('cpu-1', 'cpu'), startWorker('cpu-2', 'cpu')]);

  modelId = (await client.models.register({ path: MODEL_DIR, name: 'expertune-tiny-en' })).id;
  const form = new FormData();
  form.set('model', modelId);
  form.set('file', new Blob([ROWS.map((text) => JSON.stringify({ text })).join('\n') + '\n']), 'train.jsonl');
  const response = await fetch(`${baseUrl}/v1/datasets`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}` },
    body: form,
  });
  const body = (await response.json()) as { id: string };
  expect(response.status, JSON.stringify(body)).toBe(200);
  trainingFile = body.id;
}, 120_000);

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGTERM', 3_000)));
  await db?.destroy();
  await services?.drop();
  dir?.remove();
}, 60_000);

describe('many workers on queues per accelerator class', () => {
  it('runs 12 jobs on two classes: each on a worker of its class, exactly once, all succeed; a class without a free worker shows its jobs queued with positions', async () => {
    // cpu-b first, while no cpu-b worker exists: they must wait, in order, visibly.
    const cpuB: Job[] = [];
    for (let i = 0; i < 4; i++) cpuB.push(await client.jobs.create(job('cpu-b', 6 + i)));
    const cpu: Job[] = [];
    for (let i = 0; i < 8; i++) cpu.push(await client.jobs.create(job('cpu', 6 + i)));

    const waiting = await Promise.all(cpuB.map((j) => client.jobs.get(j.id)));
    expect(waiting.map((j) => [j.status, j.queue_position])).toEqual([
      ['queued', 0],
      ['queued', 1],
      ['queued', 2],
      ['queued', 3],
    ]);

    await startWorker('cpu-b-1', 'cpu-b');
    const all = [...cpu, ...cpuB];
    const done = await Promise.all(
      all.map((j) => waitForJob(j.id, 'to finish', (current) => FINISHED.has(current.status), 80_000)),
    );
    expect(
      done.map((j) => j.status),
      logs(),
    ).toEqual(all.map(() => 'succeeded'));
    for (const [index, finished] of done.entries()) {
      expect(finished.accelerator).toBe(index < cpu.length ? 'cpu' : 'cpu-b');
      expect(finished.steps_completed).toBe(finished.total_steps);
      expect(finished.attempt).toBe(1);
    }

    const attempts = await attemptsOf(all.map((j) => j.id));
    // Exactly one attempt per job: nothing ran twice.
    expect(attempts.map((a) => a.job_id).sort()).toEqual(all.map((j) => j.id).sort());
    const classOf = new Map(all.map((j) => [j.id, j.accelerator]));
    for (const attempt of attempts) {
      expect(attempt.outcome).toBe('succeeded');
      const expected = classOf.get(attempt.job_id) === 'cpu' ? ['cpu-1', 'cpu-2'] : ['cpu-b-1'];
      expect(expected, `job ${attempt.job_id} ran on ${attempt.worker_id}`).toContain(attempt.worker_id);
    }
    // Both cpu workers took part: the queue spreads work, it does not pin it.
    expect(new Set(attempts.filter((a) => classOf.get(a.job_id) === 'cpu').map((a) => a.worker_id)).size).toBe(2);
  }, 100_000);

  it('a worker stopped with SIGTERM checkpoints its job, which the other worker of its class resumes to success', async () => {
    const created = await client.jobs.create(job('cpu', DRAIN_STEPS, 10));
    const running = await waitForJob(
      created.id,
      'running past its first checkpoint',
      (current) => current.status === 'running' && current.steps_completed >= 15,
    );
    const [first] = await attemptsOf([created.id]);
    const stopped = workers.get(first!.worker_id)!;
    expect(running.steps_completed).toBeLessThan(DRAIN_STEPS);

    await stopped.stop('SIGTERM', 30_000);
    expect(await stopped.exited, stopped.output()).toEqual({ code: 0, signal: null });

    const done = await waitForJob(created.id, 'to finish on the other worker', (current) =>
      FINISHED.has(current.status),
    );
    expect(done, logs()).toMatchObject({ status: 'succeeded', steps_completed: DRAIN_STEPS, attempt: 2 });
    const attempts = await attemptsOf([created.id]);
    expect(attempts).toHaveLength(2);
    expect(attempts[0]).toMatchObject({ worker_id: first!.worker_id, outcome: 'interrupted' });
    const other = first!.worker_id === 'cpu-1' ? 'cpu-2' : 'cpu-1';
    expect(attempts[1]).toMatchObject({ worker_id: other, outcome: 'succeeded' });
    expect(attempts[1]!.resumed_from_step).toBeGreaterThanOrEqual(10);
    // The resumed run continued from the checkpoint: every step's loss stored exactly once.
    const rows = (await db!.query(
      `SELECT count(*)::int AS n, count(DISTINCT step)::int AS steps, min(step)::int AS first, max(step)::int AS last
         FROM metrics WHERE job_id = $1 AND name = 'train/loss'`,
      [created.id],
    )) as { n: number; steps: number; first: number; last: number }[];
    expect(rows[0]).toEqual({ n: DRAIN_STEPS, steps: DRAIN_STEPS, first: 1, last: DRAIN_STEPS });
  }, 90_000);
});
