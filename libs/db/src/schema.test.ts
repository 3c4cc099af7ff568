import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import {
  createDataSource,
  DatabaseUnreachableError,
  ensureDatabase,
  quoteIdentifier,
  runMigrations,
} from './data-source.js';
import { Artifact, Checkpoint, Dataset, Job, JobEvent, Model } from './entities.js';
import { insertMetrics } from './metrics.js';
import { createTestDatabase, type TestDatabase } from './test-db.test-util.js';
import { seedJob } from './seed.test-util.js';

const TABLES = [
  'api_keys',
  'artifacts',
  'checkpoints',
  'datasets',
  'job_attempts',
  'job_events',
  'jobs',
  'metrics',
  'models',
];

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.dataSource.runMigrations();
});
afterAll(async () => db?.drop());

async function tables(): Promise<string[]> {
  const rows: { table_name: string }[] = await db.dataSource.query(
    `SELECT table_name FROM information_schema.tables
      WHERE table_schema = 'public' AND table_name <> 'typeorm_migrations' ORDER BY table_name`,
  );
  return rows.map((row) => row.table_name);
}

describe('the tracking schema migration', () => {
  it('creates every table of the tracking schema', async () => {
    expect(await tables()).toEqual(TABLES);
    const indexes: { indexname: string }[] = await db.dataSource.query(
      `SELECT indexname FROM pg_indexes WHERE tablename IN ('jobs', 'job_events', 'metrics')`,
    );
    expect(indexes.map((row) => row.indexname)).toEqual(
      expect.arrayContaining(['jobs_status_created_at_idx', 'job_events_job_id_id_idx', 'metrics_pkey']),
    );
  });

  it('round-trips every entity through TypeORM repositories (entities match the SQL)', async () => {
    const { job, model, dataset } = await seedJob(db.dataSource);
    expect(job.status).toBe('queued');
    expect(job.accelerator).toBe('cpu');
    expect(job.stepsCompleted).toBe(0);
    expect(job.tokensProcessed).toBe(0);
    expect(model.parameterCount).toBe(135_000_000_000);
    const artifact = await db.dataSource.getRepository(Artifact).save({
      jobId: job.id,
      kind: 'adapter',
      name: 'adapter.safetensors',
      storageKey: `jobs/${job.id}/adapter.safetensors`,
      bytes: 1234,
      sha256: 'a'.repeat(64),
    });
    await db.dataSource.getRepository(Job).update(job.id, { resultArtifactId: artifact.id, tokensProcessed: 2 ** 40 });
    const loaded = await db.dataSource.getRepository(Job).findOneOrFail({
      where: { id: job.id },
      relations: { baseModel: true, trainingDataset: true, resultArtifact: true },
    });
    expect(loaded.baseModel?.name).toBe(model.name);
    expect(loaded.trainingDataset?.sha256).toBe(dataset.sha256);
    expect(loaded.resultArtifact?.bytes).toBe(1234);
    expect(loaded.tokensProcessed).toBe(2 ** 40);
    expect(loaded.createdAt).toBeInstanceOf(Date);
    const event = await db.dataSource
      .getRepository(JobEvent)
      .save({ jobId: job.id, level: 'info', type: 'status', message: 'queued', data: { status: 'queued' } });
    expect(typeof event.id).toBe('string');
  });

  it('ignores a duplicate metric step in insertMetrics and rejects it in a plain INSERT', async () => {
    const { job } = await seedJob(db.dataSource);
    const point = { jobId: job.id, name: 'train/loss', step: 10, value: 2.5 };
    expect(await insertMetrics(db.dataSource, [point])).toBe(1);
    expect(await insertMetrics(db.dataSource, [{ ...point, value: 9 }])).toBe(0);
    const rows: { value: number }[] = await db.dataSource.query(`SELECT value FROM metrics WHERE job_id = $1`, [
      job.id,
    ]);
    expect(rows).toEqual([{ value: 2.5 }]);
    await expect(
      db.dataSource.query(`INSERT INTO metrics (job_id, name, step, value) VALUES ($1, 'train/loss', 10, 1)`, [job.id]),
    ).rejects.toThrow(/metrics_pkey/);
  });

  it('rejects a status, level or artifact kind outside its CHECK list', async () => {
    const { job } = await seedJob(db.dataSource);
    await expect(db.dataSource.query(`UPDATE jobs SET status = 'paused' WHERE id = $1`, [job.id])).rejects.toThrow(
      /jobs_status_check/,
    );
    await expect(
      db.dataSource.query(`INSERT INTO job_events (job_id, level, type, message) VALUES ($1, 'debug', 't', 'm')`, [
        job.id,
      ]),
    ).rejects.toThrow(/job_events_level_check/);
    await expect(
      db.dataSource.query(
        `INSERT INTO artifacts (kind, name, storage_key, bytes, sha256) VALUES ('weights', 'n', 'k', 1, $1)`,
        ['0'.repeat(64)],
      ),
    ).rejects.toThrow(/artifacts_kind_check/);
    await expect(
      db.dataSource.query(`INSERT INTO api_keys (name, prefix, key_hash, scopes) VALUES ('k', 'p', 'h', '{root}')`),
    ).rejects.toThrow(/api_keys_scopes_check/);
  });

  it('deleting a job cascades to its events, metrics, checkpoints and attempts, and unlinks its artifacts', async () => {
    const { job } = await seedJob(db.dataSource);
    await insertMetrics(db.dataSource, [{ jobId: job.id, name: 'train/loss', step: 1, value: 1 }]);
    await db.dataSource.getRepository(JobEvent).save({ jobId: job.id, level: 'info', type: 't', message: 'm' });
    await db.dataSource.getRepository(Checkpoint).save({ jobId: job.id, step: 100, storageKey: 'c/100' });
    await db.dataSource.query(`INSERT INTO job_attempts (job_id, attempt, worker_id) VALUES ($1, 1, 'w1')`, [job.id]);
    const artifact = await db.dataSource.getRepository(Artifact).save({
      jobId: job.id,
      kind: 'checkpoint',
      name: 'c',
      storageKey: 'c/100',
      bytes: 1,
      sha256: 'b'.repeat(64),
    });

    await db.dataSource.getRepository(Job).delete(job.id);

    for (const table of ['metrics', 'job_events', 'checkpoints', 'job_attempts']) {
      const [{ n }] = await db.dataSource.query(`SELECT count(*)::int AS n FROM ${table} WHERE job_id = $1`, [job.id]);
      expect(n, table).toBe(0);
    }
    const kept = await db.dataSource.getRepository(Artifact).findOneByOrFail({ id: artifact.id });
    expect(kept.jobId).toBeNull();
  });

  it('refuses a second checkpoint or attempt with the same number for one job', async () => {
    const { job } = await seedJob(db.dataSource);
    await db.dataSource.getRepository(Checkpoint).save({ jobId: job.id, step: 5, storageKey: 'a' });
    await expect(
      db.dataSource.getRepository(Checkpoint).save({ jobId: job.id, step: 5, storageKey: 'b' }),
    ).rejects.toThrow(/checkpoints_job_id_step_key/);
    await db.dataSource.query(`INSERT INTO job_attempts (job_id, attempt, worker_id) VALUES ($1, 1, 'w1')`, [job.id]);
    await expect(
      db.dataSource.query(`INSERT INTO job_attempts (job_id, attempt, worker_id) VALUES ($1, 1, 'w2')`, [job.id]),
    ).rejects.toThrow(/job_attempts_job_id_attempt_key/);
  });

  it('refuses a job whose model or dataset does not exist', async () => {
    await expect(
      db.dataSource.getRepository(Job).insert({
        method: 'lora',
        baseModelId: '00000000-0000-4000-8000-000000000000',
        trainingDatasetId: '00000000-0000-4000-8000-000000000000',
        config: {},
        seed: 1,
      }),
    ).rejects.toThrow(/jobs_base_model_id_fkey/);
  });

  it('down drops everything cleanly, and up works again', async () => {
    await db.dataSource.undoLastMigration();
    await db.dataSource.undoLastMigration();
    expect(await tables()).toEqual([]);
    const [{ n }] = await db.dataSource.query(`SELECT count(*)::int AS n FROM typeorm_migrations`);
    expect(n).toBe(0);
    const applied = await db.dataSource.runMigrations();
    expect(applied.map((migration) => migration.name)).toEqual([
      'TrackingSchema1732300000000',
      'JobApiKey1732400000000',
    ]);
    expect(await tables()).toEqual(TABLES);
    expect(await db.dataSource.runMigrations()).toEqual([]);
  });

  it('cancels a statement that runs past the statement timeout, and the connection goes on working', async () => {
    const timed = await createDataSource({ url: db.url, poolSize: 1, statementTimeoutMs: 100 }).initialize();
    try {
      await expect(timed.query('SELECT pg_sleep(5)')).rejects.toThrow(/statement timeout/);
      expect(await timed.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
    } finally {
      await timed.destroy();
    }
  });

  it('keeps Model and Dataset exported for the API', () => {
    expect(Model.name).toBe('Model');
    expect(Dataset.name).toBe('Dataset');
  });

  it('runMigrations creates a missing database, applies the pending migrations, then finds nothing to do', async () => {
    const url = new URL(db.url);
    url.pathname = `/${db.name}_fresh`;
    try {
      expect(await runMigrations(url.toString())).toEqual(['TrackingSchema1732300000000', 'JobApiKey1732400000000']);
      expect(await runMigrations(url.toString())).toEqual([]);
    } finally {
      const admin = new URL(db.url);
      admin.pathname = '/postgres';
      const client = new pg.Client({ connectionString: admin.toString() });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(`${db.name}_fresh`)} WITH (FORCE)`);
      await client.end();
    }
  });

  it('says how to start Postgres when it is unreachable', async () => {
    const error = await ensureDatabase('postgres://postgres@127.0.0.1:1/expertune').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseUnreachableError);
    expect((error as Error).message).toMatch(
      /not reachable at postgres:\/\/postgres@127\.0\.0\.1:1\/expertune.*service postgresql start/,
    );
  });
});
