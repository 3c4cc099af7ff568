/** Reachability of the services the API cannot work without: Postgres (the source of truth) and Redis (the queue). */
import { Inject, Injectable } from '@nestjs/common';
import { Redis } from 'ioredis';
import pg from 'pg';

import { API_CONFIG, type ApiConfig } from '../config/api-config.js';

export interface ServiceCheck {
  ok: boolean;
  message?: string;
}

const CHECK_TIMEOUT_MS = 2000;

@Injectable()
export class HealthService {
  constructor(@Inject(API_CONFIG) private readonly config: ApiConfig) {}

  async checkPostgres(): Promise<ServiceCheck> {
    const client = new pg.Client({
      connectionString: this.config.databaseUrl,
      connectionTimeoutMillis: CHECK_TIMEOUT_MS,
      query_timeout: CHECK_TIMEOUT_MS,
    });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return { ok: true };
    } catch (error) {
      return { ok: false, message: `postgres unreachable: ${(error as Error).message}` };
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  async checkRedis(): Promise<ServiceCheck> {
    // A fresh connection that never retries: the check must answer within its timeout, not queue commands.
    const redis = new Redis(this.config.redisUrl, {
      lazyConnect: true,
      connectTimeout: CHECK_TIMEOUT_MS,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    redis.on('error', () => undefined);
    try {
      await redis.connect();
      await redis.ping();
      return { ok: true };
    } catch (error) {
      return { ok: false, message: `redis unreachable: ${(error as Error).message}` };
    } finally {
      redis.disconnect();
    }
  }
}
