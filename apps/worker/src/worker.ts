/**
 * The training worker: one BullMQ worker (concurrency 1) on its accelerator's queue. For each job
 * it claims the Postgres row (idempotently), forks the trainer runner, and turns the runner's
 * messages into metrics, events, checkpoint and artifact rows and Redis pub/sub messages.
 * Postgres is the source of truth; BullMQ only delivers job ids.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

import { parseTrainConfig, type TrainConfig, type TrainJobData } from '@expertune/contracts';
import {
  type ArtifactStorage,
  connect,
  createArtifactStorage,
  createDataSource,
  downloadObject,
  downloadTree,
  insertMetrics,
  type JobError,
  localPathOf,
  type MetricRow,
  redactSecrets,
  redactValue,
  syncTree,
  withoutSecrets,
} from '@expertune/db';
import { UnrecoverableError, WaitingError, Worker, type Job as QueueJob } from 'bullmq';
import { checkJobResources } from '@expertune/trainer';
import { Redis } from 'ioredis';
import type { DataSource } from 'typeorm';

import { digestDirectory, listRunCheckpoints, storageKeyOf, trainConfigInput } from './job-files.js';
import { EXIT_USER_ERROR, type MetricPoint, type RunnerInput, type RunnerMessage } from './protocol.js';
import { CANCEL_CHANNEL, jobChannel, type WorkerSettings } from './settings.js';

interface JobRow {
  id: string;
  status: string;
  method: string;
  base_model_id: string;
  training_dataset_id: string;
  validation_dataset_id: string | null;
  config: Record<string, unknown>;
  seed: number;
  suffix: string | null;
  attempt: number;
  worker_id: string | null;
  heartbeat_at: Date | null;
  cancel_requested_at: Date | null;
}

type Query = <T = Record<string, unknown>>(text: string, params?: unknown[]) => Promise<T[]>;

/** The BullMQ job's data as the API enqueues it; fields may be missing in a hand-made job. */
type QueueData = Partial<TrainJobData>;

export type JobOutcome = 'succeeded' | 'failed' | 'cancelled' | 'requeued' | 'skipped';

