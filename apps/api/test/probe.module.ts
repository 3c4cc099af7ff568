/** Routes mounted only in tests: they exercise the global filter and the validation pipe in isolation. */
import { jobCreateRequestSchema } from '@expertune/contracts';
import { Body, Controller, Module, Post } from '@nestjs/common';
import type { z } from 'zod';

import { Public } from '../src/auth/public.decorator.js';
import { ZodValidationPipe } from '../src/common/zod-validation.pipe.js';

@Public()
@Controller('test-probe')
class ProbeController {
  @Post('crash')
  crash(): never {
    throw new Error('secret internal detail at /srv/app/db.ts:42');
  }

  @Post('validate')
  validate(@Body(new ZodValidationPipe(jobCreateRequestSchema)) body: z.output<typeof jobCreateRequestSchema>) {
    return body;
  }
}

@Module({ controllers: [ProbeController] })
export class ProbeModule {}
