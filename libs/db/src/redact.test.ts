import { describe, expect, it } from 'vitest';

import { redactSecrets, redactValue, withoutSecrets } from './redact.js';

const env = {
  DATABASE_URL: 'postgres://expertune:pg-pass-1234@db:5432/expertune',
  EXPERTUNE_S3_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  EXPERTUNE_BOOTSTRAP_API_KEY: 'et_0123456789abcdefghijklmnopqrstuvwxyzABCDEF',
  EXPERTUNE_DATA_DIR: '/var/lib/expertune',
};

describe('redactSecrets', () => {
  it('removes secrets by shape: bearer tokens, API keys, URL passwords, SigV4 signatures, secret settings', () => {
    const key = 'et_abcdef0123' + 'A'.repeat(32);
    const line = [
      `Authorization: Bearer ${key}`,
      `key ${key} rejected`,
      'connect postgres://svc:hunter22@10.0.0.5/db failed',
      'redis://:sekret99@cache:6379',
      'Credential=AKIAIOSFODNN7/20261123/us-east-1/s3/aws4_request, Signature=0a1b2c3d4e5f',
      '{"secretAccessKey":"abc123xyz","password": "p4ss", "tokens_processed": 512}',
      'AWS_SESSION_TOKEN=FQoGZXIvYXdzE',
    ].join('\n');
    const out = redactSecrets(line, {});
    for (const secret of [
      key.slice(13),
      'hunter22',
      'sekret99',
      'AKIAIOSFODNN7',
      '0a1b2c3d4e5f',
      'abc123xyz',
      'p4ss',
      'FQoGZXIvYXdzE',
    ])
      expect(out).not.toContain(secret);
    expect(out).toContain('Bearer [redacted]');
    expect(out).toContain('et_abcdef0123[redacted]'); // the prefix names the key and stays
    expect(out).toContain('postgres://svc:[redacted]@10.0.0.5/db');
    expect(out).toContain('"tokens_processed": 512');
  });

  it("removes this process's own secret values wherever they appear, and leaves ordinary text alone", () => {
    const out = redactSecrets(
      `S3 said no to wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY; pg-pass-1234 was refused; data in /var/lib/expertune`,
      env,
    );
    expect(out).toBe('S3 said no to [redacted]; [redacted] was refused; data in /var/lib/expertune');
    expect(redactSecrets('step 12: train_loss 1.25, 4096 tokens', env)).toBe('step 12: train_loss 1.25, 4096 tokens');
  });

  it('redacts every string inside an event payload', () => {
    expect(
      redactValue(
        { error: { message: `bad key ${env.EXPERTUNE_BOOTSTRAP_API_KEY}`, step: 3 }, tags: ['pg-pass-1234'] },
        env,
      ),
    ).toEqual({ error: { message: 'bad key [redacted]', step: 3 }, tags: ['[redacted]'] });
  });

  it("keeps credentials out of a child's environment", () => {
    expect(withoutSecrets({ ...env, REDIS_URL: 'redis://:x@r', OPENBLAS_CORETYPE: 'Haswell' })).toEqual({
      EXPERTUNE_DATA_DIR: '/var/lib/expertune',
      OPENBLAS_CORETYPE: 'Haswell',
    });
  });
});
