import { type Dataset, type ListEnvelope, pageQuerySchema } from '@expertune/contracts';
import { Controller, Delete, Get, HttpCode, Inject, Param, Post, Query, Req } from '@nestjs/common';
import type { Request } from 'express';
import type { z } from 'zod';

import { ZodValidationPipe } from '../common/zod-validation.pipe.js';
import { DatasetsService } from './datasets.service.js';

@Controller('v1/datasets')
export class DatasetsController {
  constructor(@Inject(DatasetsService) private readonly datasets: DatasetsService) {}

  /** multipart/form-data: `file` (JSONL), optional `model` (tokenizer for token stats), `format`, `name`. */
  @Post()
  @HttpCode(200)
  upload(@Req() request: Request): Promise<Dataset> {
    return this.datasets.upload(request);
  }

  @Get()
  list(
    @Query(new ZodValidationPipe(pageQuerySchema)) query: z.output<typeof pageQuerySchema>,
  ): Promise<ListEnvelope<Dataset>> {
    return this.datasets.list(query);
  }

  @Get(':id')
  get(@Param('id') id: string): Promise<Dataset> {
    return this.datasets.get(id);
  }

  @Delete(':id')
  delete(@Param('id') id: string) {
    return this.datasets.delete(id);
  }
}
