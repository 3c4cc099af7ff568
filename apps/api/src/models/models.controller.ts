import { type ListEnvelope, type Model, modelRegisterRequestSchema, pageQuerySchema } from '@expertune/contracts';
import { Body, Controller, Get, HttpCode, Inject, Param, Post, Query } from '@nestjs/common';
import type { z } from 'zod';

import { ZodValidationPipe } from '../common/zod-validation.pipe.js';
import { ModelsService } from './models.service.js';

@Controller('v1/models')
export class ModelsController {
  constructor(@Inject(ModelsService) private readonly models: ModelsService) {}

  @Post()
  @HttpCode(200)
  register(
    @Body(new ZodValidationPipe(modelRegisterRequestSchema)) request: z.output<typeof modelRegisterRequestSchema>,
  ): Promise<Model> {
    return this.models.register(request);
  }

  @Get()
  list(
    @Query(new ZodValidationPipe(pageQuerySchema)) query: z.output<typeof pageQuerySchema>,
  ): Promise<ListEnvelope<Model>> {
    return this.models.list(query);
  }

  @Get(':id')
  get(@Param('id') id: string): Promise<Model> {
    return this.models.get(id);
  }
}
