import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { API_KEY_SCOPES, ApiKey, type ApiKeyScope } from './entities.js';

/**
 * Keys look like `et_<prefix><secret>`: the prefix (10 hex characters) is stored in the clear to
 * find the row and to show users which key is which; the whole key is hashed with scrypt.
 */
export const API_KEY_PREFIX_LENGTH = 10;
const KEY_PATTERN = new RegExp(`^et_([0-9a-f]{${API_KEY_PREFIX_LENGTH}})([A-Za-z0-9_-]{32})$`);

// OWASP's scrypt minimum (N=2^17 for interactive logins) is slower than a per-request check can afford;
// API keys carry 192 random bits, so 2^14 only has to slow down a stolen hash table, not a dictionary.
const SCRYPT = { N: 16384, r: 8, p: 1, keyLength: 32, saltLength: 16 } as const;

export interface CreateApiKeyInput {
  name: string;
  scopes: ApiKeyScope[];
  expiresAt?: Date | null;
}

export interface CreatedApiKey {
  id: string;
  /** The full key: returned once, never stored. */
  key: string;
  prefix: string;
}

export async function createApiKey(dataSource: DataSource, input: CreateApiKeyInput): Promise<CreatedApiKey> {
  for (const scope of input.scopes) {
    if (!(API_KEY_SCOPES as readonly string[]).includes(scope)) {
      throw new RangeError(`scopes: ${JSON.stringify(scope)} is not one of ${API_KEY_SCOPES.join(', ')}`);
    }
  }
  const prefix = randomBytes(API_KEY_PREFIX_LENGTH / 2).toString('hex');
  const key = `et_${prefix}${randomBytes(24).toString('base64url')}`;
  const keyHash = await hashApiKey(key);
  const rows: { id: string }[] = await dataSource.query(
    `INSERT INTO api_keys (name, prefix, key_hash, scopes, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
    [input.name, prefix, keyHash, [...new Set(input.scopes)], input.expiresAt ?? null],
  );
  return { id: rows[0]!.id, key, prefix };
}

/**
 * The key's row when `presentedKey` is a live key (not revoked, not expired), else null; records the use.
 * Unknown prefixes still pay for one scrypt, so timing does not tell which prefixes exist.
 */
export async function verifyApiKey(dataSource: DataSource, presentedKey: string): Promise<ApiKey | null> {
  const match = KEY_PATTERN.exec(presentedKey);
  const rows: { id: string; key_hash: string }[] = match
    ? await dataSource.query(`SELECT id, key_hash FROM api_keys WHERE prefix = $1`, [match[1]])
    : [];
  const stored = rows[0];
  const ok = await verifyHash(presentedKey, stored?.key_hash ?? DUMMY_HASH);
  if (!stored || !ok) return null;
  // Wrapped in a CTE because TypeORM's query() returns [rows, count] for a bare UPDATE.
  const used: { id: string }[] = await dataSource.query(
    `WITH used AS (
       UPDATE api_keys SET last_used_at = now()
        WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
        RETURNING id
     ) SELECT id FROM used`,
    [stored.id],
  );
  if (used.length === 0) return null;
  return dataSource.getRepository(ApiKey).findOneByOrFail({ id: stored.id });
}

export async function revokeApiKey(dataSource: DataSource, id: string): Promise<boolean> {
  const rows: unknown[] = await dataSource.query(
    `WITH revoked AS (UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id)
     SELECT id FROM revoked`,
    [id],
  );
  return rows.length > 0;
}

export async function hashApiKey(key: string): Promise<string> {
  const salt = randomBytes(SCRYPT.saltLength);
  const hash = await scrypt(key, salt, SCRYPT.keyLength, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

async function verifyHash(key: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4]!, 'base64url');
  const expected = Buffer.from(parts[5]!, 'base64url');
  const actual = await scrypt(key, salt, expected.length, { N, r, p, maxmem: 256 * N * r });
  return timingSafeEqual(actual, expected);
}

function scrypt(key: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCallback(key, salt, length, options, (error, derived) => (error ? reject(error) : resolve(derived))),
  );
}

const DUMMY_HASH = ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, 'AAAAAAAAAAAAAAAAAAAAAA', 'A'.repeat(43)].join('$');
