/**
 * Starts the real Nest app in-process on an ephemeral port, on a throwaway Postgres database
 * (created through the server's `postgres` database, migrated by the app at start, dropped after)
 * and a BullMQ key prefix of its own on the real Redis.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { type ApiKeyScope, createApiKey } from '@expertune/db';
import type { ModuleMetadata } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { DataSource } from 'typeorm';

import { createApp } from '../src/app.js';
import { type ApiConfig, loadApiConfig } from '../src/config/api-config.js';
import { DATA_SOURCE } from '../src/database/database.module.js';

export interface TestEnvironment {
  databaseUrl: string;
  dataDir: string;
  queuePrefix: string;
  drop(): Promise<void>;
}

function adminUrl(): string {
  const url = new URL(process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres');
  url.pathname = '/postgres';
  return url.toString();
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl(), connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function deleteRedisKeys(pattern: string): Promise<void> {
  const redis = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379', { lazyConnect: true });
  try {
    await redis.connect();
    for await (const keys of redis.scanStream({ match: pattern, count: 500 }) as AsyncIterable<string[]>)
      if (keys.length > 0) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

export async function createTestEnvironment(): Promise<TestEnvironment> {
  const tag = randomBytes(6).toString('hex');
  const name = `expertune_api_test_${tag}`;
  await adminQuery(`CREATE DATABASE "${name}"`);
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'expertune-api-'));
  return {
    databaseUrl: url.toString(),
    dataDir,
    queuePrefix: `expertune-test-${tag}`,
    async drop() {
      await adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await deleteRedisKeys(`expertune-test-${tag}:*`);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface RunningApi {
  app: NestExpressApplication;
  baseUrl: string;
  config: ApiConfig;
  dataSource: DataSource;
  /** A live key with these scopes. */
  key(scopes: ApiKeyScope[]): Promise<string>;
  close(): Promise<void>;
}

export async function startApi(
  environment: TestEnvironment,
  overrides: Partial<ApiConfig> = {},
  imports: ModuleMetadata['imports'] = [],
): Promise<RunningApi> {
  const config: ApiConfig = {
    ...loadApiConfig(process.env),
    databaseUrl: environment.databaseUrl,
    dataDir: environment.dataDir,
    queuePrefix: environment.queuePrefix,
    port: 0,
    host: '127.0.0.1',
    ...overrides,
  };
  // Errors only on request: a failing test can show the server's side of a 500.
  const logger = process.env.EXPERTUNE_API_TEST_LOG ? (['error', 'warn'] as const) : false;
  const app = await createApp(config, { logger: logger ? [...logger] : false, imports });
  await app.listen(0, '127.0.0.1');
  const address = app.getHttpServer().address() as AddressInfo;
  const dataSource = app.get<DataSource>(DATA_SOURCE);
  return {
    app,
    config,
    dataSource,
    baseUrl: `http://127.0.0.1:${address.port}`,
    key: async (scopes) => (await createApiKey(dataSource, { name: `test-${scopes.join('-')}`, scopes })).key,
    close: () => app.close(),
  };
}

/** A TCP port nothing listens on (for "service down" cases). */
export const CLOSED_PORT = 1;
