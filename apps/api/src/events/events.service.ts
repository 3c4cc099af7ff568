/** Stored job events (Postgres) and the live ones (Redis pub/sub channel expertune:job:<id>). */
import type { JobEvent, ListEnvelope } from '@expertune/contracts';
import { JobEvent as JobEventRow } from '@expertune/db';
import { Inject, Injectable } from '@nestjs/common';
import type { DataSource } from 'typeorm';

import { ApiException } from '../common/api-exception.js';
import { unixSeconds } from '../common/pagination.js';
import { DATA_SOURCE } from '../database/database.module.js';

export function toJobEvent(row: JobEventRow): JobEvent {
  return {
    id: String(row.id),
    object: 'fine_tuning.job.event',
    job_id: row.jobId,
    created_at: unixSeconds(row.createdAt),
    level: row.level,
    type: row.type,
    message: row.message,
    data: row.data,
  };
}

/** Event ids are bigserial decimal strings: compare them as BigInt, never as text or float. */
export function parseEventId(value: string | undefined, param: string): bigint | null {
  if (value === undefined || value === '') return null;
  if (!/^\d{1,19}$/.test(value))
    throw new ApiException(
      422,
      'invalid_parameter',
      `${param}: expected an event id (digits), got ${JSON.stringify(value)}`,
      param,
    );
  return BigInt(value);
}

@Injectable()
export class EventsService {
  constructor(@Inject(DATA_SOURCE) private readonly dataSource: DataSource) {}

  /** Events after `after` (exclusive), oldest first. */
  async list(jobId: string, after: bigint | null, limit: number): Promise<ListEnvelope<JobEvent>> {
    const builder = this.dataSource
      .getRepository(JobEventRow)
      .createQueryBuilder('event')
      .where('event.jobId = :jobId', { jobId })
      .orderBy('event.id', 'ASC')
      .take(limit + 1);
    if (after !== null) builder.andWhere('event.id > :after', { after: after.toString() });
    const rows = await builder.getMany();
    const page = rows.slice(0, limit).map(toJobEvent);
    const hasMore = rows.length > limit;
    return { object: 'list', data: page, has_more: hasMore, next_cursor: hasMore ? page[page.length - 1]!.id : null };
  }
}
