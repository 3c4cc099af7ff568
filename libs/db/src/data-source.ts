import pg from 'pg';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { TrackingSchema1732300000000 } from '../../../migrations/1732300000000-tracking-schema.js';
import { JobApiKey1732400000000 } from '../../../migrations/1732400000000-job-api-key.js';
import { ENTITIES } from './entities.js';

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/expertune';

/** Every migration, oldest first. Listed by class rather than by glob so bundlers and Vitest see them. */
export const MIGRATIONS = [TrackingSchema1732300000000, JobApiKey1732400000000] as const;

export const HOW_TO_START_POSTGRES =
  'Start PostgreSQL 15 on 127.0.0.1:5432 (Debian: `service postgresql start`; anywhere with Docker: ' +
  '`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`) or point DATABASE_URL at one.';

/** `DATABASE_URL`, else the development default (trust auth as user postgres, database expertune). */
export function databaseUrl(env: NodeJS.ProcessEnv = process.env): string {
  return env.DATABASE_URL || DEFAULT_DATABASE_URL;
}

export class DatabaseUnreachableError extends Error {
  constructor(
    readonly url: string,
    cause: unknown,
  ) {
    const reason = cause instanceof Error && cause.message ? cause.message : describeCode(cause);
    super(`PostgreSQL is not reachable at ${redactUrl(url)}: ${reason}. ${HOW_TO_START_POSTGRES}`, { cause });
    this.name = 'DatabaseUnreachableError';
  }
}

export interface CreateDataSourceOptions {
  url?: string;
  logging?: boolean;
  /** Pool size of the pg driver (default 10). */
  poolSize?: number;
  /**
   * Postgres `statement_timeout` of every connection (default EXPERTUNE_DB_STATEMENT_TIMEOUT_MS, else
   * 30 s; 0 turns it off): a stuck query fails instead of holding a request or a worker forever.
   */
  statementTimeoutMs?: number;
  /** Anything else of TypeORM's Postgres options; the schema settings below cannot be overridden. */
  extra?: Partial<Omit<DataSourceOptions & { type: 'postgres' }, 'type' | 'synchronize' | 'migrationsRun'>>;
}

/**
 * A DataSource over the tracking schema, not yet initialized. The schema belongs to the migrations:
 * `synchronize` and `migrationsRun` are always off (the API calls `runMigrations` itself at start).
 */
export function createDataSource(options: CreateDataSourceOptions = {}): DataSource {
  return new DataSource({
    ...options.extra,
    type: 'postgres',
    url: options.url ?? databaseUrl(),
    entities: [...ENTITIES],
    migrations: [...MIGRATIONS],
    migrationsTableName: 'typeorm_migrations',
    migrationsTransactionMode: 'each',
    synchronize: false,
    migrationsRun: false,
    logging: options.logging ?? false,
    poolSize: options.poolSize ?? 10,
    // Passed to pg's Pool: connecting gives up after 10 s, every statement after the timeout.
    extra: {
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      statement_timeout: options.statementTimeoutMs ?? statementTimeoutMs(),
      ...(options.extra?.extra as Record<string, unknown> | undefined),
    },
  });
}

const CONNECT_TIMEOUT_MS = 10_000;

function statementTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.EXPERTUNE_DB_STATEMENT_TIMEOUT_MS;
  const value = raw === undefined || raw === '' ? 30_000 : Number(raw);
  if (!Number.isInteger(value) || value < 0)
    throw new Error(`EXPERTUNE_DB_STATEMENT_TIMEOUT_MS=${JSON.stringify(raw)}: expected milliseconds ≥ 0`);
  return value;
}

/** Initializes `dataSource`, turning a refused connection into a message that says how to start Postgres. */
export async function connect(dataSource: DataSource): Promise<DataSource> {
  try {
    return await dataSource.initialize();
  } catch (error) {
    if (isConnectionError(error)) {
      throw new DatabaseUnreachableError(String((dataSource.options as { url?: string }).url ?? ''), error);
    }
    throw error;
  }
}

/** Creates the database named in `url` if it does not exist, connecting through its server's `postgres` database. */
export async function ensureDatabase(url: string): Promise<{ created: boolean; database: string }> {
  const target = new URL(url);
  const database = decodeURIComponent(target.pathname.replace(/^\//, ''));
  if (!database) throw new Error(`DATABASE_URL ${redactUrl(url)} names no database (expected …/<database>)`);
  const admin = new URL(url);
  admin.pathname = database === 'postgres' ? '/template1' : '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  try {
    await client.connect();
  } catch (error) {
    if (isConnectionError(error)) throw new DatabaseUnreachableError(url, error);
    throw error;
  }
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (found.rowCount) return { created: false, database };
    await client.query(`CREATE DATABASE ${quoteIdentifier(database)}`);
    return { created: true, database };
  } finally {
    await client.end();
  }
}

/**
 * Applies the pending migrations (each in its own transaction) and returns their names.
 * Creates the database first when it does not exist.
 */
export async function runMigrations(url: string = databaseUrl()): Promise<string[]> {
  await ensureDatabase(url);
  const dataSource = await connect(createDataSource({ url, poolSize: 1 }));
  try {
    const applied = await dataSource.runMigrations({ transaction: 'each' });
    return applied.map((migration) => migration.name);
  } finally {
    await dataSource.destroy();
  }
}

export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<unparseable DATABASE_URL>';
  }
}

function describeCode(error: unknown): string {
  const code = error && typeof error === 'object' ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : String(error);
}

const CONNECTION_ERROR_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'ECONNRESET']);

function isConnectionError(error: unknown): boolean {
  if (!error || typeof error !== 'object') return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && CONNECTION_ERROR_CODES.has(code)) return true;
  // An AggregateError from trying both ::1 and 127.0.0.1.
  const errors = (error as { errors?: unknown }).errors;
  return Array.isArray(errors) && errors.some(isConnectionError);
}
