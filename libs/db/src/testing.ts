/**
 * Throwaway databases and Redis key clean-up for tests and benchmarks (`@expertune/db/testing`).
 * A test database is `<prefix>_<random hex>` on the server of DATABASE_URL (default 127.0.0.1:5432,
 * user postgres), created through that server's `postgres` database, migrated, and dropped WITH (FORCE).
 */
import { randomBytes } from 'node:crypto';

import { connect, createDataSource, quoteIdentifier, runMigrations } from './data-source.js';

export interface TestDatabase {
  /** DATABASE_URL of the new database. */
  url: string;
  /** The database's name, `<prefix>_<suffix>`. */
  name: string;
  /** The random hex part of the name, for other per-test names (queue prefixes, …). */
  suffix: string;
  /** Drops the database WITH (FORCE) (open connections are closed). */
  drop(): Promise<void>;
}

export interface CreateTestDatabaseOptions {
  /** Start of the database name (default `expertune_test`). */
  prefix?: string;
  /** Apply the migrations with runMigrations (default true); false leaves the database empty. */
  migrate?: boolean;
}

/** `url` (default DATABASE_URL, else 127.0.0.1:5432 as user postgres) with its database replaced by `database`. */
export function serverDatabaseUrl(database: string, url = process.env.DATABASE_URL): string {
  const server = new URL(url || 'postgres://postgres@127.0.0.1:5432/postgres');
  server.pathname = `/${database}`;
  return server.toString();
}

async function adminSql(sql: string): Promise<void> {
  // connect() turns a refused connection into a message that says how to start Postgres.
  const server = await connect(createDataSource({ url: serverDatabaseUrl('postgres'), poolSize: 1 }));
  try {
    await server.query(sql);
  } finally {
    await server.destroy();
  }
}

export async function createTestDatabase(options: CreateTestDatabaseOptions = {}): Promise<TestDatabase> {
  const suffix = randomBytes(6).toString('hex');
  const name = `${options.prefix ?? 'expertune_test'}_${suffix}`;
  await adminSql(`CREATE DATABASE ${quoteIdentifier(name)}`);
  const url = serverDatabaseUrl(name);
  const drop = () => adminSql(`DROP DATABASE IF EXISTS ${quoteIdentifier(name)} WITH (FORCE)`);
  if (options.migrate ?? true) {
    try {
      await runMigrations(url);
    } catch (error) {
      await drop();
      throw error;
    }
  }
  return { url, name, suffix, drop };
}

/** What deleteRedisKeys needs of a Redis client (an ioredis `Redis` created with `lazyConnect: true`). */
export interface RedisKeyClient {
  connect(): Promise<unknown>;
  scanStream(options: { match: string; count: number }): AsyncIterable<string[]>;
  del(...keys: string[]): Promise<unknown>;
  disconnect(): void;
}

/** Connects `redis`, deletes every key matching `pattern` (e.g. `<queue prefix>:*`), then disconnects it. */
export async function deleteRedisKeys(redis: RedisKeyClient, pattern: string): Promise<void> {
  try {
    await redis.connect();
    for await (const keys of redis.scanStream({ match: pattern, count: 500 }))
      if (keys.length > 0) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}
