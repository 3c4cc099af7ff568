/**
 * Secrets never reach a log line or a job event: every text the API and the worker log or store
 * passes through `redactSecrets`. Two nets: the shapes of secrets (Bearer tokens, our API keys,
 * passwords in URLs, SigV4 signatures, `SECRET=value` pairs), and the values of this process's
 * own secret environment variables wherever they appear.
 */
const REDACTED = '[redacted]';

// Names whose values are secrets: S3 and AWS keys, passwords, tokens, the bootstrap API key.
const SECRET_ENV_NAME = /(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY)$/i;
// Too short to replace by value without mangling ordinary text.
const MIN_SECRET_LENGTH = 6;

const PATTERNS: [RegExp, string][] = [
  // Authorization headers and bearer tokens in any form.
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi, `$1 ${REDACTED}`],
  // Our API keys: the 10-character prefix names the key and is kept; the secret part goes.
  [/\bet_([0-9a-f]{10})[A-Za-z0-9_-]{32}\b/g, `et_$1${REDACTED}`],
  // user:password@ in URLs (DATABASE_URL, REDIS_URL).
  [/\b([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):[^@/?#\s]+@/gi, `$1:${REDACTED}@`],
  // SigV4: the signature and the access key id in Credential=.
  [/\b(Signature|X-Amz-Signature)=[0-9a-f]+/gi, `$1=${REDACTED}`],
  [/\b(Credential|X-Amz-Credential)=[^,&\s]+/gi, `$1=${REDACTED}`],
  // name=value and "name": "value" pairs of secret-named settings (the name ends in the secret word,
  // so tokens_processed or max_tokens stay).
  [
    /\b([A-Za-z0-9_]*(?:secret|password|passwd|token|access_?key|secret_?key))(["']?\s*[:=]\s*["']?)([^"'\s,;&}]+)/gi,
    `$1$2${REDACTED}`,
  ],
];

function secretValues(env: NodeJS.ProcessEnv): string[] {
  const values = new Set<string>();
  for (const [name, value] of Object.entries(env)) {
    if (!value) continue;
    if (SECRET_ENV_NAME.test(name) && value.length >= MIN_SECRET_LENGTH) values.add(value);
    // The password inside a connection URL (DATABASE_URL=postgres://user:password@host/db).
    const password = /^[a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*:([^@/?#\s]+)@/i.exec(value)?.[1];
    if (password && password.length >= MIN_SECRET_LENGTH) {
      values.add(password);
      values.add(decodeURIComponent(password));
    }
  }
  // Longest first, so a secret containing another is replaced whole.
  return [...values].sort((a, b) => b.length - a.length);
}

/** `text` with every secret it holds replaced by `[redacted]`. */
export function redactSecrets(text: string, env: NodeJS.ProcessEnv = process.env): string {
  let out = text;
  for (const value of secretValues(env)) out = out.split(value).join(REDACTED);
  for (const [pattern, replacement] of PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

/** A JSON-like value (an event's data) with every string in it redacted. */
export function redactValue<T>(value: T, env: NodeJS.ProcessEnv = process.env): T {
  if (typeof value === 'string') return redactSecrets(value, env) as T;
  if (Array.isArray(value)) return value.map((item) => redactValue(item, env)) as T;
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, redactValue(item, env)])) as T;
  return value;
}

/**
 * `env` less what a child that needs no service should not hold: connection URLs and every
 * secret-named variable (the trainer reads files; the worker talks to Postgres, Redis and S3).
 */
export function withoutSecrets(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(env).filter(
      ([name]) => !SECRET_ENV_NAME.test(name) && !/^(DATABASE_URL|REDIS_URL|PG(PASSWORD|PASSFILE))$/.test(name),
    ),
  );
}
