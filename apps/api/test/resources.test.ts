/** The job API end to end over HTTP, against the real Postgres and Redis (issue 5 "bad input, each a test"). */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { type Job, trainQueueName } from '@expertune/contracts';
import { Artifact, JobEvent, Job as JobRow } from '@expertune/db';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CLOSED_PORT, createTestEnvironment, type RunningApi, startApi, type TestEnvironment } from './harness.js';

let environment: TestEnvironment;
let api: RunningApi;
let launchKey: string;
let queue: Queue;

beforeAll(async () => {
  environment = await createTestEnvironment();
  api = await startApi(environment, { uploadLimitBytes: 4096 });
  launchKey = await api.key(['launch']);
  queue = new Queue(trainQueueName('cpu'), {
    connection: { url: api.config.redisUrl },
    prefix: api.config.queuePrefix,
  });
});
afterAll(async () => {
  await queue?.obliterate({ force: true }).catch(() => undefined);
  await queue?.close();
  await api?.close();
  await environment?.drop();
});

interface ErrorBody {
  error: { code: string; message: string; param: string | null; lines?: { line: number; field: string }[] };
}

async function call<T = unknown>(method: string, route: string, body?: unknown): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = { authorization: `Bearer ${launchKey}` };
  let payload: string | FormData | undefined;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const response = await fetch(`${api.baseUrl}${route}`, { method, headers, body: payload });
  return { status: response.status, body: (await response.json()) as T };
}

function jsonl(rows: unknown[]): string {
  return rows.map((row) => JSON.stringify(row)).join('\n') + '\n';
}

function uploadForm(content: string, filename = 'train.jsonl'): FormData {
  const form = new FormData();
  form.set('file', new Blob([content]), filename);
  return form;
}

/** A directory with a valid Llama config.json (libs/formats checks it) and a tokenizer.json. */
function tinyModelDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'expertune-model-'));
  writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
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
    }),
  );
  writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
  return dir;
}

const goodRows = [
  { prompt: 'What is 2+2?', completion: '4' },
  {
    messages: [
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'hello' },
    ],
  },
  { text: 'plain text row' },
];
const FORMATS_OF_GOOD_ROWS = { prompt_completion: 1, chat: 1, text: 1 };

