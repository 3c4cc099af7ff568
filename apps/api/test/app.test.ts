import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { TRAIN_METHODS } from '@expertune/contracts';

import { CLOSED_PORT, createTestEnvironment, type RunningApi, startApi, type TestEnvironment } from './harness.js';
import { ProbeModule } from './probe.module.js';

let environment: TestEnvironment;
beforeAll(async () => {
  environment = await createTestEnvironment();
});
afterAll(async () => {
  await environment?.drop();
});

describe('api skeleton', () => {
  let api: RunningApi;

  beforeAll(async () => {
    api = await startApi(environment, { jsonLimitBytes: 1024 }, [ProbeModule]);
  });
  afterAll(async () => {
    await api?.close();
  });

  it('reports Postgres and Redis reachable on /health', async () => {
    const response = await fetch(`${api.baseUrl}/health`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok', checks: { postgres: { ok: true }, redis: { ok: true } } });
  });

  it('answers an unknown route with the error envelope', async () => {
    const response = await fetch(`${api.baseUrl}/v1/nothing-here`);
    expect(response.status).toBe(404);
    const body = (await response.json()) as { error: { code: string; message: string; param: null } };
    expect(body.error.code).toBe('not_found');
    expect(body.error.param).toBeNull();
  });

  it('answers malformed JSON with 400 invalid_json and no stack trace', async () => {
    const response = await fetch(`${api.baseUrl}/v1/nothing-here`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"model": ',
    });
    expect(response.status).toBe(400);
    const text = await response.text();
    expect(JSON.parse(text).error.code).toBe('invalid_json');
    expect(text).not.toMatch(/at .*\.(js|ts):\d+/);
  });

  it('answers a JSON body over the limit with 413', async () => {
    const response = await fetch(`${api.baseUrl}/v1/nothing-here`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ pad: 'x'.repeat(4096) }),
    });
    expect(response.status).toBe(413);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');
  });

  it('answers an unexpected error with a generic 500 and keeps the detail server-side', async () => {
    const response = await fetch(`${api.baseUrl}/test-probe/crash`, { method: 'POST' });
    expect(response.status).toBe(500);
    const text = await response.text();
    expect(JSON.parse(text)).toEqual({
      error: { code: 'internal_error', message: expect.any(String), param: null },
    });
    expect(text).not.toContain('secret');
  });

  const post = (path: string, body: unknown) =>
    fetch(`${api.baseUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('refuses an unknown method with 422 unknown_method listing the allowed ones', async () => {
    const response = await post('/test-probe/validate', { model: 'm', training_file: 'd', method: 'qlora' });
    expect(response.status).toBe(422);
    const { error } = (await response.json()) as { error: { code: string; message: string; param: string } };
    expect(error.code).toBe('unknown_method');
    expect(error.param).toBe('method');
    for (const method of TRAIN_METHODS) expect(error.message).toContain(method);
  });

  it('refuses an out-of-range hyperparameter with 422 and its key path as param', async () => {
    const response = await post('/test-probe/validate', {
      model: 'm',
      training_file: 'd',
      hyperparameters: { optimizer: { beta1: 1.2 } },
    });
    expect(response.status).toBe(422);
    const { error } = (await response.json()) as { error: { code: string; param: string } };
    expect(error).toMatchObject({ code: 'invalid_parameter', param: 'hyperparameters.optimizer.beta1' });
  });

  it('serves the OpenAPI document built from the shared schemas, and a docs page', async () => {
    const response = await fetch(`${api.baseUrl}/openapi.json`);
    expect(response.status).toBe(200);
    const document = (await response.json()) as {
      paths: Record<string, unknown>;
      components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
    };
    expect(Object.keys(document.paths)).toEqual(expect.arrayContaining(['/v1/jobs', '/v1/jobs/{id}/events/stream']));
    expect(document.components.schemas.JobCreateRequest?.properties).toHaveProperty('hyperparameters');
    const docs = await fetch(`${api.baseUrl}/docs`);
    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain('swagger');
  });
});

describe('health with Redis down', () => {
  it('answers 503 naming the unreachable service', async () => {
    const api = await startApi(environment, { redisUrl: `redis://127.0.0.1:${CLOSED_PORT}` });
    try {
      const response = await fetch(`${api.baseUrl}/health`);
      expect(response.status).toBe(503);
      const body = (await response.json()) as { checks: { redis: { ok: boolean } }; error: { code: string } };
      expect(body.checks.redis.ok).toBe(false);
      expect(body.error.code).toBe('service_unavailable');
    } finally {
      await api.close();
    }
  });
});

describe('API keys', () => {
  let api: RunningApi;

  beforeAll(async () => {
    api = await startApi(environment, { rateLimitPerMinute: 5 });
  });
  afterAll(async () => {
    await api?.close();
  });

  const errorOf = async (response: Response) => ((await response.json()) as { error: { code: string } }).error;

  it('refuses a request without a key with 401 invalid_api_key', async () => {
    const response = await fetch(`${api.baseUrl}/v1/jobs`);
    expect(response.status).toBe(401);
    expect((await errorOf(response)).code).toBe('invalid_api_key');
  });

  it('refuses a wrong key with 401 invalid_api_key', async () => {
    const response = await fetch(`${api.baseUrl}/v1/jobs`, {
      headers: { authorization: `Bearer et_0123456789${'x'.repeat(32)}` },
    });
    expect(response.status).toBe(401);
    expect((await errorOf(response)).code).toBe('invalid_api_key');
  });

  it('lets a read key list jobs but refuses it a POST with 403 insufficient_scope', async () => {
    const key = await api.key(['read']);
    const list = await fetch(`${api.baseUrl}/v1/jobs`, { headers: { authorization: `Bearer ${key}` } });
    expect(list.status).toBe(200);
    expect(await list.json()).toEqual({ object: 'list', data: [], has_more: false, next_cursor: null });
    const create = await fetch(`${api.baseUrl}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', training_file: 'd' }),
    });
    expect(create.status).toBe(403);
    expect((await errorOf(create)).code).toBe('insufficient_scope');
  });

  it('limits requests per key with 429 and Retry-After', async () => {
    const key = await api.key(['read']);
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 7; i++) {
      const response = await fetch(`${api.baseUrl}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      statuses.push(response.status);
      if (response.status === 429) {
        retryAfter = response.headers.get('retry-after');
        expect((await errorOf(response)).code).toBe('rate_limit_exceeded');
      } else await response.arrayBuffer();
    }
    expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
    expect(statuses.slice(5)).toEqual([429, 429]);
    expect(Number(retryAfter)).toBeGreaterThan(0);
  });
});
