/**
 * GET /v1/jobs/:id/events (list) and /events/stream (SSE). The stream subscribes first, then
 * replays stored events after Last-Event-ID, then forwards live ones with a larger id: nothing
 * published during the replay is lost, and nothing is sent twice.
 */
import type { JobEvent } from '@expertune/contracts';
import { pageQuerySchema } from '@expertune/contracts';
import { Controller, Get, Headers, Inject, type OnModuleDestroy, Param, Query, Req, Res } from '@nestjs/common';
import type { Redis } from 'ioredis';
import type { Request, Response } from 'express';
import { z } from 'zod';

import { ZodValidationPipe } from '../common/zod-validation.pipe.js';
import { JobsService } from '../jobs/jobs.service.js';
import { QueueService, jobEventChannel } from '../queue/queue.service.js';
import { EventsService, parseEventId } from './events.service.js';
import { openSse, type SseResponse } from './sse.js';

const REPLAY_PAGE = 500;

const eventsQuerySchema = pageQuerySchema.extend({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

@Controller('v1/jobs/:id/events')
export class EventsController implements OnModuleDestroy {
  /** Open streams, ended at shutdown so the HTTP server can close. */
  private readonly openStreams = new Set<() => void>();

  constructor(
    @Inject(EventsService) private readonly events: EventsService,
    @Inject(JobsService) private readonly jobs: JobsService,
    @Inject(QueueService) private readonly queues: QueueService,
  ) {}

  @Get()
  async list(
    @Param('id') id: string,
    @Query(new ZodValidationPipe(eventsQuerySchema)) query: z.output<typeof eventsQuerySchema>,
  ) {
    await this.jobs.requireJob(id);
    return this.events.list(id, parseEventId(query.after, 'after'), query.limit);
  }

  @Get('stream')
  async stream(
    @Param('id') id: string,
    @Headers('last-event-id') lastEventIdHeader: string | undefined,
    @Query('last_event_id') lastEventIdQuery: string | undefined,
    @Req() request: Request,
    @Res() response: Response,
  ): Promise<void> {
    await this.jobs.requireJob(id);
    let lastSent = parseEventId(lastEventIdHeader ?? lastEventIdQuery, 'Last-Event-ID') ?? 0n;

    const pending: JobEvent[] = [];
    let replaying = true;
    let stream: SseResponse | null = null;
    const send = (event: JobEvent) => {
      const eventId = BigInt(event.id);
      if (!stream || stream.closed || eventId <= lastSent) return;
      lastSent = eventId;
      stream.write(`id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
    };
    const onMessage = (_channel: string, message: string) => {
      let event: JobEvent;
      try {
        const parsed = JSON.parse(message) as Partial<JobEvent>;
        if (parsed.id === undefined || !/^\d+$/.test(String(parsed.id))) return;
        event = {
          object: 'fine_tuning.job.event',
          job_id: id,
          data: null,
          ...parsed,
          id: String(parsed.id),
        } as JobEvent;
      } catch {
        return;
      }
      if (replaying) pending.push(event);
      else send(event);
    };
    // Live events need Redis; without it the stream still replays what Postgres holds.
    const subscriber: Redis | null = await this.queues.subscriber(jobEventChannel(id)).catch(() => null);
    subscriber?.on('message', onMessage);

    stream = openSse(request, response, 'stream of job events', () => subscriber?.disconnect(), this.openStreams);

    try {
      for (;;) {
        const page = await this.events.list(id, lastSent, REPLAY_PAGE);
        for (const event of page.data) send(event);
        if (!page.has_more || stream.closed) break;
      }
    } catch (error) {
      stream.end();
      throw error;
    }
    replaying = false;
    for (const event of pending.splice(0)) send(event);
  }

  onModuleDestroy(): void {
    for (const end of [...this.openStreams]) end();
  }
}