describe('models and datasets', () => {
  let modelId: string;
  let datasetId: string;

  it('registers a local model directory with its parameter count', async () => {
    const { status, body } = await call<{ id: string; parameter_count: number; architecture: string }>(
      'POST',
      '/v1/models',
      { path: tinyModelDir(), name: 'tiny' },
    );
    expect(status).toBe(200);
    // embed 64x16 (tied) + 2 layers x (4 attn 16x16 + 3 mlp 16x32 + 2 norms 16) + final norm 16
    expect(body.parameter_count).toBe(64 * 16 + 2 * (4 * 256 + 3 * 512 + 32) + 16);
    expect(body.architecture).toBe('LlamaForCausalLM');
    modelId = body.id;
  });

  it('refuses a directory without a valid config.json with 422 on path', async () => {
    const { status, body } = await call<ErrorBody>('POST', '/v1/models', { path: tmpdir() + '/nope-' + Date.now() });
    expect(status).toBe(422);
    expect(body.error.param).toBe('path');
  });

  it('accepts a good JSONL upload with row counts and a preview', async () => {
    const { status, body } = await call<{ id: string; stats: { rows: number; formats: Record<string, number> } }>(
      'POST',
      '/v1/datasets',
      uploadForm(jsonl(goodRows), '../../etc/evil.jsonl'),
    );
    expect(status).toBe(200);
    expect(body.stats.rows).toBe(3);
    // Counted by the file's own format, not by the chat form every row is read into.
    expect(body.stats.formats).toEqual(FORMATS_OF_GOOD_ROWS);
    datasetId = body.id;
    const fetched = await call<{ filename: string; preview: unknown[] }>('GET', `/v1/datasets/${datasetId}`);
    expect(fetched.status).toBe(200);
    // The client's path never becomes ours: only its last segment is kept, as a label.
    expect(fetched.body.filename).toBe('evil.jsonl');
    expect(fetched.body.preview).toHaveLength(3);
  });

  it('refuses bad JSONL with 422 listing each bad line and field', async () => {
    const content = [
      JSON.stringify(goodRows[0]),
      '{not json',
      JSON.stringify({ prompt: 'q' }),
      JSON.stringify({ foo: 1 }),
    ].join('\n');
    const { status, body } = await call<ErrorBody>('POST', '/v1/datasets', uploadForm(content));
    expect(status).toBe(422);
    expect(body.error.code).toBe('invalid_dataset');
    expect(body.error.lines?.map((l) => l.line)).toEqual([2, 3, 4]);
    expect(body.error.message).toContain('line 2');
    expect(body.error.lines?.[1]?.field).toBeTruthy();
  });

  it('refuses an upload over the size limit with 413', async () => {
    const big = jsonl(Array.from({ length: 200 }, (_, i) => ({ text: `row ${i} ${'x'.repeat(40)}` })));
    const { status, body } = await call<ErrorBody>('POST', '/v1/datasets', uploadForm(big));
    expect(status).toBe(413);
    expect(body.error.code).toBe('payload_too_large');
  });

  describe('jobs', () => {
    let job: Job;

    it('creates a job that echoes the resolved defaults and sits in the BullMQ queue under its id', async () => {
      const { status, body } = await call<Job>('POST', '/v1/jobs', {
        model: modelId,
        training_file: datasetId,
        method: 'mola',
        hyperparameters: { training: { max_steps: 5 } },
        metadata: { team: 'search' },
      });
      expect(status).toBe(200);
      job = body;
      expect(job).toMatchObject({
        object: 'fine_tuning.job',
        status: 'queued',
        method: 'mola',
        accelerator: 'cpu',
        seed: 0,
      });
      expect(job.hyperparameters.mola).toMatchObject({ rank: 8, top_k: 2 });
      expect(job.hyperparameters.training).toMatchObject({ max_steps: 5, micro_batch_size: 4 });
      expect(job.hyperparameters.optimizer.lr).toBe(2e-4);
      expect(job.metadata).toEqual({ team: 'search' });
      expect(job.queue_position).toBe(0);
      const queued = await queue.getJob(job.id);
      expect(queued?.id).toBe(job.id);
      expect(queued?.data).toEqual({ jobId: job.id });
    });

    it('lists jobs with filters and cursor pagination', async () => {
      const second = await call<Job>('POST', '/v1/jobs', { model: modelId, training_file: datasetId });
      expect(second.body.queue_position).toBe(1);
      const page1 = await call<{ data: Job[]; has_more: boolean; next_cursor: string }>('GET', '/v1/jobs?limit=1');
      expect(page1.body.data.map((j) => j.id)).toEqual([second.body.id]);
      expect(page1.body.has_more).toBe(true);
      const page2 = await call<{ data: Job[]; has_more: boolean }>(
        'GET',
        `/v1/jobs?limit=1&after=${page1.body.next_cursor}`,
      );
      expect(page2.body.data.map((j) => j.id)).toEqual([job.id]);
      expect(page2.body.has_more).toBe(false);
      const mola = await call<{ data: Job[] }>('GET', '/v1/jobs?method=mola');
      expect(mola.body.data.map((j) => j.id)).toEqual([job.id]);
    });

    it('refuses an unknown method with 422 listing the allowed ones', async () => {
      const { status, body } = await call<ErrorBody>('POST', '/v1/jobs', {
        model: modelId,
        training_file: datasetId,
        method: 'qlora',
      });
      expect(status).toBe(422);
      expect(body.error).toMatchObject({ code: 'unknown_method', param: 'method' });
      expect(body.error.message).toContain('lora, full, mola, loramoe, dynmole, flylora');
    });

    it('refuses an out-of-range hyperparameter with 422 and its key path', async () => {
      const { status, body } = await call<ErrorBody>('POST', '/v1/jobs', {
        model: modelId,
        training_file: datasetId,
        hyperparameters: { lora: { rank: 0 } },
      });
      expect(status).toBe(422);
      expect(body.error.param).toBe('hyperparameters.lora.rank');
    });

    it('refuses an accelerator no worker serves with 422, before writing anything', async () => {
      const { status, body } = await call<ErrorBody>('POST', '/v1/jobs', {
        model: modelId,
        training_file: datasetId,
        accelerator: 'cuda-h100',
        suffix: 'no-gpu',
      });
      expect(status).toBe(422);
      expect(body.error).toMatchObject({ code: 'unknown_accelerator', param: 'accelerator' });
      expect(await api.dataSource.getRepository(JobRow).countBy({ suffix: 'no-gpu' })).toBe(0);
    });

    it('answers unknown ids with 404', async () => {
      const missing = '00000000-0000-0000-0000-000000000000';
      for (const route of [
        `/v1/jobs/${missing}`,
        '/v1/jobs/not-a-uuid',
        `/v1/datasets/${missing}`,
        `/v1/models/${missing}`,
        `/v1/adapters/${missing}`,
        `/v1/jobs/${missing}/events`,
      ]) {
        const { status, body } = await call<ErrorBody>('GET', route);
        expect([route, status]).toEqual([route, 404]);
        expect(body.error.code).toBe('not_found');
      }
      const create = await call<ErrorBody>('POST', '/v1/jobs', { model: missing, training_file: datasetId });
      expect(create.status).toBe(404);
      expect(create.body.error.param).toBe('model');
    });

    it('cancels a queued job at once and takes it out of the queue', async () => {
      const { status, body } = await call<Job>('POST', `/v1/jobs/${job.id}/cancel`);
      expect(status).toBe(200);
      expect(body.status).toBe('cancelled');
      expect(body.finished_at).not.toBeNull();
      expect(await queue.getJob(job.id)).toBeUndefined();
      const again = await call<ErrorBody>('POST', `/v1/jobs/${job.id}/cancel`);
      expect(again.status).toBe(409);
    });

    it('refuses to delete a running job with 409, deletes a finished one', async () => {
      const created = await call<Job>('POST', '/v1/jobs', { model: modelId, training_file: datasetId });
      await api.dataSource
        .getRepository(JobRow)
        .update({ id: created.body.id }, { status: 'running', startedAt: new Date() });
      const refused = await call<ErrorBody>('DELETE', `/v1/jobs/${created.body.id}`);
      expect(refused.status).toBe(409);
      expect(refused.body.error.code).toBe('job_not_finished');
      const deleted = await call<{ deleted: boolean }>('DELETE', `/v1/jobs/${job.id}`);
      expect(deleted).toEqual({ status: 200, body: { id: job.id, object: 'fine_tuning.job', deleted: true } });
    });

    it('replays stored events after Last-Event-ID over SSE to a real HTTP client', async () => {
      const created = await call<Job>('POST', '/v1/jobs', { model: modelId, training_file: datasetId });
      const events = api.dataSource.getRepository(JobEvent);
      for (const step of [1, 2, 3])
        await events.save({
          jobId: created.body.id,
          level: 'info',
          type: 'metrics',
          message: `step ${step}`,
          data: { step },
        });
      const stored = await events.find({ where: { jobId: created.body.id }, order: { id: 'ASC' } });
      expect(stored.map((e) => e.message)).toEqual(['job created and queued', 'step 1', 'step 2', 'step 3']);

      const controller = new AbortController();
      const response = await fetch(`${api.baseUrl}/v1/jobs/${created.body.id}/events/stream`, {
        headers: { authorization: `Bearer ${launchKey}`, 'last-event-id': String(stored[1]!.id) },
        signal: controller.signal,
      });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toContain('text/event-stream');
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      let text = '';
      while (!text.includes('step 3')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => m[1]);
      expect(ids).toEqual([String(stored[2]!.id), String(stored[3]!.id)]);
      expect(text).not.toContain('step 1');
      controller.abort();
    });
  });

  describe('adapters', () => {
    it('streams the export directory as a tar and refuses a path-traversal file name', async () => {
      const exportDir = path.join(environment.dataDir, 'adapters', 'run-1');
      mkdirSync(exportDir, { recursive: true });
      writeFileSync(path.join(exportDir, 'adapter_config.json'), '{"r": 8}');
      writeFileSync(path.join(exportDir, 'adapter_model.safetensors'), Buffer.alloc(64));
      const artifact = await api.dataSource.getRepository(Artifact).save({
        kind: 'adapter',
        name: 'run-1',
        storageKey: 'adapters/run-1',
        bytes: 72,
        sha256: 'a'.repeat(64),
      });

      const meta = await call<{ files: string[] }>('GET', `/v1/adapters/${artifact.id}`);
      expect(meta.status).toBe(200);
      expect(meta.body.files.sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);

      const download = await fetch(`${api.baseUrl}/v1/adapters/${artifact.id}/download`, {
        headers: { authorization: `Bearer ${launchKey}` },
      });
      expect(download.status).toBe(200);
      expect(download.headers.get('content-type')).toBe('application/x-tar');
      const tarBytes = Buffer.from(await download.arrayBuffer());
      expect(tarBytes.includes(Buffer.from('adapter_config.json'))).toBe(true);

      const file = await fetch(`${api.baseUrl}/v1/adapters/${artifact.id}/files/adapter_config.json`, {
        headers: { authorization: `Bearer ${launchKey}` },
      });
      expect(await file.text()).toBe('{"r": 8}');

      const traversal = await call<ErrorBody>('GET', `/v1/adapters/${artifact.id}/files/..%2F..%2F..%2Fetc%2Fpasswd`);
      expect(traversal.status).toBe(400);
      expect(traversal.body.error.code).toBe('invalid_path');

      const escaping = await api.dataSource.getRepository(Artifact).save({
        kind: 'adapter',
        name: 'escape',
        storageKey: '../../etc',
        bytes: 0,
        sha256: 'b'.repeat(64),
      });
      const refused = await call<ErrorBody>('GET', `/v1/adapters/${escaping.id}/download`);
      expect(refused.status).toBe(400);
      expect(refused.body.error.code).toBe('invalid_path');
    });
  });

  describe('with Redis down', () => {
    it('answers 503 queue_unavailable and keeps the job row queued for re-enqueueing', async () => {
      const down = await startApi(environment, { redisUrl: `redis://127.0.0.1:${CLOSED_PORT}` });
      try {
        const response = await fetch(`${down.baseUrl}/v1/jobs`, {
          method: 'POST',
          headers: { authorization: `Bearer ${launchKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: modelId, training_file: datasetId, suffix: 'redis-down' }),
        });
        expect(response.status).toBe(503);
        expect(((await response.json()) as ErrorBody).error.code).toBe('queue_unavailable');
        const rows = await down.dataSource.getRepository(JobRow).findBy({ suffix: 'redis-down' });
        expect(rows.map((r) => r.status)).toEqual(['queued']);
      } finally {
        await down.close();
      }
    });
  });
});
