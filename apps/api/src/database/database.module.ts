/**
 * The TypeORM DataSource over the tracking schema (libs/db) and the artifact storage. Pending
 * migrations run at start (docs/architecture.md): the schema belongs to migrations/, never to sync.
 */
import { createArtifactStorage, createDataSource, runMigrations, type ArtifactStorage } from '@expertune/db';
import { Global, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import type { DataSource } from 'typeorm';

import { API_CONFIG, type ApiConfig } from '../config/api-config.js';

export const DATA_SOURCE = Symbol('DATA_SOURCE');
export const STORAGE = Symbol('STORAGE');

@Global()
@Module({
  providers: [
    {
      provide: DATA_SOURCE,
      inject: [API_CONFIG],
      useFactory: async (config: ApiConfig) => {
        await runMigrations(config.databaseUrl);
        return createDataSource({
          url: config.databaseUrl,
          statementTimeoutMs: config.dbStatementTimeoutMs,
        }).initialize();
      },
    },
    {
      // Files under the data directory, or an S3-compatible store with EXPERTUNE_STORAGE=s3 (docs/deploy.md).
      provide: STORAGE,
      inject: [API_CONFIG],
      useFactory: (config: ApiConfig) => createArtifactStorage(process.env, config.dataDir),
    },
  ],
  exports: [DATA_SOURCE, STORAGE],
})
export class DatabaseModule implements OnApplicationShutdown {
  constructor(@Inject(DATA_SOURCE) private readonly dataSource: DataSource) {}

  async onApplicationShutdown(): Promise<void> {
    if (this.dataSource.isInitialized) await this.dataSource.destroy();
  }
}

export type { ArtifactStorage };
