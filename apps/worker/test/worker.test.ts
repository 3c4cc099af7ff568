import { execFileSync, spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Job as QueueJob } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { digestDirectory } from '../src/job-files.js';
import { CANCEL_CHANNEL, jobChannel } from '../src/settings.js';
import { TrainingWorker } from '../src/worker.js';
import { createHarness, REDIS_URL, waitFor, type Harness } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(here, '../../../libs/trainer/bin/expertune.js');
const WORKER_BIN = path.resolve(here, '../bin/worker.js');

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

const mola = (maxSteps: number, training: Record<string, unknown> = {}) => ({
  method: 'mola',
  mola: { rank: 2, num_experts: 2, top_k: 1 },
  data: { max_seq_len: 32 },
  training: { max_steps: maxSteps, micro_batch_size: 2, checkpoint_every: 5, eval_every: 10, ...training },
  eval: { max_generate_rows: 2 },
});

let prefixes = 0;
const uniquePrefix = () => `expertune-test-${process.pid}-${Date.now().toString(36)}-${prefixes++}`;

async function jobRow(id: string) {
  const [row] = (await h.db.query('SELECT * FROM jobs WHERE id = $1', [id])) as Record<string, unknown>[];
  return row!;
}

async function startWorker(prefix: string): Promise<TrainingWorker> {
  const worker = new TrainingWorker(h.settings(prefix));
  await worker.start();
  return worker;
}

