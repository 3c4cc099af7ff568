import { type DynamicModule, Module, type ModuleMetadata } from '@nestjs/common';
import { APP_FILTER, APP_GUARD } from '@nestjs/core';

import { AdaptersModule } from './adapters/adapters.module.js';
import { ApiKeyGuard } from './auth/api-key.guard.js';
import { AllExceptionsFilter } from './common/all-exceptions.filter.js';
import type { ApiConfig } from './config/api-config.js';
import { ConfigModule } from './config/config.module.js';
import { DatabaseModule } from './database/database.module.js';
import { DatasetsModule } from './datasets/datasets.module.js';
import { EventsModule } from './events/events.module.js';
import { HealthModule } from './health/health.module.js';
import { JobsModule } from './jobs/jobs.module.js';
import { ModelsModule } from './models/models.module.js';
import { QueueModule } from './queue/queue.module.js';

@Module({})
export class AppModule {
  static forRoot(config: ApiConfig, extraImports: ModuleMetadata['imports'] = []): DynamicModule {
    return {
      module: AppModule,
      imports: [
        ConfigModule.forRoot(config),
        DatabaseModule,
        QueueModule.forRoot(config),
        HealthModule,
        JobsModule,
        EventsModule,
        DatasetsModule,
        ModelsModule,
        AdaptersModule,
        ...(extraImports ?? []),
      ],
      providers: [
        { provide: APP_FILTER, useClass: AllExceptionsFilter },
        { provide: APP_GUARD, useClass: ApiKeyGuard },
      ],
    };
  }
}
