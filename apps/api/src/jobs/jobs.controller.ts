import {
  type Job,
  jobListQuerySchema,
  jobResumeRequestSchema,
  type ListEnvelope,
  type ResolvedJobRequest,
  resolveJobRequest,
} from '@expertune/contracts';
import { Body, Controller, Delete, Get, HttpCode, Inject, Param, Post, Query } from '@nestjs/common';
import type { z } from 'zod';

import { CallerKeyId } from '../auth/caller-key.decorator.js';
import { ApiException } from '../common/api-exception.js';
import { ZodValidationPipe } from '../common/zod-validation.pipe.js';
import { JobsService } from './jobs.service.js';

/** Parses a job request with the shared schema and fills every default (echoed back in the job). */
class ResolveJobRequestPipe {
  transform(value: unknown): ResolvedJobRequest {
    const result = resolveJobRequest(value ?? {});
    if (!result.success) throw ApiException.fromZod(result.error);
    return result.data;
  }
}

@Controller('v1/jobs')
export class JobsController {
  constructor(@Inject(JobsService) private readonly jobs: JobsService) {}

  @Post()
  @HttpCode(200)
  create(
    @Body(new ResolveJobRequestPipe()) request: ResolvedJobRequest,
    @CallerKeyId() apiKeyId: string | null,
  ): Promise<Job> {
    return this.jobs.create(request, apiKeyId);
  }

  @Get()
  list(
    @Query(new ZodValidationPipe(jobListQuerySchema)) query: z.output<typeof jobListQuerySchema>,
  ): Promise<ListEnvelope<Job>> {
    return this.jobs.list(query);
  }

  @Get(':id')
  get(@Param('id') id: string): Promise<Job> {
    return this.jobs.get(id);
  }

  @Post(':id/cancel')
  @HttpCode(200)
  cancel(@Param('id') id: string): Promise<Job> {
    return this.jobs.cancel(id);
  }

  @Post(':id/resume')
  @HttpCode(200)
  resume(
    @Param('id') id: string,
    @Body(new ZodValidationPipe(jobResumeRequestSchema)) request: z.output<typeof jobResumeRequestSchema>,
  ): Promise<Job> {
    return this.jobs.resume(id, request.checkpoint);
  }

  @Delete(':id')
  delete(@Param('id') id: string) {
    return this.jobs.delete(id);
  }
}
