import { Controller, Get, Inject, Res } from '@nestjs/common';
import type { Response } from 'express';

import { Public } from '../auth/public.decorator.js';
import { HealthService } from './health.service.js';

@Public()
@Controller('health')
export class HealthController {
  constructor(@Inject(HealthService) private readonly health: HealthService) {}

  /** 200 when Postgres and Redis answer, 503 (with the error envelope too) when either does not. */
  @Get()
  async check(@Res() response: Response): Promise<void> {
    const [postgres, redis] = await Promise.all([this.health.checkPostgres(), this.health.checkRedis()]);
    const ok = postgres.ok && redis.ok;
    const body = { status: ok ? 'ok' : 'unavailable', checks: { postgres, redis } };
    if (ok) {
      response.status(200).json(body);
      return;
    }
    const message = [postgres, redis]
      .filter((check) => !check.ok)
      .map((check) => check.message)
      .join('; ');
    response.status(503).json({ ...body, error: { code: 'service_unavailable', message, param: null } });
  }
}
