import type { DataSource } from 'typeorm';
import { connect, createDataSource } from './data-source.js';
import { createTestDatabase as createDatabase, type TestDatabase as Database } from './testing.js';

/** A throwaway database per test file (see testing.ts), left unmigrated, with a DataSource on it. */
export interface TestDatabase extends Database {
  /** A DataSource on the database, initialized, migrations not run. */
  dataSource: DataSource;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const database = await createDatabase({ migrate: false });
  const dataSource = await connect(createDataSource({ url: database.url, poolSize: 4 }));
  return {
    ...database,
    dataSource,
    async drop() {
      if (dataSource.isInitialized) await dataSource.destroy();
      await database.drop();
    },
  };
}
