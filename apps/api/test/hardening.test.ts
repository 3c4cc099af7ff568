/**
 * Issue 9's resource guards and security rules, each refused with a clear error while everything
 * else (other keys, other jobs, ordinary requests) keeps working. Real Postgres and Redis.
 */
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import type { Job } from '@expertune/contracts';
import { Artifact, Checkpoint } from '@expertune/db';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createTestEnvironment, type RunningApi, startApi, type TestEnvironment } from './harness.js';

interface ErrorBody {
  error: { code: string; message: string; param: string | null; lines?: { line: number; field: string }[] };
}

const MODEL_CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 64,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 64,
  tie_word_embeddings: true,
};

function modelDir(parent: string, name: string): string {
  const dir = path.join(parent, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(MODEL_CONFIG));
  writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
  return dir;
}

const scratch = mkdtempSync(path.join(tmpdir(), 'expertune-hardening-'));
const modelRoot = path.join(scratch, 'models');
const outside = path.join(scratch, 'elsewhere');
const ALLOWED_ORIGIN = 'https://console.example.test';

let environment: TestEnvironment;
let api: RunningApi;
/** A second API on the same database and queues, whose data disk is full (EXPERTUNE_DISK_FREE_BYTES=0). */
let fullDisk: RunningApi;
let launchKey: string;
let modelId: string;
let datasetId: string;

