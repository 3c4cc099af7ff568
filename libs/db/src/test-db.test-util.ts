import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import { connect, createDataSource, HOW_TO_START_POSTGRES, quoteIdentifier, redactUrl } from './data-source.js';

/**
 * A throwaway database per test file: `expertune_test_<random>` on the server of DATABASE_URL
 * (default 127.0.0.1:5432, user postgres), created through its `postgres` database and dropped after.
 */
export interface TestDatabase {
  url: string;
  name: string;
  /** A DataSource on the database, initialized, migrations not run. */
  dataSource: DataSource;
  drop(): Promise<void>;
}

function adminUrl(): string {
  const url = new URL(process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres');
  url.pathname = '/postgres';
  return url.toString();
}

async function adminQuery(sql: string): Promise<void> {
  const url = adminUrl();
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(
      `The @expertune/db tests need PostgreSQL and cannot reach ${redactUrl(url)} (${describe(error)}). ` +
        `${HOW_TO_START_POSTGRES} CI starts it as a service.`,
      { cause: error },
    );
  }
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `expertune_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${quoteIdentifier(name)}`);
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  const dataSource = await connect(createDataSource({ url: url.toString(), poolSize: 4 }));
  return {
    url: url.toString(),
    name,
    dataSource,
    async drop() {
      if (dataSource.isInitialized) await dataSource.destroy();
      await adminQuery(`DROP DATABASE IF EXISTS ${quoteIdentifier(name)} WITH (FORCE)`);
    },
  };
}

function describe(error: unknown): string {
  if (error instanceof Error && error.message) return error.message;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : String(error);
}
