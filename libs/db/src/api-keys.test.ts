import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, revokeApiKey, verifyApiKey } from './api-keys.js';
import { ApiKey } from './entities.js';
import { createTestDatabase, type TestDatabase } from './test-db.test-util.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.dataSource.runMigrations();
});
afterAll(async () => db?.drop());

describe('API keys', () => {
  it('verifies a created key, records its use, and stores only a salted scrypt hash', async () => {
    const { id, key, prefix } = await createApiKey(db.dataSource, { name: 'ci', scopes: ['read', 'launch'] });
    expect(key).toMatch(/^et_[0-9a-f]{10}[A-Za-z0-9_-]{32}$/);
    expect(key.slice(3, 13)).toBe(prefix);

    const verified = await verifyApiKey(db.dataSource, key);
    expect(verified?.id).toBe(id);
    expect(verified?.name).toBe('ci');
    expect(verified?.scopes).toEqual(['read', 'launch']);
    expect(verified?.lastUsedAt).toBeInstanceOf(Date);
    expect(verified?.keyHash).toBeUndefined();

    const [{ key_hash: stored }] = await db.dataSource.query(`SELECT key_hash FROM api_keys WHERE id = $1`, [id]);
    expect(stored).toMatch(/^scrypt\$16384\$8\$1\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/);
    expect(stored).not.toContain(key);
    expect(stored).not.toContain(key.slice(13));
  });

  it('returns null for a wrong secret, an unknown prefix or a malformed key', async () => {
    const { key } = await createApiKey(db.dataSource, { name: 'wrong', scopes: ['read'] });
    const lastChar = key.at(-1) === 'A' ? 'B' : 'A';
    expect(await verifyApiKey(db.dataSource, key.slice(0, -1) + lastChar)).toBeNull();
    expect(await verifyApiKey(db.dataSource, 'et_0000000000' + key.slice(13))).toBeNull();
    expect(await verifyApiKey(db.dataSource, 'not-a-key')).toBeNull();
    expect(await verifyApiKey(db.dataSource, '')).toBeNull();
  });

  it('returns null for a revoked key', async () => {
    const { id, key } = await createApiKey(db.dataSource, { name: 'revoked', scopes: ['admin'] });
    expect(await revokeApiKey(db.dataSource, id)).toBe(true);
    expect(await verifyApiKey(db.dataSource, key)).toBeNull();
  });

  it('returns null for an expired key and accepts one that expires later', async () => {
    const expired = await createApiKey(db.dataSource, {
      name: 'expired',
      scopes: ['read'],
      expiresAt: new Date(Date.now() - 1000),
    });
    expect(await verifyApiKey(db.dataSource, expired.key)).toBeNull();
    const [{ last_used_at }] = await db.dataSource.query(`SELECT last_used_at FROM api_keys WHERE id = $1`, [
      expired.id,
    ]);
    expect(last_used_at).toBeNull();

    const live = await createApiKey(db.dataSource, {
      name: 'live',
      scopes: ['read'],
      expiresAt: new Date(Date.now() + 3_600_000),
    });
    expect((await verifyApiKey(db.dataSource, live.key))?.id).toBe(live.id);
  });

  it('refuses an unknown scope', async () => {
    await expect(createApiKey(db.dataSource, { name: 'x', scopes: ['root' as 'read'] })).rejects.toThrow(
      /scopes: "root" is not one of read, launch, admin/,
    );
  });

  it('keeps the hash out of ordinary reads', async () => {
    const { id } = await createApiKey(db.dataSource, { name: 'hidden', scopes: [] });
    const row = await db.dataSource.getRepository(ApiKey).findOneByOrFail({ id });
    expect(row.keyHash).toBeUndefined();
  });
});
