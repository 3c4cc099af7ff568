import { type Adapter, type ListEnvelope, pageQuerySchema } from '@expertune/contracts';
import { Controller, Get, Inject, Param, Query, Res } from '@nestjs/common';
import type { Response } from 'express';
import { pipeline } from 'node:stream/promises';
import type { z } from 'zod';

import { ZodValidationPipe } from '../common/zod-validation.pipe.js';
import { AdaptersService } from './adapters.service.js';

@Controller('v1/adapters')
export class AdaptersController {
  constructor(@Inject(AdaptersService) private readonly adapters: AdaptersService) {}

  @Get()
  list(
    @Query(new ZodValidationPipe(pageQuerySchema)) query: z.output<typeof pageQuerySchema>,
  ): Promise<ListEnvelope<Adapter>> {
    return this.adapters.list(query);
  }

  @Get(':id')
  get(@Param('id') id: string): Promise<Adapter> {
    return this.adapters.get(id);
  }

  @Get(':id/download')
  async download(@Param('id') id: string, @Res() response: Response): Promise<void> {
    const { stream, filename } = await this.adapters.tarStream(id);
    response.setHeader('content-type', 'application/x-tar');
    response.setHeader('content-disposition', `attachment; filename="${filename}"`);
    await pipeline(stream, response);
  }

  /** One file of the export, by its path inside the directory (e.g. adapter_config.json). */
  @Get(':id/files/*name')
  async file(
    @Param('id') id: string,
    @Param('name') name: string | string[],
    @Res() response: Response,
  ): Promise<void> {
    const relative = Array.isArray(name) ? name.join('/') : name;
    const file = await this.adapters.file(id, relative);
    response.setHeader('content-type', 'application/octet-stream');
    response.setHeader('content-length', String(file.bytes));
    response.setHeader('content-disposition', `attachment; filename="${file.filename.replace(/"/g, '')}"`);
    await pipeline(file.stream, response);
  }
}
