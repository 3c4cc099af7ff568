/** Metrics, checkpoints, events, resume, live SSE and the typed client, on rows a worker would write. */
import {
  checkpointSchema,
  createExpertuneClient,
  ExpertuneApiError,
  type Job,
  jobChangeSchema,
  jobEventSchema,
  jobSchema,
  metricSeriesListSchema,
  trainQueueName,
} from '@expertune/contracts';
import { Checkpoint, Dataset, insertMetrics, Job as JobRow, Model } from '@expertune/db';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { jobEventChannel, QueueService } from '../src/queue/queue.service.js';
import { createTestEnvironment, type RunningApi, startApi, type TestEnvironment } from './harness.js';

let environment: TestEnvironment;
let api: RunningApi;
let client: ReturnType<typeof createExpertuneClient>;
let queue: Queue;
let modelId: string;
let datasetId: string;

beforeAll(async () => {
  environment = await createTestEnvironment();
  api = await startApi(environment);
  client = createExpertuneClient({ baseUrl: api.baseUrl, apiKey: await api.key(['launch']) });
  queue = new Queue(trainQueueName('cpu'), {
    connection: { url: api.config.redisUrl },
    prefix: api.config.queuePrefix,
  });
  const model = await api.dataSource.getRepository(Model).save({
    name: 'seeded',
    path: '/models/seeded',
    config: { architectures: ['LlamaForCausalLM'] },
    parameterCount: 1000,
  });
  const dataset = await api.dataSource.getRepository(Dataset).save({
    name: 'seeded',
    filename: 'seeded.jsonl',
    storageKey: 'datasets/seeded.jsonl',
    bytes: 10,
    sha256: 'c'.repeat(64),
    rows: 1,
    stats: { rows: 1 },
    preview: [],
  });
  modelId = model.id;
  datasetId = dataset.id;
});
afterAll(async () => {
  await queue?.obliterate({ force: true }).catch(() => undefined);
  await queue?.close();
  await api?.close();
  await environment?.drop();
});

