/** Job lifecycle on the API side: create, list, read, cancel, resume, delete. */
import {
  FINISHED_JOB_STATUSES,
  type Job,
  type JobListQuery,
  type ListEnvelope,
  type ResolvedJobRequest,
  jobListQuerySchema,
  jobTrainConfig,
  parseTrainConfig,
} from '@expertune/contracts';
import { Checkpoint, Dataset, Job as JobRow, JobEvent, Model } from '@expertune/db';
import { checkJobResources } from '@expertune/trainer';
import { Inject, Injectable } from '@nestjs/common';
import { type DataSource, type EntityManager, IsNull } from 'typeorm';

import { ApiException } from '../common/api-exception.js';
import { findOr404, isUuid, pageOf, unixSeconds, unixSecondsOrNull } from '../common/pagination.js';
import { API_CONFIG, type ApiConfig } from '../config/api-config.js';
import { type ArtifactStorage, DATA_SOURCE, STORAGE } from '../database/database.module.js';
import { CANCEL_CHANNEL, QueueService, jobEventChannel } from '../queue/queue.service.js';

type JobListParams = ReturnType<typeof jobListQuerySchema.parse>;

@Injectable()
export class JobsService {
  constructor(
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(QueueService) private readonly queues: QueueService,
    @Inject(API_CONFIG) private readonly config: ApiConfig,
    @Inject(STORAGE) private readonly storage: ArtifactStorage,
  ) {}

  async create(request: ResolvedJobRequest, apiKeyId: string | null = null): Promise<Job> {
    this.queues.queue(request.accelerator); // refuses an accelerator nobody serves before anything is written
    const model = await this.requireModel(request.model, 'model');
    await this.requireDataset(request.training_file, 'training_file');
    if (request.validation_file) await this.requireDataset(request.validation_file, 'validation_file');
    this.checkResources(request, model);
    // The row first: whatever Redis does next, the job exists and stays queued until it is enqueued.
    const row = await this.dataSource.transaction(async (manager) => {
      await this.checkKeyQuota(manager, apiKeyId);
      return manager.getRepository(JobRow).save({
        apiKeyId,
        status: 'queued' as const,
        method: request.method,
        baseModelId: request.model,
        trainingDatasetId: request.training_file,
        validationDatasetId: request.validation_file,
        config: request.hyperparameters as unknown as Record<string, unknown>,
        seed: request.seed,
        suffix: request.suffix,
        metadata: request.metadata,
        accelerator: request.accelerator,
      });
    });
    await this.recordEvent(row.id, 'info', 'status', 'job created and queued', { status: 'queued' });
    await this.queues.enqueue(row.accelerator, { jobId: row.id });
    return this.get(row.id);
  }

  async list(query: JobListQuery): Promise<ListEnvelope<Job>> {
    const params: JobListParams = jobListQuerySchema.parse(query);
    const builder = this.dataSource.getRepository(JobRow).createQueryBuilder('job');
    if (params.status) builder.andWhere('job.status = :status', { status: params.status });
    if (params.method) builder.andWhere('job.method = :method', { method: params.method });
    return pageOf(builder, params, (row) => this.toJob(row));
  }

  async get(id: string): Promise<Job> {
    return this.toJob(await this.requireJob(id));
  }

  async cancel(id: string): Promise<Job> {
    const row = await this.requireJob(id);
    if ((FINISHED_JOB_STATUSES as readonly string[]).includes(row.status))
      throw ApiException.conflict('job_finished', `job ${id} is ${row.status}: nothing to cancel`);
    const repository = this.dataSource.getRepository(JobRow);
    if (row.status === 'queued') {
      // Nobody runs it yet: cancelled at once, unless a worker took it in the meantime.
      const removed = await this.queues.removeWaiting(row.accelerator, id).catch(() => true);
      if (removed) {
        const result = await repository.update(
          { id, status: 'queued' },
          { status: 'cancelled', cancelRequestedAt: new Date(), finishedAt: new Date() },
        );
        if (result.affected) {
          await this.recordEvent(id, 'info', 'status', 'job cancelled before it started', { status: 'cancelled' });
          return this.get(id);
        }
      }
    }
    // Running: the worker stops at its next step, keeps a checkpoint and marks the job cancelled.
    await repository.update({ id, cancelRequestedAt: IsNull() }, { cancelRequestedAt: new Date() });
    await this.recordEvent(id, 'info', 'status', 'cancel requested', { cancel_requested: true });
    await this.queues.publish(CANCEL_CHANNEL, { job_id: id });
    return this.get(id);
  }