/** What the processor returns to BullMQ (kept in Redis only briefly; Postgres has the history). */
export interface ProcessResult {
  jobId: string;
  outcome: JobOutcome;
  reason?: string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class TrainingWorker {
  private dataSource: DataSource | null = null;
  private bull: Worker | null = null;
  private publisher: Redis | null = null;
  private subscriber: Redis | null = null;
  /**
   * Datasets, checkpoints and exports. With a storage without local paths (EXPERTUNE_STORAGE=s3) the
   * data directory is this worker's cache of it: what a job needs is downloaded before it trains,
   * and its checkpoints and export are uploaded, so any worker of the class can resume it.
   */
  private readonly storage: ArtifactStorage;
  /** The job being trained and how to stop its runner. */
  private current: { jobId: string; stop: (reason: 'cancel' | 'shutdown') => void } | null = null;
  private closing = false;
  private closed: Promise<void> | null = null;

  constructor(readonly settings: WorkerSettings) {
    this.storage = createArtifactStorage(process.env, settings.dataDir);
  }

  async start(): Promise<void> {
    const { settings } = this;
    this.dataSource = await connect(createDataSource({ url: settings.databaseUrl, poolSize: 4 }));
    // Publishes never wait forever on a hung Redis; BullMQ's own connection blocks by design and has no timeout.
    this.publisher = new Redis(settings.redisUrl, { maxRetriesPerRequest: null, commandTimeout: 10_000 });
    this.subscriber = new Redis(settings.redisUrl, { maxRetriesPerRequest: null });
    this.subscriber.on('message', (channel: string, message: string) => {
      if (channel === CANCEL_CHANNEL && this.current && cancelledJobId(message) === this.current.jobId)
        this.current.stop('cancel');
    });
    await this.subscriber.subscribe(CANCEL_CHANNEL);
    this.bull = new Worker(settings.queueName, (job, token) => this.process(job, token), {
      connection: new Redis(settings.redisUrl, { maxRetriesPerRequest: null }),
      prefix: settings.queuePrefix,
      concurrency: 1,
      lockDuration: settings.lockDurationMs,
      stalledInterval: settings.stalledIntervalMs,
      maxStalledCount: settings.maxStalledCount,
      // The history lives in Postgres.
      removeOnComplete: { count: 100 },
      removeOnFail: { count: 1000 },
    });
    this.bull.on('error', (error) => this.log(`queue error: ${error.message}`));
    await this.bull.waitUntilReady();
    this.log(`worker ${settings.workerId} on queue ${settings.queuePrefix}:${settings.queueName}`);
  }

  /**
   * Graceful stop: no new jobs; a running job's trainer finishes its step and checkpoints, the job
   * goes back to 'queued' and back to BullMQ's wait list (moveToWait), so any worker resumes it.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closing = true;
      this.current?.stop('shutdown');
      this.closed = (async () => {
        await this.bull?.close();
        await this.subscriber?.quit().catch(() => undefined);
        await this.publisher?.quit().catch(() => undefined);
        if (this.dataSource?.isInitialized) await this.dataSource.destroy();
      })();
    }
    return this.closed;
  }

  private log(message: string): void {
    console.log(redactSecrets(`[worker ${this.settings.workerId}] ${message}`));
  }

  private async sql<T = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
    const runner = this.dataSource!.createQueryRunner();
    try {
      const result = await runner.query(text, params, true);
      return (result.records ?? []) as T[];
    } finally {
      await runner.release();
    }
  }

  private publish(jobId: string, message: Record<string, unknown>): void {
    this.publisher?.publish(jobChannel(jobId), JSON.stringify(message)).catch((error: Error) => {
      this.log(`publish failed: ${error.message}`);
    });
  }

  /** Runs `work` in one transaction: its statements commit together or not at all. */
  private async transaction<T>(work: (query: Query) => Promise<T>): Promise<T> {
    const runner = this.dataSource!.createQueryRunner();
    await runner.connect();
    await runner.startTransaction();
    try {
      const query: Query = async <R>(text: string, params: unknown[] = []) =>
        ((await runner.query(text, params, true)).records ?? []) as R[];
      const result = await work(query);
      await runner.commitTransaction();
      return result;
    } catch (error) {
      await runner.rollbackTransaction();
      throw error;
    } finally {
      await runner.release();
    }
  }

  /**
   * Inserts a job_events row and returns it as the API's event object, which is what the job's
   * channel carries (the SSE stream forwards messages that carry an event id; metric and routing
   * messages carry none).
   */
  private async insertEvent(
    query: Query,
    jobId: string,
    level: 'info' | 'warning' | 'error',
    type: string,
    rawMessage: string,
    rawData: Record<string, unknown> | null,
  ): Promise<Record<string, unknown>> {
    // Events are read by every key holder: a trainer error quoting a URL or a key must not carry it.
    const message = redactSecrets(rawMessage);
    const data = redactValue(rawData);
    const [row] = await query<{ id: string; created_at: Date }>(
      `INSERT INTO job_events (job_id, level, type, message, data) VALUES ($1, $2, $3, $4, $5)
       RETURNING id::text AS id, created_at`,
      [jobId, level, type, message, data === null ? null : JSON.stringify(data)],
    );
    return {
      id: row!.id,
      object: 'fine_tuning.job.event',
      job_id: jobId,
      created_at: Math.floor(new Date(row!.created_at).getTime() / 1000),
      level,
      type,
      message,
      data,
    };
  }

  /** A job_events row, then published. */
  private async event(
    jobId: string,
    level: 'info' | 'warning' | 'error',
    type: string,
    message: string,
    data: Record<string, unknown> | null = null,
  ): Promise<void> {
    this.publish(
      jobId,
      await this.insertEvent((text, params) => this.sql(text, params), jobId, level, type, message, data),
    );
  }

  /**
   * Ends an attempt: the job's new state, the attempt's outcome and the status event in one
   * transaction (a reader who sees the status sees the rest), then the event is published.
   */
  private async conclude(
    jobId: string,
    attempt: number | null,
    outcome: string,
    update: { sql: string; params: unknown[] },
    event: { level: 'info' | 'warning' | 'error'; message: string; data: Record<string, unknown> },
  ): Promise<boolean> {
    const published = await this.transaction(async (query) => {
      const changed = await query(update.sql, update.params);
      if (changed.length === 0) return null;
      if (attempt !== null)
        await query(`UPDATE job_attempts SET ended_at = now(), outcome = $3 WHERE job_id = $1 AND attempt = $2`, [
          jobId,
          attempt,
          outcome,
        ]);
      return this.insertEvent(query, jobId, event.level, 'status', event.message, event.data);
    });
    if (published) this.publish(jobId, published);
    return published !== null;
  }

  /**
   * Takes the job for this worker in one statement: only when it is queued, or running with a
   * heartbeat older than staleAfterMs (its worker died), or running under this very worker id (a
   * restarted worker with a fixed EXPERTUNE_WORKER_ID). The row lock makes concurrent claims
   * serial, and the loser's WHERE no longer matches: a job is never trained twice at once.
   */
  private async claim(jobId: string, resumedFromStep: number | null): Promise<{ attempt: number } | null> {
    const rows = await this.sql<{ attempt: number }>(
      `WITH claimed AS (
         UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = $2, heartbeat_at = now(),
                started_at = COALESCE(started_at, now()), error = NULL
          WHERE id = $1 AND cancel_requested_at IS NULL
            AND (status = 'queued'
                 OR (status = 'running'
                     AND (worker_id = $2 OR heartbeat_at IS NULL
                          OR heartbeat_at < now() - make_interval(secs => $3::double precision / 1000))))
          RETURNING id, attempt
       ), recorded AS (
         INSERT INTO job_attempts (job_id, attempt, worker_id, resumed_from_step)
         SELECT id, attempt, $2, $4 FROM claimed
         RETURNING attempt
       )
       SELECT attempt FROM recorded`,
      [jobId, this.settings.workerId, this.settings.staleAfterMs, resumedFromStep],
    );
    return rows[0] ?? null;
  }

  /** A job whose cancel was asked for before any worker took it is cancelled without training. */
  private cancelUnclaimed(jobId: string): Promise<boolean> {
    return this.conclude(
      jobId,
      null,
      'cancelled',
      {
        sql: `UPDATE jobs SET status = 'cancelled', finished_at = now(), heartbeat_at = NULL
               WHERE id = $1 AND cancel_requested_at IS NOT NULL
                 AND (status = 'queued'
                      OR (status = 'running'
                          AND (heartbeat_at IS NULL
                               OR heartbeat_at < now() - make_interval(secs => $2::double precision / 1000))))
               RETURNING id`,
        params: [jobId, this.settings.staleAfterMs],
      },
      { level: 'info', message: 'Job cancelled before it started', data: { status: 'cancelled' } },
    );
  }

  private async process(queueJob: QueueJob, token?: string): Promise<ProcessResult> {
    const jobId = String((queueJob.data as QueueData | undefined)?.jobId ?? queueJob.id);
    for (;;) {
      const [row] = await this.sql<JobRow>('SELECT * FROM jobs WHERE id = $1', [jobId]);
      if (!row) return { jobId, outcome: 'skipped', reason: 'no such job' };
      if (['succeeded', 'failed', 'cancelled'].includes(row.status))
        return { jobId, outcome: 'skipped', reason: `already ${row.status}` };
      if (await this.cancelUnclaimed(jobId)) return { jobId, outcome: 'cancelled' };
      const outputDir = path.join(this.settings.dataDir, 'jobs', jobId);
      // Another worker's checkpoints, if this one does not share its disk.
      if (!this.storage.path) await downloadTree(this.storage, `jobs/${jobId}/checkpoints`, this.settings.dataDir);
      const chosen = await this.chosenCheckpoint(row, queueJob.data as QueueData | undefined);
      const resumeFrom = chosen?.step ?? listRunCheckpoints(outputDir).at(-1)?.step ?? null;
      const claimed = await this.claim(jobId, resumeFrom);
      if (claimed)
        return this.train(queueJob, token, { ...row, attempt: claimed.attempt }, outputDir, resumeFrom, chosen);
      // Running under a live heartbeat: BullMQ delivered it again (at-least-once) while its worker
      // still trains it, or that worker died a moment ago. Wait until it finishes or goes stale.
      if (this.closing) return this.handBack(queueJob, token);
      await sleep(this.settings.heartbeatMs);
    }
  }

  /**
   * The checkpoint the API's resume chose (`resumeFromCheckpointId` in the queue data), honoured
   * only for the attempt that resume queued: a job re-queued by a worker's shutdown, or taken over
   * from a dead worker, continues from its latest checkpoint instead (the same numbers, later).
   */
  private async chosenCheckpoint(
    row: JobRow,
    data: QueueData | undefined,
  ): Promise<{ step: number; dir: string } | null> {
    if (!data?.resumeFromCheckpointId || row.status !== 'queued') return null;
    const [last] = await this.sql<{ outcome: string | null }>(
      'SELECT outcome FROM job_attempts WHERE job_id = $1 ORDER BY attempt DESC LIMIT 1',
      [row.id],
    );
    if (last?.outcome === 'interrupted') return null;
    const [checkpoint] = await this.sql<{ step: number; storage_key: string }>(
      'SELECT step, storage_key FROM checkpoints WHERE id = $1 AND job_id = $2',
      [data.resumeFromCheckpointId, row.id],
    );
    if (!checkpoint) return null;
    const dir = this.storage.path
      ? this.storage.path(checkpoint.storage_key)
      : localPathOf(this.settings.dataDir, checkpoint.storage_key);
    return existsSync(path.join(dir, 'state.json')) ? { step: checkpoint.step, dir } : null;
  }

  /** Puts the BullMQ job back on the wait list (a graceful stop), so another worker takes it. */
  private async handBack(queueJob: QueueJob, token?: string): Promise<never> {
    await queueJob.moveToWait(token);
    throw new WaitingError();
  }

  private async fail(jobId: string, rawError: JobError, attempt: number): Promise<void> {
    const error = redactValue(rawError);
    await this.conclude(
      jobId,
      attempt,
      'failed',
      {
        sql: `UPDATE jobs SET status = 'failed', error = $3, finished_at = now(), heartbeat_at = now()
               WHERE id = $1 AND worker_id = $2 AND status = 'running' RETURNING id`,
        params: [jobId, this.settings.workerId, JSON.stringify(error)],
      },
      { level: 'error', message: `Job failed: ${error.message}`, data: { status: 'failed', error } },
    );
  }

  /**
   * The resource guards again, on this machine (libs/trainer resources.ts): its free memory (and
   * EXPERTUNE_MEMORY_LIMIT_BYTES), its GPU's (EXPERTUNE_GPU_MEMORY_BYTES) and the data directory's free
   * disk. A config that does not parse is left to the runner, which reports it as invalid_config.
   */
  private resourceShortage(
    input: RunnerInput,
    model: { config: Record<string, unknown>; parameter_count: string | number },
  ): JobError | null {
    let config: TrainConfig;
    try {
      config = parseTrainConfig(trainConfigInput(input), `the config of job ${input.jobId}`);
    } catch {
      return null;
    }
    const problem = checkJobResources(config, model.config, Number(model.parameter_count), {
      dataDir: this.settings.dataDir,
      memory: 'host',
      device: this.settings.device,
    });
    return problem && { code: problem.code, message: problem.message, param: problem.param };
  }

  /** Checkpoint rows for the run directory's checkpoints: adds missing ones, drops pruned ones. */
  private async syncCheckpoints(jobId: string, outputDir: string, evalLoss?: { step: number; value: number | null }) {
    const present = listRunCheckpoints(outputDir);
    for (const checkpoint of present) {
      const key = storageKeyOf(this.settings.dataDir, checkpoint.dir);
      if (!key) continue;
      await this.sql(
        `INSERT INTO checkpoints (job_id, step, storage_key, eval_loss) VALUES ($1, $2, $3, $4)
         ON CONFLICT (job_id, step) DO UPDATE SET storage_key = EXCLUDED.storage_key,
           eval_loss = COALESCE(EXCLUDED.eval_loss, checkpoints.eval_loss)`,
        [jobId, checkpoint.step, key, evalLoss?.step === checkpoint.step ? evalLoss.value : null],
      );
    }
    await this.sql(`DELETE FROM checkpoints WHERE job_id = $1 AND NOT (step = ANY($2::integer[]))`, [
      jobId,
      present.map((c) => c.step),
    ]);
  }

  private async train(
    queueJob: QueueJob,
    token: string | undefined,
    job: JobRow,
    outputDir: string,
    resumeFrom: number | null,
    chosen: { step: number; dir: string } | null,
  ): Promise<ProcessResult> {
    const jobId = job.id;
    const attempt = job.attempt;
    await this.event(
      jobId,
      'info',
      'status',
      resumeFrom !== null
        ? `Attempt ${attempt} started on ${this.settings.workerId}, resuming from step ${resumeFrom}`
        : `Attempt ${attempt} started on ${this.settings.workerId}`,
      { status: 'running', attempt, worker_id: this.settings.workerId, resumed_from_step: resumeFrom },
    );

    const [model] = await this.sql<{
      name: string;
      path: string;
      config: Record<string, unknown>;
      parameter_count: string | number;
    }>('SELECT name, path, config, parameter_count FROM models WHERE id = $1', [job.base_model_id]);
    const datasets = await this.sql<{ id: string; storage_key: string; deleted_at: Date | null }>(
      'SELECT id, storage_key, deleted_at FROM datasets WHERE id = ANY($1::uuid[])',
      [[job.training_dataset_id, job.validation_dataset_id].filter((id): id is string => id !== null)],
    );
    const fileOf = async (id: string | null) => {
      const dataset = datasets.find((d) => d.id === id);
      if (!dataset || dataset.deleted_at) return null;
      if (this.storage.path) return this.storage.path(dataset.storage_key);
      return downloadObject(this.storage, dataset.storage_key, this.settings.dataDir).catch((error: Error) => {
        this.log(`job ${jobId}: dataset ${dataset.id}: ${error.message}`);
        return null;
      });
    };
    const trainFile = await fileOf(job.training_dataset_id);
    const validationFile = job.validation_dataset_id ? await fileOf(job.validation_dataset_id) : null;
    const missing: JobError | null = !model
      ? { code: 'model_not_found', message: `base model ${job.base_model_id} does not exist`, param: 'model' }
      : !trainFile
        ? {
            code: 'dataset_not_found',
            message: `training dataset ${job.training_dataset_id} does not exist or was deleted`,
            param: 'training_file',
          }
        : job.validation_dataset_id && !validationFile
          ? {
              code: 'dataset_not_found',
              message: `validation dataset ${job.validation_dataset_id} does not exist or was deleted`,
              param: 'validation_file',
            }
          : null;
    if (missing) {
      await this.fail(jobId, missing, attempt);
      throw new UnrecoverableError(missing.message);
    }
    await this.syncCheckpoints(jobId, outputDir);

    const input: RunnerInput = {
      jobId,
      method: job.method,
      seed: job.seed,
      config: job.config,
      modelDir: model!.path,
      trainFile: trainFile!,
      validationFile,
      outputDir,
      resumeFrom: chosen?.dir ?? null,
      threads: this.settings.threads,
    };
    const shortage = this.resourceShortage(input, model!);
    if (shortage) {
      await this.fail(jobId, shortage, attempt);
      throw new UnrecoverableError(shortage.message);
    }
    const run = await this.runChild(job, input, attempt);

    if (run.lostClaim) return { jobId, outcome: 'skipped', reason: 'another worker took the job over' };
    if (run.exitCode === 0 && run.finished) {
      const exportDir = run.finished.exportDir;
      const key = storageKeyOf(this.settings.dataDir, exportDir) ?? exportDir;
      const digest = await digestDirectory(exportDir);
      if (!this.storage.path) await syncTree(this.storage, key, this.settings.dataDir);
      const kind = run.finished.adapter ? 'adapter' : 'model';
      const [artifact] = await this.sql<{ id: string }>(
        `INSERT INTO artifacts (job_id, kind, name, storage_key, bytes, sha256) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id`,
        [jobId, kind, artifactName(model!.name, job), key, digest.bytes, digest.sha256],
      );
      await this.conclude(
        jobId,
        attempt,
        'succeeded',
        {
          sql: `UPDATE jobs SET status = 'succeeded', result_artifact_id = $3, finished_at = now(), heartbeat_at = now(),
                       steps_completed = $4
                 WHERE id = $1 AND worker_id = $2 AND status = 'running' RETURNING id`,
          params: [jobId, this.settings.workerId, artifact!.id, run.finished.step],
        },
        {
          level: 'info',
          message: `Job succeeded: ${kind} exported (${digest.files} files)`,
          data: {
            status: 'succeeded',
            artifact_id: artifact!.id,
            storage_key: key,
            bytes: digest.bytes,
            sha256: digest.sha256,
            metrics: run.finished.metrics,
          },
        },
      );
      return { jobId, outcome: 'succeeded' };
    }
    if (run.exitCode === 0 && run.stopped !== null) {
      // Stopped without a cancel: a shutdown (ours, or a SIGTERM that reached the runner directly).
      if (run.stopReason !== 'cancel') {
        await this.conclude(
          jobId,
          attempt,
          'interrupted',
          {
            sql: `UPDATE jobs SET status = 'queued', worker_id = NULL, heartbeat_at = NULL
                   WHERE id = $1 AND worker_id = $2 AND status = 'running' RETURNING id`,
            params: [jobId, this.settings.workerId],
          },
          {
            level: 'warning',
            message: `Worker stopping: job re-queued at step ${run.stopped}`,
            data: { status: 'queued', step: run.stopped },
          },
        );
        return this.handBack(queueJob, token);
      }
      await this.conclude(
        jobId,
        attempt,
        'cancelled',
        {
          sql: `UPDATE jobs SET status = 'cancelled', finished_at = now(), heartbeat_at = now()
                 WHERE id = $1 AND worker_id = $2 AND status = 'running' RETURNING id`,
          params: [jobId, this.settings.workerId],
        },
        {
          level: 'info',
          message: `Job cancelled at step ${run.stopped}; its checkpoint is kept`,
          data: { status: 'cancelled', step: run.stopped },
        },
      );
      return { jobId, outcome: 'cancelled' };
    }
    const error: JobError =
      run.error && (run.exitCode === EXIT_USER_ERROR || run.error.code === 'trainer_crashed')
        ? run.error
        : {
            code: 'trainer_crashed',
            message: `the trainer process ${run.signal ? `was killed by ${run.signal}` : `exited with code ${run.exitCode}`}${
              run.error ? `: ${run.error.message}` : ''
            }`,
            param: null,
          };
    await this.fail(jobId, error, attempt);
    // Not retried by BullMQ: a user error stays one, and a crashed run resumes through the API (a new attempt).
    throw new UnrecoverableError(error.message);
  }

  /** Forks the runner and follows it until it exits, writing what it reports. */
  private runChild(job: JobRow, input: RunnerInput, attempt: number) {
    const jobId = job.id;
    const settings = this.settings;
    return new Promise<{
      exitCode: number | null;
      signal: NodeJS.Signals | null;
      finished: Extract<RunnerMessage, { type: 'finished' }> | null;
      stopped: number | null;
      stopReason: 'cancel' | 'shutdown' | null;
      error: JobError | null;
      lostClaim: boolean;
    }>((resolve) => {
      const child: ChildProcess = fork(settings.runnerPath, [], {
        // Piped, not inherited: the trainer's lines pass through the same redaction as the worker's own.
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        serialization: 'json',
        // The engine in the runner reads the device from here (Engine.create's default).
        // Without the worker's credentials: the trainer reads files and needs none of them.
        env: { ...withoutSecrets(process.env), EXPERTUNE_DEVICE: settings.device },
        // Plain node on the built runner: not the flags of a parent under a test runner (e.g. --conditions=source).
        execArgv: [],
      });
      forwardRedacted(child.stdout!, process.stdout);
      forwardRedacted(child.stderr!, process.stderr);
      let stopReason: 'cancel' | 'shutdown' | null = null;
      let finished: Extract<RunnerMessage, { type: 'finished' }> | null = null;
      let stopped: number | null = null;
      let error: JobError | null = null;
      let lostClaim = false;
      let pending: MetricRow[] = [];
      let step = 0;
      // Writes happen one after another, in message order.
      let chain: Promise<unknown> = Promise.resolve();
      const then = (work: () => Promise<unknown>) => {
        chain = chain.then(work).catch((e: Error) => this.log(`job ${jobId}: ${e.message}`));
        return chain;
      };
      const stop = (reason: 'cancel' | 'shutdown') => {
        if (stopReason) return;
        stopReason = reason;
        if (child.connected) child.send({ type: 'stop' });
      };
      this.current = { jobId, stop };
      if (this.closing) stop('shutdown');

      const flush = () =>
        then(async () => {
          if (pending.length === 0) return;
          const rows = pending;
          pending = [];
          await insertMetrics(this.dataSource!, rows);
          await this.sql(
            `UPDATE jobs SET steps_completed = $3,
                    tokens_processed = (SELECT COALESCE(sum(value), 0)::bigint FROM metrics
                                         WHERE job_id = $1 AND name = 'train/tokens')
              WHERE id = $1 AND worker_id = $2`,
            [jobId, settings.workerId, step],
          );
          this.publish(jobId, {
            object: 'fine_tuning.job.metrics',
            job_id: jobId,
            points: rows.map((r) => ({ name: r.name, step: r.step, value: r.value })),
          });
        });
      const flushTimer = setInterval(flush, settings.metricFlushMs);
      const heartbeat = setInterval(() => {
        void then(async () => {
          const rows = await this.sql<{ cancel_requested_at: Date | null }>(
            `UPDATE jobs SET heartbeat_at = now() WHERE id = $1 AND worker_id = $2 AND status = 'running'
             RETURNING cancel_requested_at`,
            [jobId, settings.workerId],
          );
          if (rows.length === 0 && !lostClaim) {
            // Another worker claimed the job (this one was taken for dead): stop at once, write nothing more.
            lostClaim = true;
            this.log(`job ${jobId}: claimed by another worker, killing the trainer`);
            child.kill('SIGKILL');
          } else if (rows[0]?.cancel_requested_at) stop('cancel'); // a missed pub/sub message
        });
      }, settings.heartbeatMs);

      const addPoints = (points: MetricPoint[]) => {
        for (const p of points) {
          pending.push({ jobId, name: p.name, step: p.step, value: p.value });
          if (p.name === 'train/loss') step = Math.max(step, p.step);
        }
        if (pending.length >= settings.metricFlushPoints) void flush();
      };

      child.on('message', (message: RunnerMessage) => {
        if (lostClaim) return;
        switch (message.type) {
          case 'start':
            step = message.resumedFromStep ?? 0;
            // The runner decides where it resumes (it skips a checkpoint with no step left).
            void then(() =>
              this.sql(`UPDATE job_attempts SET resumed_from_step = $3 WHERE job_id = $1 AND attempt = $2`, [
                jobId,
                attempt,
                message.resumedFromStep,
              ]),
            );
            void then(() => this.sql(`UPDATE jobs SET total_steps = $2 WHERE id = $1`, [jobId, message.totalSteps]));
            void then(() =>
              this.event(
                jobId,
                message.badRows > 0 ? 'warning' : 'info',
                'message',
                `Training ${message.totalSteps} steps on ${message.rows} rows` +
                  (message.badRows > 0 ? ` (${message.badRows} bad rows skipped)` : '') +
                  `, ${message.trainableParameters} trainable parameters, engine ${message.engine}`,
                { ...message, type: undefined, attempt },
              ),
            );
            for (const note of message.notes) void then(() => this.event(jobId, 'warning', 'message', note));
            break;
          case 'metrics':
            addPoints(message.points);
            break;
          case 'routing':
            this.publish(jobId, {
              object: 'fine_tuning.job.routing',
              job_id: jobId,
              step: message.step,
              layers: message.layers,
            });
            break;
          case 'eval':
            void flush();
            void then(() =>
              this.event(
                jobId,
                'info',
                'metrics',
                `Evaluation at step ${message.step}: loss ${Number(message.result.loss).toFixed(4)}`,
                { step: message.step, ...message.result },
              ),
            );
            break;
          case 'checkpoint':
            void flush();
            void then(() =>
              this.syncCheckpoints(jobId, input.outputDir, { step: message.step, value: message.evalLoss }),
            );
            // Uploaded before the attempt ends (its end waits for this chain): a drained job resumes anywhere.
            if (!this.storage.path)
              void then(() => syncTree(this.storage, `jobs/${jobId}/checkpoints`, settings.dataDir));
            void then(() =>
              this.event(jobId, 'info', 'checkpoint', `Checkpoint at step ${message.step}`, {
                step: message.step,
                storage_key: storageKeyOf(settings.dataDir, message.path),
                eval_loss: message.evalLoss,
              }),
            );
            break;
          case 'stopped':
            stopped = message.step;
            break;
          case 'finished':
            finished = message;
            break;
          case 'error':
            error = message.error;
            break;
        }
      });
      child.on('error', (e) => this.log(`job ${jobId}: runner: ${e.message}`));
      child.on('close', (exitCode, signal) => {
        clearInterval(flushTimer);
        clearInterval(heartbeat);
        // 'close' comes after the IPC channel closed; give its last messages a turn before the final flush.
        setImmediate(() => {
          void flush().then(() => {
            this.current = null;
            resolve({ exitCode, signal, finished, stopped, stopReason, error, lostClaim });
          });
        });
      });
      child.send({ type: 'input', input });
    });
  }
}

/** The adapter's name, OpenAI-style: `ft:<base model>[:<suffix>]:<job id prefix>`. */
function artifactName(modelName: string, job: JobRow): string {
  return ['ft', modelName, ...(job.suffix ? [job.suffix] : []), job.id.slice(0, 8)].join(':');
}

/** The job id of a cancel message: the id itself, or JSON `"<id>"` / `{"jobId"|"job_id"|"id": "<id>"}`. */
export function cancelledJobId(message: string): string {
  const text = message.trim();
  if (!text.startsWith('{') && !text.startsWith('"')) return text;
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed === 'string') return parsed;
    const fields = parsed as { jobId?: unknown; job_id?: unknown; id?: unknown };
    return String(fields.jobId ?? fields.job_id ?? fields.id ?? '');
  } catch {
    return text;
  }
}

/** Copies a child's output line by line with secrets redacted (libs/db redactSecrets). */
function forwardRedacted(from: Readable, to: NodeJS.WritableStream): void {
  createInterface({ input: from, crlfDelay: Infinity }).on('line', (line) => to.write(redactSecrets(line) + '\n'));
}