async function call<T = unknown>(
  method: string,
  route: string,
  options: { key?: string | null; body?: unknown; server?: RunningApi; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: T; headers: Headers }> {
  const key = options.key === undefined ? launchKey : options.key;
  const headers: Record<string, string> = { ...(key ? { authorization: `Bearer ${key}` } : {}), ...options.headers };
  let payload: string | FormData | undefined;
  if (options.body instanceof FormData) payload = options.body;
  else if (options.body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(options.body);
  }
  const response = await fetch(`${(options.server ?? api).baseUrl}${route}`, { method, headers, body: payload });
  const text = await response.text();
  return { status: response.status, body: (text ? JSON.parse(text) : null) as T, headers: response.headers };
}

function upload(content: string, key?: string): Promise<{ status: number; body: ErrorBody & { id: string } }> {
  const form = new FormData();
  form.set('file', new Blob([content]), 'train.jsonl');
  return call('POST', '/v1/datasets', { body: form, key });
}

const createJob = (key: string, extra: Record<string, unknown> = {}, server?: RunningApi) =>
  call<Job & ErrorBody>('POST', '/v1/jobs', {
    key,
    server,
    body: { model: modelId, training_file: datasetId, hyperparameters: { training: { max_steps: 2 } }, ...extra },
  });

beforeAll(async () => {
  mkdirSync(outside, { recursive: true });
  modelDir(modelRoot, 'tiny');
  modelDir(outside, 'secret-model');
  symlinkSync(path.join(outside, 'secret-model'), path.join(modelRoot, 'escape'));
  environment = await createTestEnvironment();
  const guards = {
    modelRoots: [modelRoot],
    corsOrigins: [ALLOWED_ORIGIN],
    maxActiveJobsPerKey: 2,
    maxRowBytes: 200,
    // A worker of 1 GiB: the tiny model fits, a huge micro-batch does not.
    resourceLimits: { memoryLimitBytes: 2 ** 30 },
  };
  api = await startApi(environment, guards);
  fullDisk = await startApi(environment, { ...guards, resourceLimits: { diskFreeBytes: 0 } });
  launchKey = await api.key(['launch']);
  const model = await call<{ id: string }>('POST', '/v1/models', { body: { path: path.join(modelRoot, 'tiny') } });
  expect(model.status).toBe(200);
  modelId = model.body.id;
  const dataset = await upload('{"prompt":"2+2?","completion":"4"}\n{"text":"plain"}\n');
  expect(dataset.status).toBe(200);
  datasetId = dataset.body.id;
});

afterAll(async () => {
  await fullDisk?.close();
  await api?.close();
  await environment?.drop();
});

describe('resource guards', () => {
  it('refuses a job too large for the worker memory with 422 insufficient_memory; a small one is still queued', async () => {
    const key = await api.key(['launch']);
    const huge = await createJob(key, {
      hyperparameters: { training: { max_steps: 2, micro_batch_size: 100_000 }, data: { max_seq_len: 4096 } },
    });
    expect(huge.status).toBe(422);
    expect(huge.body.error).toMatchObject({
      code: 'insufficient_memory',
      param: 'hyperparameters.training.micro_batch_size',
    });
    expect(huge.body.error.message).toMatch(
      /training needs about [\d.]+ GiB .*activations .* of memory; 1\.00 GiB is free/,
    );
    const small = await createJob(key);
    expect(small.status).toBe(200);
    expect(small.body.status).toBe('queued');
  });

  it('refuses a job when the data disk has no room for its checkpoints with 422 insufficient_disk; the other API still queues', async () => {
    const key = await api.key(['launch']);
    const refused = await createJob(key, {}, fullDisk);
    expect(refused.status).toBe(422);
    expect(refused.body.error).toMatchObject({
      code: 'insufficient_disk',
      param: 'hyperparameters.training.keep_checkpoints',
    });
    expect(refused.body.error.message).toContain('0.00 GiB is free');
    expect((await createJob(key)).status).toBe(200);
  });

  it('refuses a dataset with a row over EXPERTUNE_MAX_ROW_BYTES, naming the line; a normal upload still works', async () => {
    const long = JSON.stringify({ text: 'x'.repeat(300) });
    const refused = await upload(`{"text":"short"}\n${long}\n{"text":"fine"}\n`);
    expect(refused.status).toBe(422);
    expect(refused.body.error.code).toBe('dataset_limit_exceeded');
    expect(refused.body.error.lines).toEqual([
      expect.objectContaining({ line: 2, field: '(row)', message: expect.stringContaining('above the limit of 200') }),
    ]);
    expect((await upload('{"text":"fine"}\n')).status).toBe(200);
  });

  it('holds a key to EXPERTUNE_MAX_ACTIVE_JOBS_PER_KEY queued or running jobs (429 job_quota_exceeded); other keys are not affected', async () => {
    const busy = await api.key(['launch']);
    const first = await createJob(busy);
    expect((await createJob(busy)).status).toBe(200);
    const third = await createJob(busy);
    expect(third.status).toBe(429);
    expect(third.body.error.code).toBe('job_quota_exceeded');
    expect(third.body.error.message).toContain('EXPERTUNE_MAX_ACTIVE_JOBS_PER_KEY=2');
    // Another key, and reads by the busy key, go on as before.
    expect((await createJob(await api.key(['launch']))).status).toBe(200);
    expect((await call('GET', `/v1/jobs/${first.body.id}`, { key: busy })).status).toBe(200);
    // A cancelled job frees its place; resuming it would take one again.
    expect((await call('POST', `/v1/jobs/${first.body.id}/cancel`, { key: busy })).status).toBe(200);
    expect((await createJob(busy)).status).toBe(200);
    await api.dataSource.getRepository(Checkpoint).save({ jobId: first.body.id, step: 1, storageKey: 'x' });
    const resumed = await call<ErrorBody>('POST', `/v1/jobs/${first.body.id}/resume`, { key: busy, body: {} });
    expect(resumed.status).toBe(429);
    expect(resumed.body.error.code).toBe('job_quota_exceeded');
  });
});

describe('security rules', () => {
  it('registers models only under EXPERTUNE_MODEL_ROOTS: ../ refused, symlink escapes and outside paths refused', async () => {
    const traversal = await call<ErrorBody>('POST', '/v1/models', {
      body: { path: `${modelRoot}/../elsewhere/secret-model` },
    });
    expect(traversal.status).toBe(400);
    expect(traversal.body.error).toMatchObject({ code: 'invalid_path', param: 'path' });

    const symlink = await call<ErrorBody>('POST', '/v1/models', { body: { path: path.join(modelRoot, 'escape') } });
    expect(symlink.status).toBe(403);
    expect(symlink.body.error).toMatchObject({ code: 'model_path_not_allowed', param: 'path' });

    const direct = await call<ErrorBody>('POST', '/v1/models', { body: { path: path.join(outside, 'secret-model') } });
    expect(direct.status).toBe(403);
    expect(direct.body.error.code).toBe('model_path_not_allowed');

    modelDir(modelRoot, 'second');
    const inside = await call<{ path: string }>('POST', '/v1/models', {
      body: { path: path.join(modelRoot, 'second') },
    });
    expect(inside.status).toBe(200);
  });

  it('serves artifact files from inside the data directory only: a symlink out of an export is refused and left out of the tar', async () => {
    const exportDir = path.join(environment.dataDir, 'adapters', 'linked');
    mkdirSync(exportDir, { recursive: true });
    writeFileSync(path.join(exportDir, 'adapter_config.json'), '{"r": 4}');
    writeFileSync(path.join(outside, 'private.txt'), 'not yours');
    symlinkSync(path.join(outside, 'private.txt'), path.join(exportDir, 'leak.txt'));
    const artifact = await api.dataSource
      .getRepository(Artifact)
      .save({ kind: 'adapter', name: 'linked', storageKey: 'adapters/linked', bytes: 8, sha256: 'c'.repeat(64) });

    const leak = await call<ErrorBody>('GET', `/v1/adapters/${artifact.id}/files/leak.txt`);
    expect(leak.status).toBe(400);
    expect(leak.body.error).toMatchObject({ code: 'invalid_path', param: 'name' });
    const tar = await fetch(`${api.baseUrl}/v1/adapters/${artifact.id}/download`, {
      headers: { authorization: `Bearer ${launchKey}` },
    });
    const bytes = Buffer.from(await tar.arrayBuffer());
    expect(bytes.includes(Buffer.from('adapter_config.json'))).toBe(true);
    expect(bytes.includes(Buffer.from('not yours'))).toBe(false);
  });

  it('refuses what a key is not scoped for: a read key cannot launch, upload or delete; no key is a 401', async () => {
    const readKey = await api.key(['read']);
    expect((await call('GET', '/v1/jobs', { key: readKey })).status).toBe(200);
    for (const [method, route] of [
      ['POST', '/v1/jobs'],
      ['POST', '/v1/datasets'],
      ['POST', '/v1/models'],
      ['DELETE', `/v1/datasets/${datasetId}`],
    ] as const) {
      const refused = await call<ErrorBody>(method, route, { key: readKey, body: {} });
      expect(refused.status, `${method} ${route}`).toBe(403);
      expect(refused.body.error.code).toBe('insufficient_scope');
    }
    const anonymous = await call<ErrorBody>('GET', '/v1/jobs', { key: null });
    expect(anonymous.status).toBe(401);
    // The dataset the read key tried to delete is still there.
    expect((await call('GET', `/v1/datasets/${datasetId}`)).status).toBe(200);
  });

  it('sends security headers on every answer and no X-Powered-By', async () => {
    for (const response of [
      await call('GET', '/health', { key: null }),
      await call('GET', '/v1/nope'),
      await call('GET', '/v1/jobs'),
    ]) {
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('x-frame-options')).toBe('DENY');
      expect(response.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      expect(response.headers.get('referrer-policy')).toBe('no-referrer');
      expect(response.headers.get('x-powered-by')).toBeNull();
    }
  });

  it('answers CORS for the allowlisted origin only', async () => {
    const allowed = await call('GET', '/v1/jobs', { headers: { origin: ALLOWED_ORIGIN } });
    expect(allowed.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN);
    const other = await call('GET', '/v1/jobs', { headers: { origin: 'https://evil.example.test' } });
    expect(other.status).toBe(200); // a server-side answer; the browser withholds it without the header
    expect(other.headers.get('access-control-allow-origin')).toBeNull();

    const preflight = await fetch(`${api.baseUrl}/v1/jobs`, {
      method: 'OPTIONS',
      headers: { origin: ALLOWED_ORIGIN, 'access-control-request-method': 'POST' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-headers')).toContain('authorization');
    const refusedPreflight = await fetch(`${api.baseUrl}/v1/jobs`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example.test', 'access-control-request-method': 'POST' },
    });
    expect(refusedPreflight.headers.get('access-control-allow-origin')).toBeNull();
  });
});