  async resume(id: string, checkpointId: string | undefined): Promise<Job> {
    const row = await this.requireJob(id);
    if (row.status !== 'failed' && row.status !== 'cancelled')
      throw ApiException.conflict(
        'job_not_resumable',
        `job ${id} is ${row.status}: only failed or cancelled jobs can be resumed`,
      );
    const checkpoints = this.dataSource.getRepository(Checkpoint);
    let checkpoint: Checkpoint | null;
    if (checkpointId) {
      checkpoint = isUuid(checkpointId) ? await checkpoints.findOneBy({ id: checkpointId, jobId: id }) : null;
      if (!checkpoint)
        throw new ApiException(
          404,
          'not_found',
          `job ${id} has no checkpoint ${JSON.stringify(checkpointId)}`,
          'checkpoint',
        );
    } else {
      checkpoint = await checkpoints.findOne({ where: { jobId: id }, order: { step: 'DESC' } });
      if (!checkpoint)
        throw ApiException.conflict('no_checkpoint', `job ${id} has no checkpoint to resume from`, 'checkpoint');
    }
    // Queued again, it counts against its key's active jobs again.
    await this.dataSource.transaction(async (manager) => {
      await this.checkKeyQuota(manager, row.apiKeyId);
      await manager
        .getRepository(JobRow)
        .update({ id }, { status: 'queued', error: null, finishedAt: null, cancelRequestedAt: null });
    });
    await this.recordEvent(id, 'info', 'status', `resume from checkpoint at step ${checkpoint.step} queued`, {
      status: 'queued',
      resume_from_checkpoint: checkpoint.id,
      resume_from_step: checkpoint.step,
    });
    await this.queues.enqueue(row.accelerator, { jobId: id, resumeFromCheckpointId: checkpoint.id });
    return this.get(id);
  }

  async delete(id: string): Promise<{ id: string; object: 'fine_tuning.job'; deleted: true }> {
    const row = await this.requireJob(id);
    if (!(FINISHED_JOB_STATUSES as readonly string[]).includes(row.status))
      throw ApiException.conflict(
        'job_not_finished',
        `job ${id} is ${row.status}: cancel it and wait until it is cancelled, then delete it`,
      );
    await this.dataSource.getRepository(JobRow).delete({ id });
    return { id, object: 'fine_tuning.job', deleted: true };
  }

  requireJob(id: string): Promise<JobRow> {
    return findOr404(this.dataSource.getRepository(JobRow), id, 'job');
  }

  async recordEvent(
    jobId: string,
    level: 'info' | 'warning' | 'error',
    type: string,
    message: string,
    data: Record<string, unknown> | null,
  ): Promise<void> {
    const event = await this.dataSource.getRepository(JobEvent).save({ jobId, level, type, message, data });
    // Live listeners get it through pub/sub, not awaited: when Redis is down they replay it from Postgres later.
    void this.queues
      .publish(jobEventChannel(jobId), {
        id: event.id,
        job_id: jobId,
        created_at: unixSeconds(event.createdAt),
        level,
        type,
        message,
        data,
      })
      .catch(() => undefined);
  }

  private async requireModel(id: string, param: string): Promise<Model> {
    const found = isUuid(id) ? await this.dataSource.getRepository(Model).findOneBy({ id }) : null;
    if (!found) throw new ApiException(404, 'not_found', `no model with id ${JSON.stringify(id)}`, param);
    return found;
  }

