import { trainQueueName } from '@expertune/contracts';
import { BullModule } from '@nestjs/bullmq';
import { type DynamicModule, Global, Module } from '@nestjs/common';
import type { ConnectionOptions } from 'bullmq';

import type { ApiConfig } from '../config/api-config.js';
import { AcceleratorsController } from './accelerators.controller.js';
import { QUEUE_REDIS_OPTIONS, QueueService, redisUrlOptions } from './queue.service.js';

/** One BullMQ queue per configured accelerator class (`train-<accelerator>`), registered through @nestjs/bullmq. */
@Global()
@Module({})
export class QueueModule {
  static forRoot(config: ApiConfig): DynamicModule {
    return {
      module: QueueModule,
      imports: [
        BullModule.forRoot({
          // bullmq types options against its own copy of ioredis' types; the options are plain ioredis ones.
          connection: { ...redisUrlOptions(config.redisUrl), ...QUEUE_REDIS_OPTIONS } as ConnectionOptions,
          prefix: config.queuePrefix,
        }),
        BullModule.registerQueue(...config.accelerators.map((accelerator) => ({ name: trainQueueName(accelerator) }))),
      ],
      controllers: [AcceleratorsController],
      providers: [QueueService],
      exports: [QueueService],
    };
  }
}
