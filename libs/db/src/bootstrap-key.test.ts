import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { verifyApiKey } from './api-keys.js';
import { importBootstrapKey } from './bootstrap-key.js';
import { migrateMain } from './migrate.js';
import { createTestDatabase, type TestDatabase } from './test-db.test-util.js';

const KEY = 'et_0a1b2c3d4e' + 'k'.repeat(32);
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db?.drop());

describe('the bootstrap API key (EXPERTUNE_BOOTSTRAP_API_KEY)', () => {
  it('is stored by the migrations step with every scope, once, and then verifies like any key', async () => {
    const env = { DATABASE_URL: db.url, EXPERTUNE_BOOTSTRAP_API_KEY: KEY };
    expect(await migrateMain(env)).toBe(0);
    expect(await migrateMain(env)).toBe(0); // a re-run (the Job of the next release) changes nothing
    const rows = await db.dataSource.query(`SELECT name, prefix, scopes FROM api_keys`);
    expect(rows).toEqual([{ name: 'bootstrap', prefix: '0a1b2c3d4e', scopes: ['read', 'launch', 'admin'] }]);
    expect((await verifyApiKey(db.dataSource, KEY))?.name).toBe('bootstrap');
    expect(await verifyApiKey(db.dataSource, KEY.slice(0, -1) + 'j')).toBeNull();
  });

  it('refuses a key of the wrong shape, saying how to make one', async () => {
    await expect(importBootstrapKey(db.dataSource, 'replace-me')).rejects.toThrow(
      /et_ \+ 10 lowercase hex.*randomBytes/,
    );
    expect(await migrateMain({ DATABASE_URL: db.url, EXPERTUNE_BOOTSTRAP_API_KEY: 'replace-me' })).toBe(1);
  });
});
