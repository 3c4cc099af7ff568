/**
 * `expertune keys create|list|revoke`: API keys of the job API, in the Postgres of DATABASE_URL
 * (default postgres://postgres@127.0.0.1:5432/expertune). Each command first applies the pending
 * migrations (creating the database when missing), so a fresh server needs no `npm run migrate`.
 *
 * @expertune/db (and with it TypeORM and pg) is imported only here, lazily, so the other commands
 * of the CLI never load them; this module's own imports are types only.
 */
import type { ApiKeyScope } from '@expertune/db';

type Db = typeof import('@expertune/db');
type DataSource = ReturnType<Db['createDataSource']>;

/** The rows `keys list` prints: everything but the hash. */
export interface ApiKeyListing {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  createdAt: Date;
  lastUsedAt: Date | null;
  expiresAt: Date | null;
  revokedAt: Date | null;
}

export interface CreateKeyOptions {
  name: string;
  scopes: string[];
  expiresInDays?: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** An error in the arguments (the CLI prints it with the usage). */
export class KeysArgumentError extends Error {}

async function loadDb(): Promise<Db> {
  return import('@expertune/db');
}

/** The allowed scopes, from @expertune/db (read, launch, admin). */
export async function apiKeyScopes(): Promise<readonly string[]> {
  return (await loadDb()).API_KEY_SCOPES;
}

/** `read,launch` → ['read', 'launch']; an unknown scope is a KeysArgumentError naming the allowed ones. */
export async function parseScopes(text: string): Promise<string[]> {
  const allowed = await apiKeyScopes();
  const scopes = [...new Set(text.split(',').map((scope) => scope.trim()))].filter((scope) => scope !== '');
  if (scopes.length === 0) throw new KeysArgumentError(`--scopes needs at least one of ${allowed.join(', ')}`);
  for (const scope of scopes) {
    if (!allowed.includes(scope))
      throw new KeysArgumentError(`--scopes: '${scope}' is not a scope (allowed: ${allowed.join(', ')})`);
  }
  return scopes;
}

/** Migrates DATABASE_URL (telling stderr what it applied), then runs `body` on a one-connection DataSource. */
async function withDatabase<T>(body: (dataSource: DataSource, db: Db) => Promise<T>): Promise<T> {
  const db = await loadDb();
  const url = db.databaseUrl();
  for (const name of await db.runMigrations(url)) console.error(`applied migration ${name} to ${db.redactUrl(url)}`);
  const dataSource = await db.connect(db.createDataSource({ url, poolSize: 1, extra: { connectTimeoutMS: 10_000 } }));
  try {
    return await body(dataSource, db);
  } finally {
    await dataSource.destroy();
  }
}

export async function createKey(options: CreateKeyOptions): Promise<void> {
  const name = options.name.trim();
  if (name === '') throw new KeysArgumentError('--name must not be empty');
  const scopes = await parseScopes(options.scopes.join(','));
  const expiresAt =
    options.expiresInDays === undefined ? null : new Date(Date.now() + options.expiresInDays * 86_400_000);
  const created = await withDatabase((dataSource, db) =>
    db.createApiKey(dataSource, { name, scopes: scopes as ApiKeyScope[], expiresAt }),
  );
  console.log(`id:      ${created.id}`);
  console.log(`name:    ${name}`);
  console.log(`prefix:  et_${created.prefix}`);
  console.log(`scopes:  ${scopes.join(',')}`);
  console.log(`expires: ${expiresAt ? formatTime(expiresAt) : 'never'}`);
  console.log(`key:     ${created.key}`);
  console.error(
    'This is the only time the key is shown: only its hash is stored. Send it as `Authorization: Bearer <key>`.',
  );
}

export async function listKeys(): Promise<ApiKeyListing[]> {
  return withDatabase(async (dataSource) => {
    // Named columns, never key_hash.
    const rows: {
      id: string;
      name: string;
      prefix: string;
      scopes: string[];
      created_at: Date;
      last_used_at: Date | null;
      expires_at: Date | null;
      revoked_at: Date | null;
    }[] = await dataSource.query(
      `SELECT id, name, prefix, scopes, created_at, last_used_at, expires_at, revoked_at
         FROM api_keys ORDER BY created_at, id`,
    );
    return rows.map((row) => ({
      id: row.id,
      name: row.name,
      prefix: row.prefix,
      scopes: row.scopes,
      createdAt: row.created_at,
      lastUsedAt: row.last_used_at,
      expiresAt: row.expires_at,
      revokedAt: row.revoked_at,
    }));
  });
}

/** The table `keys list` prints. */
export function formatKeyTable(keys: ApiKeyListing[], now = new Date()): string {
  if (keys.length === 0) return 'no API keys (create one with `expertune keys create --name NAME`)';
  const header = ['ID', 'NAME', 'PREFIX', 'SCOPES', 'CREATED', 'LAST USED', 'STATUS'];
  const rows = keys.map((key) => [
    key.id,
    key.name,
    `et_${key.prefix}`,
    key.scopes.join(','),
    formatTime(key.createdAt),
    key.lastUsedAt ? formatTime(key.lastUsedAt) : 'never',
    keyStatus(key, now),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  return [header, ...rows]
    .map((row) =>
      row
        .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function keyStatus(key: ApiKeyListing, now: Date): string {
  if (key.revokedAt) return `revoked ${formatTime(key.revokedAt)}`;
  if (key.expiresAt && key.expiresAt <= now) return `expired ${formatTime(key.expiresAt)}`;
  if (key.expiresAt) return `active, expires ${formatTime(key.expiresAt)}`;
  return 'active';
}

/** Revokes the key with this id (a uuid) or prefix (`et_` and 10 hex characters, or the 10 alone). */
export async function revokeKey(idOrPrefix: string): Promise<void> {
  const target = idOrPrefix.trim();
  const byId = UUID.test(target);
  const prefix = /^(?:et_)?([0-9a-f]{10})$/.exec(target)?.[1];
  if (!byId && !prefix)
    throw new KeysArgumentError(
      `'${idOrPrefix}' is neither a key id (a uuid) nor a prefix (et_ and 10 hex characters, as keys list shows)`,
    );
  const message = await withDatabase(async (dataSource, db) => {
    const rows: { id: string; name: string; prefix: string; revoked_at: Date | null }[] = await dataSource.query(
      byId
        ? `SELECT id, name, prefix, revoked_at FROM api_keys WHERE id = $1`
        : `SELECT id, name, prefix, revoked_at FROM api_keys WHERE prefix = $1`,
      [byId ? target.toLowerCase() : prefix],
    );
    const row = rows[0];
    if (!row)
      throw new Error(`no API key with ${byId ? 'id' : 'prefix'} ${target} (\`expertune keys list\` shows them)`);
    const label = `API key '${row.name}' (et_${row.prefix}, id ${row.id})`;
    if (row.revoked_at) return `${label} was already revoked on ${formatTime(row.revoked_at)}`;
    await db.revokeApiKey(dataSource, row.id);
    return `revoked ${label}`;
  });
  console.log(message);
}

/** `2026-11-23 09:05 UTC`. */
function formatTime(date: Date): string {
  return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}
