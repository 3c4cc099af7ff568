/**
 * A deployment's first API key, given rather than generated: `EXPERTUNE_BOOTSTRAP_API_KEY` (from a
 * Kubernetes Secret, a compose .env) is stored by the migrations step with every scope, so a fresh
 * install answers that key without anyone running `expertune keys create` inside a pod. Importing
 * the same key again changes nothing; revoke it like any other key once real keys exist.
 */
import type { DataSource } from 'typeorm';

import { hashApiKey } from './api-keys.js';
import { API_KEY_SCOPES } from './entities.js';

const BOOTSTRAP_KEY_PATTERN = /^et_([0-9a-f]{10})[A-Za-z0-9_-]{32}$/;
export const BOOTSTRAP_KEY_NAME = 'bootstrap';

/** How to make a key of the right shape (printed with the error). */
export const HOW_TO_MAKE_A_KEY = `node -e "const c=require('crypto');console.log('et_'+c.randomBytes(5).toString('hex')+c.randomBytes(24).toString('base64url'))"`;

/** Stores `key` with every scope unless a key with its prefix exists; true when it was stored now. */
export async function importBootstrapKey(dataSource: DataSource, key: string): Promise<boolean> {
  const match = BOOTSTRAP_KEY_PATTERN.exec(key);
  if (!match)
    throw new RangeError(
      `EXPERTUNE_BOOTSTRAP_API_KEY: expected et_ + 10 lowercase hex characters + 32 of [A-Za-z0-9_-]; make one with: ${HOW_TO_MAKE_A_KEY}`,
    );
  const rows: { id: string }[] = await dataSource.query(
    `INSERT INTO api_keys (name, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4)
     ON CONFLICT (prefix) DO NOTHING RETURNING id`,
    [BOOTSTRAP_KEY_NAME, match[1], await hashApiKey(key), [...API_KEY_SCOPES]],
  );
  return rows.length > 0;
}
