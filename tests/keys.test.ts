/**
 * `expertune keys create|list|revoke` against a real PostgreSQL: a throwaway database
 * (`expertune_keys_<random>`, created through the server's `postgres` database, migrated by the CLI
 * itself, dropped after) on the server of DATABASE_URL (default 127.0.0.1:5432, user postgres).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { connect, createDataSource, ensureDatabase, quoteIdentifier, verifyApiKey } from '@expertune/db';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

const server = new URL(process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres');
const databaseName = `expertune_keys_${randomBytes(6).toString('hex')}`;
const databaseUrl = withDatabase(databaseName);

function withDatabase(name: string): string {
  const url = new URL(server);
  url.pathname = `/${name}`;
  return url.toString();
}

function keysCli(args: string[], env: Record<string, string> = { DATABASE_URL: databaseUrl }): CliResult {
  if (!existsSync(join(repoRoot, 'libs', 'trainer', 'dist', 'cli.js')))
    throw new Error('the CLI is not built: run `npm run build` (npm test does it)');
  const result = spawnSync(
    process.execPath,
    [join(repoRoot, 'libs', 'trainer', 'bin', 'expertune.js'), 'keys', ...args],
    {
      cwd: repoRoot,
      encoding: 'utf8',
      env: { ...process.env, FORCE_COLOR: '0', ...env },
    },
  );
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function keysCliOk(args: string[]): CliResult {
  const result = keysCli(args);
  if (result.status !== 0)
    throw new Error(`expertune keys ${args.join(' ')} failed (${result.status}):\n${result.stderr}`);
  return result;
}

const dataSource = createDataSource({ url: databaseUrl, poolSize: 2 });

beforeAll(async () => {
  await ensureDatabase(databaseUrl); // through the server's `postgres` database; the CLI migrates it
});

afterAll(async () => {
  if (dataSource.isInitialized) await dataSource.destroy();
  const admin = await connect(createDataSource({ url: withDatabase('postgres'), poolSize: 1 }));
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(databaseName)} WITH (FORCE)`);
  } finally {
    await admin.destroy();
  }
});

describe('expertune keys', () => {
  let key = '';
  let id = '';
  let prefix = '';

  it('create migrates the database and prints the key once, with its id and prefix; libs/db accepts it', async () => {
    const created = keysCliOk(['create', '--name', 'ci runner', '--scopes', 'read,launch', '--expires-in-days', '30']);
    expect(created.stderr).toMatch(/applied migration TrackingSchema/);
    expect(created.stderr).toMatch(/only time the key is shown/);
    key = /^key: +(et_\S+)$/m.exec(created.stdout)?.[1] ?? '';
    id = /^id: +(\S+)$/m.exec(created.stdout)?.[1] ?? '';
    prefix = /^prefix: +et_([0-9a-f]{10})$/m.exec(created.stdout)?.[1] ?? '';
    expect(key).toMatch(/^et_[0-9a-f]{10}[A-Za-z0-9_-]{32}$/);
    expect(key.startsWith(`et_${prefix}`)).toBe(true);
    expect(created.stdout).toMatch(/^scopes: +read,launch$/m);

    await connect(dataSource);
    const row = await verifyApiKey(dataSource, key);
    expect(row?.id).toBe(id);
    expect(row?.name).toBe('ci runner');
    expect([...row!.scopes].sort()).toEqual(['launch', 'read']);
    expect(row?.expiresAt?.getTime()).toBeGreaterThan(Date.now() + 29 * 86_400_000);
    // A second run applies nothing.
    const again = keysCliOk(['create', '--name', 'admin', '--scopes', 'admin']);
    expect(again.stderr).not.toMatch(/applied migration/);
    const admin = await verifyApiKey(dataSource, /^key: +(et_\S+)$/m.exec(again.stdout)![1]!);
    expect(admin?.scopes).toEqual(['admin']);
  });

  it('list shows the keys without any secret', async () => {
    const rows: { key_hash: string }[] = await dataSource.query(`SELECT key_hash FROM api_keys WHERE id = $1`, [id]);
    const hash = rows[0]!.key_hash;
    const listed = keysCliOk(['list']);
    const line = listed.stdout.split('\n').find((text) => text.includes(id));
    expect(line).toBeDefined();
    expect(line).toContain('ci runner');
    expect(line).toContain(`et_${prefix}`);
    expect(line).toContain('read,launch');
    expect(line).toMatch(/active, expires \d{4}-\d\d-\d\d/);
    expect(line).not.toMatch(/never\s+active/); // verifyApiKey above recorded a use
    expect(listed.stdout).toMatch(/^ID +NAME +PREFIX +SCOPES +CREATED +LAST USED +STATUS$/m);
    expect(listed.stdout).toContain('admin');
    expect(listed.stdout + listed.stderr).not.toContain(key);
    expect(listed.stdout + listed.stderr).not.toContain(key.slice(13)); // the secret part alone
    expect(listed.stdout + listed.stderr).not.toContain(hash);
    expect(listed.stdout + listed.stderr).not.toContain(hash.split('$')[5]!);
    expect(listed.stdout).not.toMatch(/scrypt/);
  });

  it('revoke by prefix: verifyApiKey refuses the key, list says revoked, a second revoke says so', async () => {
    const revoked = keysCliOk(['revoke', `et_${prefix}`]);
    expect(revoked.stdout).toContain(`revoked API key 'ci runner' (et_${prefix}, id ${id})`);
    expect(await verifyApiKey(dataSource, key)).toBeNull();
    const line = keysCliOk(['list'])
      .stdout.split('\n')
      .find((text) => text.includes(id));
    expect(line).toMatch(/revoked \d{4}-\d\d-\d\d \d\d:\d\d UTC$/);
    expect(keysCliOk(['revoke', id]).stdout).toMatch(/was already revoked on/);
  });

  it('revoke of an unknown prefix and of something that is no id or prefix: one clear line', () => {
    const unknown = keysCli(['revoke', '0123456789']);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr.trim()).toBe('error: no API key with prefix 0123456789 (`expertune keys list` shows them)');
    const bad = keysCli(['revoke', 'nope']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^error: 'nope' is neither a key id \(a uuid\) nor a prefix/);
  });

  it('a bad scope is refused with the allowed ones, before anything is written', async () => {
    const before = Number((await dataSource.query(`SELECT count(*) AS n FROM api_keys`))[0].n);
    const bad = keysCli(['create', '--name', 'x', '--scopes', 'read,write']);
    expect(bad.status).toBe(2);
    expect(bad.stderr.split('\n')[0]).toBe("error: --scopes: 'write' is not a scope (allowed: read, launch, admin)");
    expect(keysCli(['create', '--scopes', 'read']).stderr.split('\n')[0]).toBe('error: --name is required');
    expect(Number((await dataSource.query(`SELECT count(*) AS n FROM api_keys`))[0].n)).toBe(before);
  });

  it('an unreachable Postgres is one line saying how to start it', () => {
    const result = keysCli(['list'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:9/expertune' });
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^error: PostgreSQL is not reachable at postgres:\/\/postgres@127\.0\.0\.1:9\/expertune/);
    expect(lines[0]).toContain('service postgresql start');
  });

  it('loads @expertune/db (TypeORM, pg) only inside the keys commands', () => {
    const dist = join(repoRoot, 'libs', 'trainer', 'dist');
    const keys = readFileSync(join(dist, 'keys.js'), 'utf8');
    expect(keys).toContain("import('@expertune/db')");
    for (const file of ['keys.js', 'cli.js', 'index.js'])
      expect(readFileSync(join(dist, file), 'utf8')).not.toMatch(
        /^\s*import\b[^(]*['"](@expertune\/db|typeorm|pg)['"]/m,
      );
  });
});
