import type { DataSource } from 'typeorm';

export interface MetricRow {
  jobId: string;
  name: string;
  step: number;
  value: number;
}

export interface MetricPoint {
  step: number;
  value: number;
}

/**
 * Rows per statement. The rows travel as four array parameters through `unnest`, so Postgres'
 * 65535 bind-parameter limit never applies; the chunk only bounds one statement's size (~1 MB).
 */
export const METRIC_INSERT_CHUNK = 10_000;

/**
 * Appends metric points, ignoring any (job, name, step) already stored — a job resumed from a
 * checkpoint replays steps it may have logged before. Returns how many rows were new.
 */
export async function insertMetrics(dataSource: DataSource, rows: readonly MetricRow[]): Promise<number> {
  let inserted = 0;
  for (let start = 0; start < rows.length; start += METRIC_INSERT_CHUNK) {
    const chunk = rows.slice(start, start + METRIC_INSERT_CHUNK);
    const jobIds = new Array<string>(chunk.length);
    const names = new Array<string>(chunk.length);
    const steps = new Array<number>(chunk.length);
    const values = new Array<number>(chunk.length);
    chunk.forEach((row, i) => {
      if (!Number.isInteger(row.step)) throw new TypeError(`metric ${row.name}: step ${row.step} is not an integer`);
      jobIds[i] = row.jobId;
      names[i] = row.name;
      steps[i] = row.step;
      values[i] = row.value;
    });
    const queryRunner = dataSource.createQueryRunner();
    try {
      const result = await queryRunner.query(
        `INSERT INTO metrics (job_id, name, step, value)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::double precision[])
         ON CONFLICT (job_id, name, step) DO NOTHING`,
        [jobIds, names, steps, values],
        true,
      );
      inserted += result.affected ?? 0;
    } finally {
      await queryRunner.release();
    }
  }
  return inserted;
}

export interface MetricSeriesOptions {
  /** First step included (inclusive). */
  from?: number;
  /** Last step included (inclusive). */
  to?: number;
  /**
   * At most this many points per name. Steps are cut into `maxPoints` equal-width buckets between
   * the series' first and last step (`width_bucket`), and each bucket reports its **last** point:
   * a real (step, value) the run logged, so the curve's end and any step the chart labels are exact.
   * A series with no more points than `maxPoints` comes back whole.
   */
  maxPoints?: number;
}

/** Per requested name (every name present, possibly empty), its points in step order. */
export async function metricSeries(
  dataSource: DataSource,
  jobId: string,
  names: readonly string[],
  options: MetricSeriesOptions = {},
): Promise<Record<string, MetricPoint[]>> {
  const { from = null, to = null, maxPoints = null } = options;
  if (maxPoints !== null && (!Number.isInteger(maxPoints) || maxPoints < 1)) {
    throw new RangeError(`maxPoints: expected a positive integer, got ${maxPoints}`);
  }
  const rows: { name: string; step: number; value: number }[] = await dataSource.query(
    `WITH points AS (
       SELECT name, step, value FROM metrics
        WHERE job_id = $1 AND name = ANY($2::text[])
          AND ($3::integer IS NULL OR step >= $3) AND ($4::integer IS NULL OR step <= $4)
     ), bounds AS (
       SELECT name, min(step) AS first_step, max(step) AS last_step, count(*) AS n FROM points GROUP BY name
     ), bucketed AS (
       SELECT p.name, p.step, p.value,
              CASE WHEN $5::integer IS NULL OR b.n <= $5 THEN p.step
                   ELSE width_bucket(p.step::double precision, b.first_step::double precision,
                                     b.last_step + 1::double precision, $5::integer)
              END AS bucket
         FROM points p JOIN bounds b USING (name)
     )
     SELECT DISTINCT ON (name, bucket) name, step, value
       FROM bucketed
      ORDER BY name, bucket, step DESC`,
    [jobId, [...names], from, to, maxPoints],
  );
  const series: Record<string, MetricPoint[]> = Object.fromEntries(names.map((name) => [name, []]));
  for (const row of rows) series[row.name]!.push({ step: row.step, value: row.value });
  for (const points of Object.values(series)) points.sort((a, b) => a.step - b.step);
  return series;
}
