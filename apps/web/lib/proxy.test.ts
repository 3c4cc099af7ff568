import { afterEach, describe, expect, it, vi } from 'vitest';

import { apiBaseUrl, DEFAULT_API_URL, forward, upstreamUrl } from './proxy';

describe('the /api proxy', () => {
  afterEach(() => vi.unstubAllGlobals());

  it('reads EXPERTUNE_API_URL, defaulting to 127.0.0.1:8080', () => {
    expect(apiBaseUrl({})).toBe(DEFAULT_API_URL);
    expect(apiBaseUrl({ EXPERTUNE_API_URL: 'http://api:9000/' })).toBe('http://api:9000');
  });

  it("forwards only the API's routes", () => {
    expect(upstreamUrl('http://a', ['v1', 'jobs', 'ftjob-1'], '?x=1')).toBe('http://a/v1/jobs/ftjob-1?x=1');
    expect(upstreamUrl('http://a', ['health'], '')).toBe('http://a/health');
    expect(upstreamUrl('http://a', ['admin'], '')).toBeNull();
    expect(upstreamUrl('http://a', ['v1', '..', 'x'], '')).toBeNull();
    expect(upstreamUrl('http://a', [], '')).toBeNull();
  });

  it('passes the Authorization header and the status through, drops cookies', async () => {
    const seen: { url: string; headers: Headers }[] = [];
    vi.stubGlobal('fetch', async (url: string, init: RequestInit) => {
      seen.push({ url, headers: new Headers(init.headers) });
      return new Response('{"error":{"code":"invalid_api_key","message":"no","param":null}}', {
        status: 401,
        headers: { 'content-type': 'application/json' },
      });
    });
    const response = await forward(
      new Request('http://console/api/v1/jobs?limit=5', { headers: { authorization: 'Bearer k', cookie: 'c=1' } }),
      ['v1', 'jobs'],
    );
    expect(response.status).toBe(401);
    expect(seen[0]!.url).toBe(`${apiBaseUrl()}/v1/jobs?limit=5`);
    expect(seen[0]!.headers.get('authorization')).toBe('Bearer k');
    expect(seen[0]!.headers.get('cookie')).toBeNull();
  });

  it('answers 502 with the API address when the API is down, 404 for other paths', async () => {
    vi.stubGlobal('fetch', async () => {
      throw new TypeError('fetch failed');
    });
    const down = await forward(new Request('http://console/api/v1/jobs'), ['v1', 'jobs']);
    expect(down.status).toBe(502);
    expect(((await down.json()) as { error: { code: string } }).error.code).toBe('api_unreachable');
    expect((await forward(new Request('http://console/api/x'), ['x'])).status).toBe(404);
  });
});