describe('a job a worker has run', () => {
  let job: Job;

  beforeAll(async () => {
    job = await client.jobs.create({ model: modelId, training_file: datasetId, method: 'lora' });
    // What the worker writes: progress, 100 steps of loss and lr, two checkpoints, a failure.
    await insertMetrics(
      api.dataSource,
      Array.from({ length: 100 }, (_, i) => [
        { jobId: job.id, name: 'train_loss', step: i + 1, value: 3 - i * 0.01 },
        { jobId: job.id, name: 'lr', step: i + 1, value: 2e-4 },
      ]).flat(),
    );
    await api.dataSource.getRepository(Checkpoint).save([
      { jobId: job.id, step: 50, storageKey: `checkpoints/${job.id}/step-50`, evalLoss: 2.6 },
      { jobId: job.id, step: 100, storageKey: `checkpoints/${job.id}/step-100`, evalLoss: null },
    ]);
    await queue.remove(job.id);
    await api.dataSource.getRepository(JobRow).update(
      { id: job.id },
      {
        status: 'failed',
        stepsCompleted: 100,
        totalSteps: 200,
        tokensProcessed: 51_200,
        attempt: 1,
        startedAt: new Date(),
        finishedAt: new Date(),
        error: { code: 'worker_lost', message: 'the worker stopped heartbeating' },
      },
    );
  });

  it('answers in the shapes the contracts declare', async () => {
    expect(jobSchema.parse(await client.jobs.get(job.id)).id).toBe(job.id);
    expect(metricSeriesListSchema.safeParse(await client.jobs.metrics(job.id)).success).toBe(true);
    for (const checkpoint of (await client.jobs.checkpoints(job.id)).data) checkpointSchema.parse(checkpoint);
    for (const event of (await client.jobs.events(job.id)).data) jobEventSchema.parse(event);
  });

  it('reports progress, the error and the latest metrics', async () => {
    const fetched = await client.jobs.get(job.id);
    expect(fetched).toMatchObject({
      status: 'failed',
      steps_completed: 100,
      total_steps: 200,
      tokens_processed: 51_200,
      queue_position: null,
      error: { code: 'worker_lost', message: 'the worker stopped heartbeating', param: null },
      latest_metrics: { train_loss: 3 - 99 * 0.01, lr: 2e-4 },
    });
  });

  it('serves metric series downsampled to max_points, by name and step range', async () => {
    const all = await client.jobs.metrics(job.id, { max_points: 10 });
    expect(all.data.map((s) => s.name)).toEqual(['lr', 'train_loss']);
    const loss = all.data.find((s) => s.name === 'train_loss')!;
    expect(loss.steps.length).toBeLessThanOrEqual(10);
    expect(loss.steps.at(-1)).toBe(100);
    expect(loss.downsampled).toBe(true);
    const range = await client.jobs.metrics(job.id, { names: 'train_loss', from: 10, to: 12 });
    expect(range.data).toEqual([
      {
        name: 'train_loss',
        steps: [10, 11, 12],
        values: [3 - 9 * 0.01, 3 - 10 * 0.01, 3 - 11 * 0.01],
        downsampled: false,
      },
    ]);
  });

  it('lists checkpoints, newest first, with their metrics', async () => {
    const list = await client.jobs.checkpoints(job.id);
    expect(list.data.map((c) => c.step_number)).toEqual([100, 50]);
    expect(list.data[1]!.metrics).toMatchObject({ valid_loss: 2.6, train_loss: 3 - 49 * 0.01 });
  });

  it('resumes a failed job from its latest checkpoint as a queued job back in the queue', async () => {
    const checkpoints = await client.jobs.checkpoints(job.id);
    const resumed = await client.jobs.resume(job.id);
    expect(resumed).toMatchObject({
      status: 'queued',
      error: null,
      finished_at: null,
      resumed_from: checkpoints.data[0]!.id,
    });
    const queued = await queue.getJob(job.id);
    expect(queued?.data).toEqual({ jobId: job.id, resumeFromCheckpointId: checkpoints.data[0]!.id });
  });

  it('refuses to resume a queued job with 409, and an unknown checkpoint with 404', async () => {
    await expect(client.jobs.resume(job.id)).rejects.toMatchObject({ status: 409 });
    await api.dataSource.getRepository(JobRow).update({ id: job.id }, { status: 'cancelled' });
    const error = await client.jobs
      .resume(job.id, { checkpoint: '00000000-0000-0000-0000-000000000000' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ExpertuneApiError);
    expect((error as ExpertuneApiError).error).toMatchObject({ code: 'not_found', param: 'checkpoint' });
  });

  it('lists events oldest first with a cursor', async () => {
    const page = await client.jobs.events(job.id, { limit: 1 });
    expect(page.data.map((e) => e.message)).toEqual(['job created and queued']);
    expect(page.has_more).toBe(true);
    const rest = await client.jobs.events(job.id, { after: page.next_cursor! });
    expect(rest.data[0]!.message).toMatch(/^resume from checkpoint at step 100/);
  });
});

describe('accelerator classes', () => {
  it('lists each class with its queued and running jobs, counted in Postgres, and the workers on its queue', async () => {
    const counts: { status: string; n: number }[] = await api.dataSource.query(
      `SELECT status, count(*)::int AS n FROM jobs WHERE accelerator = 'cpu' GROUP BY status`,
    );
    const expected = (status: string) => counts.find((c) => c.status === status)?.n ?? 0;
    const before = await client.accelerators.list();
    expect(before.data).toEqual([
      {
        id: 'cpu',
        object: 'accelerator',
        queue: trainQueueName('cpu'),
        queued: expected('queued'),
        running: expected('running'),
        workers: 0,
      },
    ]);
    // A worker on the queue (not taking jobs: autorun off) is counted while it is connected.
    const worker = new Worker(trainQueueName('cpu'), async () => undefined, {
      connection: { url: api.config.redisUrl },
      prefix: api.config.queuePrefix,
      autorun: false,
    });
    try {
      await worker.waitUntilReady();
      await expect.poll(async () => (await client.accelerators.list()).data[0]!.workers).toBe(1);
    } finally {
      await worker.close();
    }
  });
});

describe('live events', () => {
  it('forwards events published on expertune:job:<id> after the replay', async () => {
    const job = await client.jobs.create({ model: modelId, training_file: datasetId });
    const response = await client.jobs.stream(job.id);
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!text.includes('job created and queued')) text += decoder.decode((await reader.read()).value);
    const publisher = new Redis(api.config.redisUrl);
    try {
      const live = {
        id: '999999',
        job_id: job.id,
        created_at: 0,
        level: 'info',
        type: 'metrics',
        message: 'live step',
        data: { step: 1 },
      };
      // The subscription is in place before the replay, so one publish is enough.
      await publisher.publish(jobEventChannel(job.id), JSON.stringify(live));
      while (!text.includes('live step')) text += decoder.decode((await reader.read()).value);
      expect(text).toContain('id: 999999');
    } finally {
      publisher.disconnect();
      await reader.cancel();
    }
  });
});