async function stepsOf(jobId: string, name: string): Promise<number[]> {
  const rows = (await h.db.query('SELECT step FROM metrics WHERE job_id = $1 AND name = $2 ORDER BY step', [
    jobId,
    name,
  ])) as { step: number }[];
  return rows.map((r) => r.step);
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('the training worker', () => {
  it('trains a queued job to succeeded: each step logged once, events in Postgres and on Redis, an artifact the CLI loads', async () => {
    const prefix = uniquePrefix();
    const subscriber = new Redis(REDIS_URL);
    const worker = await startWorker(prefix);
    try {
      const jobId = await h.submit(prefix, mola(20));
      const published: { object: string; id?: string; type?: string; data?: { status?: string } }[] = [];
      subscriber.on('message', (_channel: string, message: string) => published.push(JSON.parse(message)));
      await subscriber.subscribe(jobChannel(jobId));
      const done = await waitFor('the job to finish', async () => {
        const row = await jobRow(jobId);
        return ['succeeded', 'failed', 'cancelled'].includes(String(row.status)) && row;
      });
      expect(done.error).toBeNull();
      expect(done.status).toBe('succeeded');
      expect(done).toMatchObject({ steps_completed: 20, total_steps: 20, attempt: 1 });
      expect(Number(done.tokens_processed)).toBeGreaterThan(0);

      for (const name of ['train/loss', 'train/lr', 'train/grad_norm', 'train/tokens_per_second', 'train/aux_total'])
        expect(await stepsOf(jobId, name), name).toEqual(range(1, 20));
      expect(await stepsOf(jobId, 'eval/loss')).toEqual([10, 20]);
      // Routing of every step, per layer: two experts of top-1, so the loads of a layer sum to 1.
      for (const name of ['routing/load/0/0', 'routing/load/1/1', 'routing/entropy/0'])
        expect(await stepsOf(jobId, name), name).toEqual(range(1, 20));
      const loads = (await h.db.query(
        `SELECT step, sum(value) AS total FROM metrics WHERE job_id = $1 AND name LIKE 'routing/load/0/%' GROUP BY step`,
        [jobId],
      )) as { total: number }[];
      for (const { total } of loads) expect(Number(total)).toBeCloseTo(1, 5);
      const [sum] = (await h.db.query(
        `SELECT sum(value)::bigint AS tokens FROM metrics WHERE job_id = $1 AND name = 'train/tokens'`,
        [jobId],
      )) as { tokens: string }[];
      expect(Number(done.tokens_processed)).toBe(Number(sum!.tokens));

      const events = (await h.db.query('SELECT type, level, data FROM job_events WHERE job_id = $1 ORDER BY id', [
        jobId,
      ])) as { type: string; data: { status?: string; step?: number } | null }[];
      expect(events[0]).toMatchObject({ type: 'status', data: { status: 'running' } });
      expect(events.at(-1)).toMatchObject({ type: 'status', data: { status: 'succeeded' } });
      expect(events.filter((e) => e.type === 'checkpoint').map((e) => e.data!.step)).toEqual([5, 10, 15, 20]);
      // keep_checkpoints 3 (the default) pruned step 5 on disk; the rows follow the directory.
      const checkpoints = (await h.db.query(
        'SELECT step, storage_key, eval_loss FROM checkpoints WHERE job_id = $1 ORDER BY step',
        [jobId],
      )) as { step: number; storage_key: string; eval_loss: number | null }[];
      expect(checkpoints.map((c) => c.step)).toEqual([10, 15, 20]);
      expect(checkpoints[0]!.storage_key).toBe(`jobs/${jobId}/checkpoints/step-10`);
      expect(checkpoints[0]!.eval_loss).toEqual(expect.any(Number));
      const [attempt] = (await h.db.query('SELECT * FROM job_attempts WHERE job_id = $1', [jobId])) as {
        outcome: string;
        resumed_from_step: number | null;
      }[];
      expect(attempt).toMatchObject({ outcome: 'succeeded', resumed_from_step: null });

      await waitFor('the last pub/sub message', async () =>
        published.some((m) => m.object === 'fine_tuning.job.event' && m.data?.status === 'succeeded'),
      );
      const liveEvents = published.filter((m) => m.object === 'fine_tuning.job.event');
      expect(liveEvents.map((m) => m.type)).toContain('checkpoint');
      expect(liveEvents.every((m) => /^\d+$/.test(m.id!))).toBe(true);
      expect(published.some((m) => m.object === 'fine_tuning.job.metrics')).toBe(true);
      expect(published.some((m) => m.object === 'fine_tuning.job.routing')).toBe(true);

      const [artifact] = (await h.db.query('SELECT * FROM artifacts WHERE id = $1', [done.result_artifact_id])) as {
        kind: string;
        storage_key: string;
        bytes: string;
        sha256: string;
      }[];
      expect(artifact).toMatchObject({ kind: 'adapter', storage_key: `jobs/${jobId}/export` });
      const exportDir = path.join(h.dataDir, artifact!.storage_key);
      const digest = await digestDirectory(exportDir);
      expect(artifact!.sha256).toBe(digest.sha256);
      expect(Number(artifact!.bytes)).toBe(digest.bytes);
      const out = path.join(h.dataDir, 'logits.safetensors');
      execFileSync(
        process.execPath,
        [CLI, 'logits', '--model', h.modelDir, '--adapter', exportDir, '--ids', '1,2,3', '--out', out],
        { stdio: 'pipe', env: { ...process.env, EXPERTUNE_THREADS: '1' } },
      );
      expect(existsSync(out)).toBe(true);
    } finally {
      subscriber.disconnect();
      await worker.close();
    }
  });

  it('stops a job cancelled through expertune:cancel at a checkpoint, runs the next job, and resumes the first from a chosen checkpoint', async () => {
    const prefix = uniquePrefix();
    const worker = await startWorker(prefix);
    try {
      const total = 400;
      const jobId = await h.submit(prefix, mola(total, { eval_every: 0 }), { validation: false });
      await waitFor('a few steps', async () => Number((await jobRow(jobId)).steps_completed) >= 3);
      // As the API sends it.
      await h.db.query('UPDATE jobs SET cancel_requested_at = now() WHERE id = $1', [jobId]);
      await h.redis.publish(CANCEL_CHANNEL, JSON.stringify({ job_id: jobId }));
      const row = await waitFor('the cancel', async () => {
        const r = await jobRow(jobId);
        return r.status !== 'running' && r.status !== 'queued' && r;
      });
      expect(row.status).toBe('cancelled');
      expect(row.finished_at).not.toBeNull();
      const checkpoints = (await h.db.query('SELECT step, storage_key FROM checkpoints WHERE job_id = $1', [
        jobId,
      ])) as { step: number; storage_key: string }[];
      const stoppedAt = Math.max(...checkpoints.map((c) => c.step));
      expect(stoppedAt).toBe(row.steps_completed);
      expect(stoppedAt).toBeLessThan(total);
      expect(existsSync(path.join(h.dataDir, `jobs/${jobId}/checkpoints/step-${stoppedAt}/state.json`))).toBe(true);
      const events = (await h.db.query(`SELECT data FROM job_events WHERE job_id = $1 AND type = 'status'`, [
        jobId,
      ])) as { data: { status: string } }[];
      expect(events.map((e) => e.data.status)).toEqual(['running', 'cancelled']);

      const next = await h.submit(prefix, mola(3, { eval_every: 0 }), { validation: false });
      await waitFor('the next job', async () => (await jobRow(next)).status === 'succeeded');

      // The API's resume from a chosen checkpoint: the row back to queued, the queue entry replaced.
      const [chosen] = (await h.db.query('SELECT id, step FROM checkpoints WHERE job_id = $1 ORDER BY step LIMIT 1', [
        jobId,
      ])) as { id: string; step: number }[];
      await h.db.query(
        `UPDATE jobs SET status = 'queued', error = NULL, finished_at = NULL, cancel_requested_at = NULL WHERE id = $1`,
        [jobId],
      );
      await (await QueueJob.fromId(h.queue(prefix), jobId))!.remove();
      await h.queue(prefix).add('train', { jobId, resumeFromCheckpointId: chosen!.id }, { jobId });
      await waitFor('the resumed job', async () => (await jobRow(jobId)).status === 'succeeded');
      const attempts = (await h.db.query(
        'SELECT resumed_from_step, outcome FROM job_attempts WHERE job_id = $1 ORDER BY attempt',
        [jobId],
      )) as { resumed_from_step: number | null; outcome: string }[];
      expect(attempts).toEqual([
        { resumed_from_step: null, outcome: 'cancelled' },
        { resumed_from_step: chosen!.step, outcome: 'succeeded' },
      ]);
      expect(await stepsOf(jobId, 'train/loss')).toEqual(range(1, total));
    } finally {
      await worker.close();
    }
  });

  it('fails a job with a bad config, naming the key, without retrying it; a job cancelled while queued never trains', async () => {
    const prefix = uniquePrefix();
    const worker = await startWorker(prefix);
    try {
      const jobId = await h.submit(prefix, { method: 'lora', training: { max_steps: -4 } }, { attempts: 3 });
      const row = await waitFor('the failure', async () => {
        const r = await jobRow(jobId);
        return r.status === 'failed' && r;
      });
      expect(row.error).toMatchObject({ code: 'invalid_config', param: 'training.max_steps' });
      expect((row.error as { message: string }).message).toContain('training.max_steps');
      const queueJob = await QueueJob.fromId(h.queue(prefix), jobId);
      await waitFor('BullMQ to record it', async () => (await queueJob!.getState()) === 'failed');
      const failed = await QueueJob.fromId(h.queue(prefix), jobId);
      expect(failed!.attemptsMade).toBe(1);
      expect(failed!.failedReason).toContain('training.max_steps');

      const [cancelled] = (await h.db.query(
        `INSERT INTO jobs (method, base_model_id, training_dataset_id, config, seed, cancel_requested_at)
         VALUES ('lora', $1, $2, $3, 1, now()) RETURNING id`,
        [h.modelId, h.trainDatasetId, JSON.stringify(mola(5))],
      )) as { id: string }[];
      await h.queue(prefix).add('train', { jobId: cancelled!.id }, { jobId: cancelled!.id });
      await waitFor('the cancel', async () => (await jobRow(cancelled!.id)).status === 'cancelled');
      expect((await jobRow(cancelled!.id)).attempt).toBe(0);
      expect(existsSync(path.join(h.dataDir, 'jobs', cancelled!.id))).toBe(false);
    } finally {
      await worker.close();
    }
  });

  it('hands a job back to the queue on SIGTERM after a checkpoint at the step it stopped; the next worker continues exactly there', async () => {
    const prefix = uniquePrefix();
    const total = 300;
    const jobId = await h.submit(prefix, mola(total, { eval_every: 0, checkpoint_every: 1000 }), { validation: false });
    const first = spawn(process.execPath, [WORKER_BIN], { env: h.env(prefix), stdio: 'ignore' });
    let second: TrainingWorker | null = null;
    try {
      await waitFor('a few steps', async () => Number((await jobRow(jobId)).steps_completed) >= 20);
      first.kill('SIGTERM');
      const code = await new Promise((resolve) => first.once('exit', resolve));
      expect(code).toBe(0);
      const requeued = await jobRow(jobId);
      expect(requeued).toMatchObject({ status: 'queued', worker_id: null });
      const stoppedAt = Number(requeued.steps_completed);
      expect(stoppedAt).toBeLessThan(total);
      expect(await QueueJob.fromId(h.queue(prefix), jobId).then((j) => j!.getState())).toBe('waiting');

      second = await startWorker(prefix);
      await waitFor('the job to succeed', async () => (await jobRow(jobId)).status === 'succeeded');
      const attempts = (await h.db.query(
        'SELECT resumed_from_step, outcome FROM job_attempts WHERE job_id = $1 ORDER BY attempt',
        [jobId],
      )) as { resumed_from_step: number | null; outcome: string }[];
      // checkpoint_every 1000: the only checkpoint is the one the stop wrote.
      expect(attempts).toEqual([
        { resumed_from_step: null, outcome: 'interrupted' },
        { resumed_from_step: stoppedAt, outcome: 'succeeded' },
      ]);
      expect(await stepsOf(jobId, 'train/loss')).toEqual(range(1, total));
    } finally {
      if (first.exitCode === null) first.kill('SIGKILL');
      await second?.close();
    }
  });

  it('resumes a job whose worker process was killed (SIGKILL) from its last checkpoint; every step logged once', async () => {
    const prefix = uniquePrefix();
    const total = 300;
    const jobId = await h.submit(prefix, mola(total, { eval_every: 0 }), { validation: false });
    const first = spawn(process.execPath, [WORKER_BIN], { env: h.env(prefix), stdio: 'ignore' });
    let second: TrainingWorker | null = null;
    try {
      await waitFor(
        'the first worker to pass a checkpoint',
        async () => Number((await jobRow(jobId)).steps_completed) >= 30,
      );
      first.kill('SIGKILL');
      await new Promise((resolve) => first.once('exit', resolve));
      const killedAt = Number((await jobRow(jobId)).steps_completed);
      expect(killedAt).toBeLessThan(total);
      // The orphaned runner notices its worker is gone and exits: its log stops growing.
      const log = path.join(h.dataDir, 'jobs', jobId, 'metrics.jsonl');
      await new Promise((resolve) => setTimeout(resolve, 300));
      const size = statSync(log).size;
      await new Promise((resolve) => setTimeout(resolve, 700));
      expect(statSync(log).size).toBe(size);

      second = await startWorker(prefix);
      const row = await waitFor(
        'the job to finish on the second worker',
        async () => {
          const r = await jobRow(jobId);
          return ['succeeded', 'failed', 'cancelled'].includes(String(r.status)) && r;
        },
        90_000,
      );
      expect(row.error).toBeNull();
      expect(row).toMatchObject({ status: 'succeeded', attempt: 2, steps_completed: total });
      const attempts = (await h.db.query(
        'SELECT attempt, worker_id, resumed_from_step, outcome FROM job_attempts WHERE job_id = $1 ORDER BY attempt',
        [jobId],
      )) as { attempt: number; worker_id: string; resumed_from_step: number | null; outcome: string | null }[];
      expect(attempts).toHaveLength(2);
      expect(attempts[0]).toMatchObject({ attempt: 1, resumed_from_step: null, outcome: null });
      expect(attempts[1]).toMatchObject({ attempt: 2, outcome: 'succeeded' });
      expect(attempts[1]!.resumed_from_step).toBeGreaterThanOrEqual(10);
      expect(attempts[1]!.resumed_from_step! % 5).toBe(0);
      expect(attempts[0]!.worker_id).not.toBe(attempts[1]!.worker_id);
      // The primary key (job_id, name, step) already forbids a duplicate: check nothing is missing.
      for (const name of ['train/loss', 'train/lr', 'train/tokens'])
        expect(await stepsOf(jobId, name), name).toEqual(range(1, total));
    } finally {
      if (first.exitCode === null) first.kill('SIGKILL');
      await second?.close();
    }
  });
});
