/**
 * Security headers on every answer (what helmet would set for a JSON API) and CORS for the
 * origins of EXPERTUNE_CORS_ORIGINS only: by default no browser page of another origin may call it.
 */
import type { NextFunction, Request, Response } from 'express';

const SECURITY_HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'x-dns-prefetch-control': 'off',
};

export function securityHeaders(corsOrigins: readonly string[]) {
  const allowed = new Set(corsOrigins);
  return (request: Request, response: Response, next: NextFunction): void => {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) response.setHeader(name, value);
    // The swagger page at /docs runs its own inline scripts and styles; it may still not be framed.
    if (request.path === '/docs' || request.path.startsWith('/docs/'))
      response.setHeader('content-security-policy', "frame-ancestors 'none'");
    // The answer depends on the Origin whenever an allowlist exists: caches must keep them apart.
    if (allowed.size > 0) response.append('vary', 'Origin');
    const origin = request.headers.origin;
    if (origin && allowed.has(origin)) {
      response.setHeader('access-control-allow-origin', origin);
      response.setHeader('access-control-allow-headers', 'authorization, content-type, last-event-id');
      response.setHeader('access-control-allow-methods', 'GET, POST, DELETE');
      response.setHeader('access-control-max-age', '600');
      // A preflight from an allowed origin is answered here, before the key check it cannot pass.
      if (request.method === 'OPTIONS') {
        response.status(204).end();
        return;
      }
    }
    next();
  };
}
