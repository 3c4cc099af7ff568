/**
 * The console's /api/* proxy to apps/api (app/api/[...path]/route.ts): same origin for the browser,
 * so the API needs no CORS, and the API's address is read at request time from EXPERTUNE_API_URL.
 */

export const DEFAULT_API_URL = 'http://127.0.0.1:8080';

export function apiBaseUrl(env: Record<string, string | undefined> = process.env): string {
  return (env.EXPERTUNE_API_URL || DEFAULT_API_URL).replace(/\/+$/, '');
}

/** Only the API's own routes are forwarded: /v1/*, /health and /openapi.json. */
export function upstreamUrl(base: string, segments: readonly string[], search: string): string | null {
  if (segments.length === 0) return null;
  if (segments.some((s) => s === '..' || s === '.' || s === '')) return null;
  const [first] = segments;
  if (first !== 'v1' && !(segments.length === 1 && (first === 'health' || first === 'openapi.json'))) return null;
  return `${base}/${segments.map(encodeURIComponent).join('/')}${search}`;
}

/** Request headers passed on (hop-by-hop ones, cookies and host are not). */
const FORWARDED_REQUEST = ['authorization', 'content-type', 'accept', 'last-event-id'];
/** Response headers passed back (no content-length: the body is streamed through, chunked). */
const FORWARDED_RESPONSE = [
  'content-type',
  'content-disposition',
  'cache-control',
  'retry-after',
  'x-ratelimit-limit',
  'x-ratelimit-remaining',
];

export function pickHeaders(from: Headers, names: readonly string[]): Headers {
  const out = new Headers();
  for (const name of names) {
    const value = from.get(name);
    if (value !== null) out.set(name, value);
  }
  return out;
}

export async function forward(request: Request, segments: readonly string[]): Promise<Response> {
  const url = new URL(request.url);
  const target = upstreamUrl(apiBaseUrl(), segments, url.search);
  if (!target)
    return Response.json(
      { error: { code: 'not_found', message: `no API route /${segments.join('/')}`, param: null } },
      { status: 404 },
    );
  const method = request.method.toUpperCase();
  const hasBody = method !== 'GET' && method !== 'HEAD';
  let upstream: Response;
  try {
    upstream = await fetch(target, {
      method,
      headers: pickHeaders(request.headers, FORWARDED_REQUEST),
      ...(hasBody ? { body: request.body, duplex: 'half' } : {}),
      signal: request.signal,
      cache: 'no-store',
      redirect: 'manual',
    } as RequestInit);
  } catch (error) {
    if (request.signal.aborted) return new Response(null, { status: 499 });
    return Response.json(
      {
        error: {
          code: 'api_unreachable',
          message: `the console could not reach the API at ${apiBaseUrl()} (${(error as Error).message}); set EXPERTUNE_API_URL`,
          param: null,
        },
      },
      { status: 502 },
    );
  }
  const headers = pickHeaders(upstream.headers, FORWARDED_RESPONSE);
  if ((upstream.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    headers.set('cache-control', 'no-cache, no-transform');
    headers.set('x-accel-buffering', 'no');
  }
  return new Response(upstream.body, { status: upstream.status, headers });
}
