import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertMetrics, metricSeries, type MetricRow } from './metrics.js';
import { createTestDatabase, type TestDatabase } from './test-db.test-util.js';
import { seedJob } from './seed.test-util.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.dataSource.runMigrations();
});
afterAll(async () => db?.drop());

describe('insertMetrics', () => {
  it('counts only new points, including duplicates within one batch and across chunks', async () => {
    const { job } = await seedJob(db.dataSource);
    const rows: MetricRow[] = Array.from({ length: 25_000 }, (_, step) => ({
      jobId: job.id,
      name: 'train/loss',
      step,
      value: 1 / (step + 1),
    }));
    rows.push({ jobId: job.id, name: 'train/loss', step: 3, value: 99 });
    expect(await insertMetrics(db.dataSource, rows)).toBe(25_000);
    // A resumed job replays steps 24_990..25_009: only the ten beyond the last stored step are new.
    const replay = Array.from({ length: 20 }, (_, i) => ({
      jobId: job.id,
      name: 'train/loss',
      step: 24_990 + i,
      value: 0,
    }));
    expect(await insertMetrics(db.dataSource, replay)).toBe(10);
    expect(await insertMetrics(db.dataSource, [])).toBe(0);
  });

  it('stores NaN and infinite values (a diverged loss is still a point)', async () => {
    const { job } = await seedJob(db.dataSource);
    await insertMetrics(db.dataSource, [
      { jobId: job.id, name: 'loss', step: 1, value: Number.NaN },
      { jobId: job.id, name: 'loss', step: 2, value: Number.POSITIVE_INFINITY },
    ]);
    const series = await metricSeries(db.dataSource, job.id, ['loss']);
    expect(series.loss![0]!.value).toBeNaN();
    expect(series.loss![1]!.value).toBe(Number.POSITIVE_INFINITY);
  });

  it('inserts 20,000 points in well under 10 s (sanity floor of the >= 5,000 points/s target)', async () => {
    const { job } = await seedJob(db.dataSource);
    const names = ['train/loss', 'train/lr', 'train/grad_norm', 'router/entropy'];
    const rows: MetricRow[] = [];
    for (let step = 0; step < 5_000; step++) {
      for (const name of names) rows.push({ jobId: job.id, name, step, value: Math.sin(step) });
    }
    // The worker sends what it gathered every few seconds: batches of 500 points, not one huge call.
    const started = performance.now();
    let inserted = 0;
    for (let i = 0; i < rows.length; i += 500) inserted += await insertMetrics(db.dataSource, rows.slice(i, i + 500));
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `insertMetrics: ${rows.length} points in ${seconds.toFixed(3)} s = ${Math.round(rows.length / seconds)} points/s (batches of 500)`,
    );
    expect(inserted).toBe(20_000);
    expect(seconds).toBeLessThan(10);
  });
});

describe('metricSeries', () => {
  it('returns every point in step order without maxPoints, and an empty list for an unknown name', async () => {
    const { job } = await seedJob(db.dataSource);
    await insertMetrics(db.dataSource, [
      { jobId: job.id, name: 'eval/loss', step: 20, value: 2 },
      { jobId: job.id, name: 'eval/loss', step: 10, value: 3 },
      { jobId: job.id, name: 'train/loss', step: 10, value: 4 },
    ]);
    expect(await metricSeries(db.dataSource, job.id, ['eval/loss', 'none'])).toEqual({
      'eval/loss': [
        { step: 10, value: 3 },
        { step: 20, value: 2 },
      ],
      none: [],
    });
  });

  it('buckets steps into maxPoints equal-width buckets and keeps the last point of each', async () => {
    const { job } = await seedJob(db.dataSource);
    // steps 0..9, value = 10·step; 3 buckets over [0, 10): {0,1,2,3}, {4,5,6}, {7,8,9} → last steps 3, 6, 9.
    await insertMetrics(
      db.dataSource,
      Array.from({ length: 10 }, (_, step) => ({ jobId: job.id, name: 'loss', step, value: 10 * step })),
    );
    expect((await metricSeries(db.dataSource, job.id, ['loss'], { maxPoints: 3 })).loss).toEqual([
      { step: 3, value: 30 },
      { step: 6, value: 60 },
      { step: 9, value: 90 },
    ]);
    // from/to first narrow the series to steps 2..7 (6 points); 2 buckets over [2, 8): {2,3,4}, {5,6,7}.
    expect((await metricSeries(db.dataSource, job.id, ['loss'], { from: 2, to: 7, maxPoints: 2 })).loss).toEqual([
      { step: 4, value: 40 },
      { step: 7, value: 70 },
    ]);
    // No more points than maxPoints: the series comes back whole.
    expect((await metricSeries(db.dataSource, job.id, ['loss'], { to: 2, maxPoints: 5 })).loss).toEqual([
      { step: 0, value: 0 },
      { step: 1, value: 10 },
      { step: 2, value: 20 },
    ]);
  });

  it('keeps at most maxPoints per name over a long series, ending on the last step', async () => {
    const { job } = await seedJob(db.dataSource);
    await insertMetrics(
      db.dataSource,
      Array.from({ length: 10_001 }, (_, step) => ({ jobId: job.id, name: 'loss', step, value: step })),
    );
    const { loss } = await metricSeries(db.dataSource, job.id, ['loss'], { maxPoints: 200 });
    expect(loss!.length).toBeLessThanOrEqual(200);
    expect(loss!.length).toBeGreaterThan(190);
    expect(loss!.at(-1)).toEqual({ step: 10_000, value: 10_000 });
    await expect(metricSeries(db.dataSource, job.id, ['loss'], { maxPoints: 0 })).rejects.toThrow(/maxPoints/);
  });
});
