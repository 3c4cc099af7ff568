/** GET /v1/jobs/:id/metrics (downsampled series, libs/db metricSeries) and /checkpoints. */
import { type Checkpoint, type ListEnvelope, metricQuerySchema, type MetricSeriesList } from '@expertune/contracts';
import { Checkpoint as CheckpointRow, metricSeries } from '@expertune/db';
import { Controller, Get, Inject, Param, Query } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import type { z } from 'zod';

import { ApiException } from '../common/api-exception.js';
import { unixSeconds } from '../common/pagination.js';
import { ZodValidationPipe } from '../common/zod-validation.pipe.js';
import { DATA_SOURCE } from '../database/database.module.js';
import { JobsService } from './jobs.service.js';

@Controller('v1/jobs/:id')
export class JobProgressController {
  constructor(
    @Inject(JobsService) private readonly jobs: JobsService,
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
  ) {}

  @Get('metrics')
  async metrics(
    @Param('id') id: string,
    @Query(new ZodValidationPipe(metricQuerySchema)) query: z.output<typeof metricQuerySchema>,
  ): Promise<MetricSeriesList> {
    await this.jobs.requireJob(id);
    if (query.from !== undefined && query.to !== undefined && query.from > query.to)
      throw new ApiException(422, 'invalid_parameter', `from (${query.from}) is after to (${query.to})`, 'from');
    let names = query.names;
    if (!names || names.length === 0) {
      const rows: { name: string }[] = await this.dataSource.query(
        'SELECT DISTINCT name FROM metrics WHERE job_id = $1 ORDER BY name',
        [id],
      );
      names = rows.map((row) => row.name);
    }
    const series = await metricSeries(this.dataSource, id, names, {
      ...(query.from !== undefined ? { from: query.from } : {}),
      ...(query.to !== undefined ? { to: query.to } : {}),
      maxPoints: query.max_points,
    });
    const counts: { name: string; n: string }[] = await this.dataSource.query(
      `SELECT name, count(*) AS n FROM metrics WHERE job_id = $1 AND name = ANY($2::text[])
         AND ($3::integer IS NULL OR step >= $3) AND ($4::integer IS NULL OR step <= $4) GROUP BY name`,
      [id, names, query.from ?? null, query.to ?? null],
    );
    const total = new Map(counts.map((row) => [row.name, Number(row.n)]));
    return {
      object: 'list',
      job_id: id,
      data: names.map((name) => {
        const points = series[name] ?? [];
        return {
          name,
          steps: points.map((p) => p.step),
          values: points.map((p) => p.value),
          downsampled: (total.get(name) ?? 0) > points.length,
        };
      }),
    };
  }

  @Get('checkpoints')
  async checkpoints(@Param('id') id: string): Promise<ListEnvelope<Checkpoint>> {
    await this.jobs.requireJob(id);
    const rows = await this.dataSource
      .getRepository(CheckpointRow)
      .find({ where: { jobId: id }, order: { step: 'DESC' } });
    const data = await Promise.all(
      rows.map(async (row): Promise<Checkpoint> => {
        const values: { name: string; value: number }[] = await this.dataSource.query(
          'SELECT name, value FROM metrics WHERE job_id = $1 AND step = $2',
          [id, row.step],
        );
        const metrics: Record<string, number> = Object.fromEntries(values.map((v) => [v.name, v.value]));
        if (row.evalLoss !== null) metrics.valid_loss = row.evalLoss;
        return {
          id: row.id,
          object: 'fine_tuning.job.checkpoint',
          job_id: id,
          step_number: row.step,
          created_at: unixSeconds(row.createdAt),
          metrics,
        };
      }),
    );
    return { object: 'list', data, has_more: false, next_cursor: null };
  }
}
