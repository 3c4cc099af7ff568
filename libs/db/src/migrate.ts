import { DatabaseUnreachableError, databaseUrl, redactUrl, runMigrations } from './data-source.js';

/** `npm run migrate`: applies the pending migrations to DATABASE_URL, creating the database if needed. */
export async function migrateMain(): Promise<number> {
  const url = databaseUrl();
  try {
    const applied = await runMigrations(url);
    if (applied.length === 0) console.log(`migrate: ${redactUrl(url)} is up to date`);
    for (const name of applied) console.log(`migrate: applied ${name}`);
    return 0;
  } catch (error) {
    console.error(
      error instanceof DatabaseUnreachableError ? `migrate: ${error.message}` : `migrate: failed: ${String(error)}`,
    );
    return 1;
  }
}