  /**
   * Memory and disk the job will need (libs/trainer resources.ts), refused before it is queued. The
   * API does not train: memory is checked against EXPERTUNE_MEMORY_LIMIT_BYTES (a worker's size)
   * only when set; the worker checks its own free memory again before it starts.
   */
  private checkResources(request: ResolvedJobRequest, model: Model): void {
    const config = parseTrainConfig(
      jobTrainConfig(request, {
        modelDir: model.path,
        trainFile: 'train.jsonl',
        validationFile: null,
        outputDir: this.config.dataDir,
      }),
      'job',
    );
    const limits = this.config.resourceLimits;
    const env = {
      EXPERTUNE_MEMORY_LIMIT_BYTES: limits.memoryLimitBytes?.toString(),
      EXPERTUNE_GPU_MEMORY_BYTES: limits.gpuMemoryBytes?.toString(),
      EXPERTUNE_DISK_FREE_BYTES: limits.diskFreeBytes?.toString(),
    };
    const problem = checkJobResources(config, model.config, model.parameterCount, {
      // With S3 storage the checkpoints are written on the worker's disk, which the worker checks.
      dataDir: this.storage.path ? this.config.dataDir : null,
      memory: 'configured',
      device: request.accelerator.startsWith('cuda') ? 'cuda' : 'cpu',
      env,
    });
    if (problem) throw new ApiException(problem.status, problem.code, problem.message, problem.param);
  }

  /**
   * At most EXPERTUNE_MAX_ACTIVE_JOBS_PER_KEY queued or running jobs per key; the advisory lock
   * makes concurrent creations by one key count one after the other.
   */
  private async checkKeyQuota(manager: EntityManager, apiKeyId: string | null): Promise<void> {
    const limit = this.config.maxActiveJobsPerKey;
    if (apiKeyId === null || limit === 0) return;
    await manager.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`jobs:${apiKeyId}`]);
    const [{ active }] = (await manager.query(
      `SELECT count(*)::int AS active FROM jobs WHERE api_key_id = $1 AND status IN ('queued', 'running')`,
      [apiKeyId],
    )) as [{ active: number }];
    if (active >= limit)
      throw new ApiException(
        429,
        'job_quota_exceeded',
        `this API key has ${active} queued or running jobs, its limit (EXPERTUNE_MAX_ACTIVE_JOBS_PER_KEY=${limit}); ` +
          'wait for one to finish or cancel one',
        null,
      );
  }

  private async requireDataset(id: string, param: string): Promise<void> {
    const found = isUuid(id) && (await this.dataSource.getRepository(Dataset).existsBy({ id, deletedAt: IsNull() }));
    if (!found) throw new ApiException(404, 'not_found', `no dataset with id ${JSON.stringify(id)}`, param);
  }

  private async toJob(row: JobRow): Promise<Job> {
    const [latest, resumeEvent, queuePosition, adapterId] = await Promise.all([
      this.latestMetrics(row.id),
      this.dataSource
        .getRepository(JobEvent)
        .createQueryBuilder('event')
        .where('event.jobId = :id', { id: row.id })
        .andWhere("event.data ? 'resume_from_checkpoint'")
        .orderBy('event.id', 'DESC')
        .getOne(),
      row.status === 'queued' ? this.queues.position(row.accelerator, row.id) : Promise.resolve(null),
      Promise.resolve(row.resultArtifactId),
    ]);
    return {
      id: row.id,
      object: 'fine_tuning.job',
      status: row.status,
      cancel_requested: row.cancelRequestedAt !== null && row.status !== 'cancelled',
      method: row.method as Job['method'],
      model: row.baseModelId,
      training_file: row.trainingDatasetId,
      validation_file: row.validationDatasetId,
      hyperparameters: row.config as unknown as Job['hyperparameters'],
      seed: row.seed,
      suffix: row.suffix,
      metadata: row.metadata ?? {},
      accelerator: row.accelerator,
      attempt: Math.max(1, row.attempt),
      resumed_from: (resumeEvent?.data?.resume_from_checkpoint as string | undefined) ?? null,
      steps_completed: row.stepsCompleted,
      total_steps: row.totalSteps,
      tokens_processed: row.tokensProcessed,
      queue_position: queuePosition,
      created_at: unixSeconds(row.createdAt),
      started_at: unixSecondsOrNull(row.startedAt),
      finished_at: unixSecondsOrNull(row.finishedAt),
      error: row.error ? { code: row.error.code, message: row.error.message, param: row.error.param ?? null } : null,
      result_adapter: adapterId,
      latest_metrics: latest,
    };
  }

  private async latestMetrics(jobId: string): Promise<Record<string, number>> {
    const rows: { name: string; value: number }[] = await this.dataSource.query(
      `SELECT DISTINCT ON (name) name, value FROM metrics WHERE job_id = $1 ORDER BY name, step DESC`,
      [jobId],
    );
    return Object.fromEntries(rows.map((row) => [row.name, row.value]));
  }
}
