/**
 * GET /v1/events/stream: one SSE stream of what changes in every job (status, checkpoints, training
 * progress), for the console's job list. It listens on every job's channel with one PSUBSCRIBE and
 * forwards only jobs of this API's database (several deployments or test runs may share a Redis).
 * Nothing is replayed: a client that reconnects reloads its list.
 */
import { type JobChange, jobEventChannel } from '@expertune/contracts';
import { Controller, Get, Inject, type OnModuleDestroy, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';

import { ApiException } from '../common/api-exception.js';
import { JobsService } from '../jobs/jobs.service.js';
import { QueueService } from '../queue/queue.service.js';
import { openSse, type SseResponse } from './sse.js';

/** Progress of one job is forwarded at most this often. */
const PROGRESS_EVERY_MS = 1_000;
/** Job ids remembered as ours or foreign, so a metric batch costs no query. */
const KNOWN_JOBS_LIMIT = 10_000;

/** What a worker's message on a job channel means for a job list, or null when nothing. */
export function jobChangeOf(jobId: string, message: string): JobChange | null {
  let parsed: { object?: string; type?: string; data?: { status?: unknown } | null; points?: { step?: unknown }[] };
  try {
    parsed = JSON.parse(message) as typeof parsed;
  } catch {
    return null;
  }
  if (parsed.object === 'fine_tuning.job.metrics') {
    const steps = (parsed.points ?? []).map((p) => Number(p.step)).filter(Number.isInteger);
    return steps.length > 0 ? { job_id: jobId, kind: 'progress', status: null, step: Math.max(...steps) } : null;
  }
  if (parsed.type === 'checkpoint') return { job_id: jobId, kind: 'checkpoint', status: null, step: null };
  if (parsed.type === 'status') {
    const status = parsed.data?.status;
    return {
      job_id: jobId,
      kind: 'status',
      status: typeof status === 'string' ? (status as JobChange['status']) : null,
      step: null,
    };
  }
  return null;
}

@Controller('v1/events')
export class JobChangesController implements OnModuleDestroy {
  private readonly openStreams = new Set<() => void>();
  private readonly knownJobs = new Map<string, boolean>();

  constructor(
    @Inject(JobsService) private readonly jobs: JobsService,
    @Inject(QueueService) private readonly queues: QueueService,
  ) {}

  @Get('stream')
  async stream(@Req() request: Request, @Res() response: Response): Promise<void> {
    const channelPrefix = jobEventChannel('');
    const subscriber = await this.queues.subscriber(`${channelPrefix}*`, { pattern: true }).catch((error: Error) => {
      // Changes only exist live, in Redis: without it there is nothing to stream (lists fall back to polling).
      throw new ApiException(
        503,
        'queue_unavailable',
        `live job changes need Redis, which is unreachable: ${error.message}`,
      );
    });
    const lastProgress = new Map<string, number>();
    let stream: SseResponse | null = null;
    let forwarding = Promise.resolve();

    subscriber.on('pmessage', (_pattern: string, channel: string, message: string) => {
      const change = jobChangeOf(channel.slice(channelPrefix.length), message);
      if (!change) return;
      if (change.kind === 'progress') {
        const now = Date.now();
        if (now - (lastProgress.get(change.job_id) ?? 0) < PROGRESS_EVERY_MS) return;
        lastProgress.set(change.job_id, now);
      }
      // One after the other, so a change never overtakes an earlier one while its job is looked up.
      forwarding = forwarding.then(async () => {
        if (await this.isOurs(change.job_id)) stream?.write(`event: job\ndata: ${JSON.stringify(change)}\n\n`);
      });
    });

    stream = openSse(request, response, 'changes of every job', () => subscriber.disconnect(), this.openStreams);
  }

  /** Whether the job is in this API's database (remembered both ways: ids are never reused). */
  private async isOurs(jobId: string): Promise<boolean> {
    const known = this.knownJobs.get(jobId);
    if (known !== undefined) return known;
    let ours: boolean;
    try {
      await this.jobs.requireJob(jobId);
      ours = true;
    } catch (error) {
      // Only a 404 says "foreign"; a database hiccup is asked again next time.
      if (!(error instanceof ApiException && error.status === 404)) return false;
      ours = false;
    }
    if (this.knownJobs.size >= KNOWN_JOBS_LIMIT) this.knownJobs.clear();
    this.knownJobs.set(jobId, ours);
    return ours;
  }

  onModuleDestroy(): void {
    for (const end of [...this.openStreams]) end();
  }
}