describe('changes of every job', () => {
  it("forwards this database's jobs' status, checkpoints and progress (1/s per job), and no foreign job", async () => {
    const job = await client.jobs.create({ model: modelId, training_file: datasetId });
    const foreign = '00000000-0000-4000-8000-000000000000';
    const response = await client.jobs.changes();
    expect(response.status, response.status === 200 ? '' : await response.text()).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!text.includes('changes of every job')) text += decoder.decode((await reader.read()).value);
    const publisher = new Redis(api.config.redisUrl);
    const status = (id: string, value: string) =>
      JSON.stringify({ id: '1', job_id: id, type: 'status', level: 'info', message: value, data: { status: value } });
    const metrics = (id: string, steps: number[]) =>
      JSON.stringify({
        object: 'fine_tuning.job.metrics',
        job_id: id,
        points: steps.map((step) => ({ name: 'train/loss', step, value: 1 })),
      });
    try {
      // As a worker would: the foreign job first, so its messages would arrive before ours if forwarded.
      await publisher.publish(jobEventChannel(foreign), status(foreign, 'running'));
      await publisher.publish(jobEventChannel(foreign), metrics(foreign, [1]));
      await publisher.publish(jobEventChannel(job.id), status(job.id, 'running'));
      await publisher.publish(jobEventChannel(job.id), metrics(job.id, [1, 2, 3]));
      await publisher.publish(jobEventChannel(job.id), metrics(job.id, [4])); // within the second: dropped
      await publisher.publish(
        jobEventChannel(job.id),
        JSON.stringify({ id: '2', job_id: job.id, type: 'checkpoint', level: 'info', message: 'checkpoint', data: {} }),
      );
      await publisher.publish(jobEventChannel(job.id), status(job.id, 'succeeded'));
      while (!text.includes('"succeeded"')) text += decoder.decode((await reader.read()).value);
    } finally {
      publisher.disconnect();
      await reader.cancel();
    }
    const changes = text
      .split('\n\n')
      .filter((block) => block.startsWith('event: job'))
      .map((block) => jobChangeSchema.parse(JSON.parse(block.split('\ndata: ')[1]!)));
    expect(changes).toEqual([
      { job_id: job.id, kind: 'status', status: 'running', step: null },
      { job_id: job.id, kind: 'progress', status: null, step: 3 },
      { job_id: job.id, kind: 'checkpoint', status: null, step: null },
      { job_id: job.id, kind: 'status', status: 'succeeded', step: null },
    ]);
  });
});

describe('after a Redis outage', () => {
  it('enqueues queued rows that never reached the queue', async () => {
    const row = await api.dataSource.getRepository(JobRow).save({
      status: 'queued',
      method: 'lora',
      baseModelId: modelId,
      trainingDatasetId: datasetId,
      config: {},
      seed: 0,
      accelerator: 'cpu',
    });
    expect(await queue.getJob(row.id)).toBeUndefined();
    expect(await api.app.get(QueueService).requeueMissing()).toBeGreaterThanOrEqual(1);
    expect((await queue.getJob(row.id))?.data).toEqual({ jobId: row.id });
  });
});
