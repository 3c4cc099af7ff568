import { describe, expect, it } from 'vitest';

import nextConfig from '../next.config.mjs';

describe('console security headers (next.config.mjs)', () => {
  it('sends no-framing, no-sniffing and referrer headers on every path, and no X-Powered-By', async () => {
    const rules = await nextConfig.headers!();
    expect(rules).toHaveLength(1);
    expect(rules[0]!.source).toBe('/:path*');
    const headers = Object.fromEntries(rules[0]!.headers.map((h) => [h.key.toLowerCase(), h.value]));
    expect(headers['x-content-type-options']).toBe('nosniff');
    expect(headers['x-frame-options']).toBe('DENY');
    expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(headers['content-security-policy']).toContain("object-src 'none'");
    expect(headers['referrer-policy']).toBe('same-origin');
    expect(nextConfig.poweredByHeader).toBe(false);
  });
});
