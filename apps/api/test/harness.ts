/**
 * Starts the real Nest app in-process on an ephemeral port, on a throwaway Postgres database
 * (created through the server's `postgres` database, migrated by the app at start, dropped after)
 * and a BullMQ key prefix of its own on the real Redis.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { type ApiKeyScope, createApiKey } from '@expertune/db';
import { createTestDatabase, deleteRedisKeys } from '@expertune/db/testing';
import type { ModuleMetadata } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { Redis } from 'ioredis';
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

export async function createTestEnvironment(): Promise<TestEnvironment> {
  // Not migrated: the app applies the migrations at start.
  const database = await createTestDatabase({ prefix: 'expertune_api_test', migrate: false });
  const queuePrefix = `expertune-test-${database.suffix}`;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'expertune-api-'));
  return {
    databaseUrl: database.url,
    dataDir,
    queuePrefix,
    async drop() {
      await database.drop();
      await deleteRedisKeys(
        new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379', { lazyConnect: true }),
        `${queuePrefix}:*`,
      );
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
