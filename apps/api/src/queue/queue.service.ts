/**
 * BullMQ queues (one per accelerator class) and Redis pub/sub. Postgres is the source of truth:
 * a failed enqueue leaves the job row queued, and `requeueMissing` (at start, then every 30 s)
 * adds every queued row again; `jobId` = the job's id makes that idempotent.
 */
import { type Accelerator, trainQueueName, type TrainJobData } from '@expertune/contracts';
import { Job as JobRow } from '@expertune/db';
import { getQueueToken } from '@nestjs/bullmq';
import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { Queue } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import type { DataSource } from 'typeorm';

import { ApiException } from '../common/api-exception.js';
import { API_CONFIG, type ApiConfig } from '../config/api-config.js';
import { DATA_SOURCE } from '../database/database.module.js';

export { CANCEL_CHANNEL, jobEventChannel } from '@expertune/contracts';
export type { TrainJobData };

/** A request never waits longer than this on Redis: past it, the answer is a 503. */
const REDIS_TIMEOUT_MS = 2000;
const REDIS_COMMAND_TIMEOUT_MS = 10_000;
const REQUEUE_INTERVAL_MS = 30_000;

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: Redis did not answer within ${REDIS_TIMEOUT_MS} ms`)),
      REDIS_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Waits for the connection: commands sent before it is up fail at once (enableOfflineQueue is off). */
function ready(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return withTimeout(new Promise<void>((resolve) => redis.once('ready', () => resolve())), 'connect');
}

export function queueUnavailable(error: unknown): ApiException {
  return new ApiException(
    503,
    'queue_unavailable',
    `the job queue (Redis) is unreachable: ${(error as Error).message}. The job is saved as queued and will be enqueued when Redis is back`,
  );
}

/** Connections fail fast instead of buffering commands, so a Redis outage becomes a prompt 503. */
export const QUEUE_REDIS_OPTIONS: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: REDIS_TIMEOUT_MS,
  // No command waits forever on a Redis that accepted the connection and then hangs.
  commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
  retryStrategy: (attempt) => Math.min(attempt * 500, 5000),
};

/** host, port, credentials and db of a redis:// URL, as ioredis options (BullMQ takes options, not URLs). */
export function redisUrlOptions(url: string): RedisOptions {
  const parsed = new URL(url);
  const db = Number(parsed.pathname.replace(/^\//, '') || 0);
  return {
    host: parsed.hostname || '127.0.0.1',
    port: Number(parsed.port || 6379),
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    ...(Number.isInteger(db) && db > 0 ? { db } : {}),
    ...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

@Injectable()
export class QueueService implements OnModuleInit, OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('QueueService');
  private readonly queues = new Map<string, Queue>();
  private publisher: Redis | null = null;
  private requeueTimer: NodeJS.Timeout | null = null;

  constructor(
    @Inject(API_CONFIG) private readonly config: ApiConfig,
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(ModuleRef) private readonly moduleRef: ModuleRef,
  ) {}

  onModuleInit(): void {
    for (const accelerator of this.config.accelerators) {
      const queue = this.moduleRef.get<Queue>(getQueueToken(trainQueueName(accelerator)), { strict: false });
      // Connection errors surface as 503s on the requests that need Redis, not as log noise.
      queue.on('error', () => undefined);
      this.queues.set(accelerator, queue);
    }
  }

  /** The queue of an accelerator class with workers; any other is a 422 naming the configured ones. */
  queue(accelerator: string): Queue {
    const queue = this.queues.get(accelerator);
    if (!queue)
      throw new ApiException(
        422,
        'unknown_accelerator',
        `no workers serve accelerator ${JSON.stringify(accelerator)}: use one of ${this.config.accelerators.join(', ')}`,
        'accelerator',
      );
    return queue;
  }

  /**
   * Every configured class with what waits and runs in it (Postgres, the source of truth) and the
   * workers connected to its queue now (Redis; null when it does not answer).
   */
  async accelerators(): Promise<Accelerator[]> {
    const rows: { accelerator: string; status: string; count: string }[] = await this.dataSource.query(
      `SELECT accelerator, status, count(*) AS count FROM jobs WHERE status IN ('queued', 'running') GROUP BY 1, 2`,
    );
    const count = (accelerator: string, status: string) =>
      Number(rows.find((r) => r.accelerator === accelerator && r.status === status)?.count ?? 0);
    return Promise.all(
      this.config.accelerators.map(async (accelerator) => ({
        id: accelerator,
        object: 'accelerator' as const,
        queue: trainQueueName(accelerator),
        queued: count(accelerator, 'queued'),
        running: count(accelerator, 'running'),
        workers: await withTimeout(this.queue(accelerator).getWorkersCount(), 'getWorkersCount').catch(() => null),
      })),
    );
  }

  async enqueue(accelerator: string, data: TrainJobData): Promise<void> {
    const queue = this.queue(accelerator);
    try {
      await withTimeout(queue.waitUntilReady(), 'connect');
      // A finished job's old queue entry would swallow the add (same jobId): clear it first.
      const existing = await withTimeout(queue.getJob(data.jobId), 'getJob');
      if (existing && ((await existing.isCompleted()) || (await existing.isFailed()))) await existing.remove();
      await withTimeout(
        queue.add('train', data, { jobId: data.jobId, attempts: 1, removeOnComplete: 1000, removeOnFail: 1000 }),
        'add',
      );
    } catch (error) {
      throw queueUnavailable(error);
    }
  }

  /** Removes a waiting job from its queue (a cancelled queued job); false when a worker has it. */
  async removeWaiting(accelerator: string, jobId: string): Promise<boolean> {
    const queue = this.queue(accelerator);
    const job = await withTimeout(queue.getJob(jobId), 'getJob');
    if (!job) return true;
    const state = await withTimeout(job.getState(), 'getState');
    if (state === 'active') return false;
    await withTimeout(job.remove(), 'remove');
    return true;
  }

  /** Jobs ahead of this one (0 = next), or null when it is not waiting or Redis does not answer. */
  async position(accelerator: string, jobId: string): Promise<number | null> {
    try {
      const queue = this.queue(accelerator);
      const waiting = await withTimeout(queue.getJobs(['waiting', 'prioritized', 'delayed']), 'getJobs');
      const order = waiting.filter((job) => job !== undefined).sort((a, b) => a.timestamp - b.timestamp);
      const index = order.findIndex((job) => job.id === jobId);
      return index < 0 ? null : index;
    } catch {
      return null;
    }
  }

  async publish(channel: string, message: unknown): Promise<void> {
    this.publisher ??= this.newConnection();
    try {
      await ready(this.publisher);
      await withTimeout(this.publisher.publish(channel, JSON.stringify(message)), 'publish');
    } catch (error) {
      throw queueUnavailable(error);
    }
  }

  newConnection(): Redis {
    const redis = new Redis(this.config.redisUrl, QUEUE_REDIS_OPTIONS);
    redis.on('error', () => undefined);
    return redis;
  }

  /**
   * A connected connection of its own for SUBSCRIBE, or PSUBSCRIBE when `channel` is a glob pattern
   * (a subscribed connection can do nothing else).
   */
  async subscriber(channel: string, { pattern = false } = {}): Promise<Redis> {
    const redis = this.newConnection();
    try {
      await ready(redis);
      await withTimeout(pattern ? redis.psubscribe(channel) : redis.subscribe(channel), 'subscribe');
    } catch (error) {
      redis.disconnect();
      throw error;
    }
    return redis;
  }

  /** Enqueues every queued row again (the add is a no-op for those already in the queue). */
  async requeueMissing(): Promise<number> {
    const rows = await this.dataSource
      .getRepository(JobRow)
      .find({ where: { status: 'queued' }, order: { createdAt: 'ASC' } });
    let added = 0;
    for (const row of rows) {
      if (!this.queues.has(row.accelerator)) continue; // no workers here for it: another API instance's
      try {
        const queue = this.queue(row.accelerator);
        await withTimeout(queue.waitUntilReady(), 'connect');
        if (await withTimeout(queue.getJob(row.id), 'getJob')) continue;
        await this.enqueue(row.accelerator, { jobId: row.id });
        added += 1;
      } catch {
        return added; // Redis still down: the next round tries again
      }
    }
    if (added > 0) this.logger.log(`re-enqueued ${added} queued job(s) missing from the queue`);
    return added;
  }

  onApplicationBootstrap(): void {
    const round = () =>
      void this.requeueMissing().catch((error) => this.logger.warn(`requeue: ${(error as Error).message}`));
    round();
    this.requeueTimer = setInterval(round, REQUEUE_INTERVAL_MS);
    this.requeueTimer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    // The queues themselves are closed by @nestjs/bullmq.
    if (this.requeueTimer) clearInterval(this.requeueTimer);
    this.publisher?.disconnect();
  }
}
