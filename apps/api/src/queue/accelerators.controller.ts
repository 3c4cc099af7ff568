/** GET /v1/accelerators: the classes jobs can ask for, how many wait and run in each, and its workers. */
import type { Accelerator, ListEnvelope } from '@expertune/contracts';
import { Controller, Get, Inject } from '@nestjs/common';

import { QueueService } from './queue.service.js';

@Controller('v1/accelerators')
export class AcceleratorsController {
  constructor(@Inject(QueueService) private readonly queues: QueueService) {}

  @Get()
  async list(): Promise<ListEnvelope<Accelerator>> {
    const data = await this.queues.accelerators();
    return { object: 'list', data, has_more: false, next_cursor: null };
  }
}
