import { importBootstrapKey } from './bootstrap-key.js';
import {
  connect,
  createDataSource,
  DatabaseUnreachableError,
  databaseUrl,
  redactUrl,
  runMigrations,
} from './data-source.js';

/**
 * `npm run migrate`: applies the pending migrations to DATABASE_URL, creating the database if needed;
 * then stores EXPERTUNE_BOOTSTRAP_API_KEY, when set, as an API key with every scope (bootstrap-key.ts).
 */
export async function migrateMain(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const url = databaseUrl(env);
  try {
    const applied = await runMigrations(url);
    if (applied.length === 0) console.log(`migrate: ${redactUrl(url)} is up to date`);
    for (const name of applied) console.log(`migrate: applied ${name}`);
    const bootstrapKey = env.EXPERTUNE_BOOTSTRAP_API_KEY;
    if (bootstrapKey) {
      const dataSource = await connect(createDataSource({ url, poolSize: 1 }));
      try {
        const stored = await importBootstrapKey(dataSource, bootstrapKey);
        console.log(`migrate: bootstrap API key ${bootstrapKey.slice(3, 13)} ${stored ? 'stored' : 'already present'}`);
      } finally {
        await dataSource.destroy();
      }
    }
    return 0;
  } catch (error) {
    console.error(
      error instanceof DatabaseUnreachableError ? `migrate: ${error.message}` : `migrate: failed: ${String(error)}`,
    );
    return 1;
  }
}
