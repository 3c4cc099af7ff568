/**
 * S3Storage against a real S3-compatible server running in this process (s3rver: the S3 REST API
 * over HTTP with its fixed S3RVER access key), and the same contract run on LocalStorage: whatever
 * the API or a worker does with one storage works with the other. s3rver refuses unknown access
 * keys but does not recompute SigV4 signatures (its source says so): the signing itself is
 * aws4fetch's, checked here only by a real store accepting it (docs/deploy.md).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// s3rver ships no type declarations; only its constructor, run() and close() are used.
// @ts-expect-error -- untyped CommonJS module
import S3rver from 's3rver';

import { createArtifactStorage, S3RequestError, S3Storage, StorageObjectNotFoundError } from './s3-storage.js';
import { type ArtifactStorage, LocalStorage, StorageKeyError } from './storage.js';
import { downloadObject, downloadTree, localKeys, syncTree } from './storage-sync.js';

interface FakeS3 {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}

const BUCKET = 'expertune-test';
let scratch: string;
let server: FakeS3;
let endpoint: string;

const s3 = (overrides: Partial<ConstructorParameters<typeof S3Storage>[0]> = {}) =>
  new S3Storage({
    bucket: BUCKET,
    endpoint,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    prefix: 'deploy-a',
    ...overrides,
  });

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'expertune-s3-'));
  server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: path.join(scratch, 's3rver'),
    configureBuckets: [{ name: BUCKET }],
  }) as FakeS3;
  const { port } = await server.run();
  endpoint = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await server?.close();
  await rm(scratch, { recursive: true, force: true });
});

const storages: [string, () => ArtifactStorage][] = [
  ['S3Storage', () => s3()],
  ['LocalStorage', () => new LocalStorage(path.join(scratch, 'local'))],
];

describe.each(storages)('%s (the storage contract)', (_name, make) => {
  it('round-trips a Buffer and a stream with the sha256 node:crypto computes; stat reports the size', async () => {
    const storage = make();
    const data = randomBytes(200_000);
    expect(await storage.put('datasets/a b+c.jsonl', data)).toEqual({ bytes: data.length, sha256: sha256(data) });
    expect(await readAll(storage.get('datasets/a b+c.jsonl'))).toEqual(data);
    const streamed = Readable.from([data.subarray(0, 777), data.subarray(777)]);
    expect(await storage.put('jobs/j1/final/trainable.safetensors', streamed)).toEqual({
      bytes: data.length,
      sha256: sha256(data),
    });
    expect((await storage.stat('jobs/j1/final/trainable.safetensors'))?.bytes).toBe(data.length);
  });

  it('lists the keys below a prefix, recursively and sorted, and nothing for an empty prefix', async () => {
    const storage = make();
    for (const key of ['runs/r1/export/b.json', 'runs/r1/export/a/x.bin', 'runs/r1/exported', 'runs/r2/c'])
      await storage.put(key, Buffer.from(key));
    expect(await storage.list('runs/r1/export')).toEqual(['runs/r1/export/a/x.bin', 'runs/r1/export/b.json']);
    expect(await storage.list('runs')).toEqual([
      'runs/r1/export/a/x.bin',
      'runs/r1/export/b.json',
      'runs/r1/exported',
      'runs/r2/c',
    ]);
    expect(await storage.list('nothing/here')).toEqual([]);
  });

  it('replaces an object whole; delete and stat report a missing key; get of a missing key fails with ENOENT', async () => {
    const storage = make();
    await storage.put('k/v', Buffer.from('old'));
    await storage.put('k/v', Buffer.from('new contents'));
    expect((await readAll(storage.get('k/v'))).toString()).toBe('new contents');
    expect(await storage.delete('k/v')).toBe(true);
    expect(await storage.delete('k/v')).toBe(false);
    expect(await storage.stat('k/v')).toBeNull();
    await expect(readAll(storage.get('k/v'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses keys that could leave the root, by the same rules', async () => {
    const storage = make();
    for (const key of ['../outside', 'a/../../outside', '/etc/passwd', 'a//b', './a', '', 'a\\..\\b', 'a\0b']) {
      await expect(storage.put(key, Buffer.from('x')), key).rejects.toThrow(StorageKeyError);
      expect(() => storage.get(key), key).toThrow(StorageKeyError);
      await expect(storage.stat(key), key).rejects.toThrow(StorageKeyError);
      await expect(storage.delete(key), key).rejects.toThrow(StorageKeyError);
      await expect(storage.list(key), key).rejects.toThrow(StorageKeyError);
    }
  });
});

describe('S3Storage', () => {
  it('round-trips an exported adapter as a tar: same bytes, same files after extraction', async () => {
    const exportDir = path.join(scratch, 'export');
    await mkdir(path.join(exportDir, 'expert-0'), { recursive: true });
    const weights = randomBytes(64 * 1024);
    await writeFile(path.join(exportDir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2 }));
    await writeFile(path.join(exportDir, 'expert-0', 'adapter_model.safetensors'), weights);
    const tarFile = path.join(scratch, 'adapter.tar');
    execFileSync('tar', ['-cf', tarFile, '-C', exportDir, '.']);
    const tarBytes = await readFile(tarFile);

    const storage = s3();
    const stored = await storage.put('adapters/run-1.tar', createReadStream(tarFile));
    expect(stored).toEqual({ bytes: tarBytes.length, sha256: sha256(tarBytes) });
    const back = await readAll(storage.get('adapters/run-1.tar'));
    expect(sha256(back)).toBe(stored.sha256);

    const unpacked = path.join(scratch, 'unpacked');
    await mkdir(unpacked);
    await writeFile(path.join(scratch, 'back.tar'), back);
    execFileSync('tar', ['-xf', path.join(scratch, 'back.tar'), '-C', unpacked]);
    expect(await readFile(path.join(unpacked, 'expert-0', 'adapter_model.safetensors'))).toEqual(weights);
    expect(JSON.parse(await readFile(path.join(unpacked, 'adapter_config.json'), 'utf8'))).toEqual({
      peft_type: 'LORA',
      r: 2,
    });
  });

  it('lists past a page boundary with continuation tokens, decoding XML entities in keys', async () => {
    // s3rver's continuation tokens use DES, which Node 20's OpenSSL 3 no longer has: a stub
    // answering two canned ListObjectsV2 pages stands in for the store here.
    const queries: URLSearchParams[] = [];
    const stub = createServer((request, response) => {
      const query = new URL(request.url!, 'http://stub').searchParams;
      queries.push(query);
      const page = (keys: string[], next?: string) =>
        `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><IsTruncated>${next ? 'true' : 'false'}</IsTruncated>` +
        keys.map((key) => `<Contents><Key>${key}</Key><Size>1</Size></Contents>`).join('') +
        (next ? `<NextContinuationToken>${next}</NextContinuationToken>` : '') +
        '</ListBucketResult>';
      response.setHeader('content-type', 'application/xml');
      response.end(
        query.get('continuation-token') === 'page+2&more'
          ? page(['p/ckpt/step-2/b'])
          : page(['p/ckpt/step-1/a&amp;b', 'p/ckpt/step-2/&#x3c;a&#62;'], 'page+2&amp;more'),
      );
    });
    await new Promise<void>((resolve) => stub.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = stub.address() as AddressInfo;
      const storage = s3({ endpoint: `http://127.0.0.1:${port}`, prefix: 'p', listPageSize: 2 });
      expect(await storage.list('ckpt')).toEqual(['ckpt/step-1/a&b', 'ckpt/step-2/<a>', 'ckpt/step-2/b']);
      expect(queries.map((q) => [q.get('prefix'), q.get('max-keys'), q.get('continuation-token')])).toEqual([
        ['p/ckpt/', '2', null],
        ['p/ckpt/', '2', 'page+2&more'],
      ]);
    } finally {
      await new Promise((resolve) => stub.close(resolve));
    }
  });

  it('gives up on a store that accepts the connection and never answers', async () => {
    const hung = createServer(() => undefined); // reads the request, answers nothing
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = hung.address() as AddressInfo;
      const storage = s3({ endpoint: `http://127.0.0.1:${port}`, attempts: 2, timeoutMs: 150 });
      const started = Date.now();
      await expect(storage.stat('any/key')).rejects.toThrow(/S3 HEAD "any\/key": no answer within 150 ms/);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      hung.closeAllConnections();
      await new Promise((resolve) => hung.close(resolve));
    }
  });

  it('keeps deployments apart by prefix', async () => {
    await s3({ prefix: 'deploy-b' }).put('shared/name', Buffer.from('b'));
    await s3({ prefix: 'deploy-c' }).put('shared/name', Buffer.from('c'));
    expect((await readAll(s3({ prefix: 'deploy-b' }).get('shared/name'))).toString()).toBe('b');
    expect(await s3({ prefix: 'deploy-c' }).list('shared')).toEqual(['shared/name']);
    expect(await s3({ prefix: 'deploy-d' }).stat('shared/name')).toBeNull();
  });

  it('fails with the HTTP status when the store refuses the request (an unknown key, a missing bucket)', async () => {
    const unknownKey = s3({ accessKeyId: 'NOT-A-KEY', attempts: 1 });
    await expect(unknownKey.put('x', Buffer.from('x'))).rejects.toThrow(S3RequestError);
    await expect(unknownKey.put('x', Buffer.from('x'))).rejects.toThrow(/HTTP 403 InvalidAccessKeyId/);
    const noBucket = s3({ bucket: 'no-such-bucket', attempts: 1 });
    await expect(noBucket.put('x', Buffer.from('x'))).rejects.toMatchObject({ status: 404 });
    await expect(readAll(s3().get('missing/object'))).rejects.toThrow(StorageObjectNotFoundError);
  });
});

describe('a local directory as a cache of the store (how a worker trains from S3)', () => {
  it('uploads a run directory, mirrors a pruned checkpoint, and downloads it into another root', async () => {
    const storage = s3({ prefix: 'sync' });
    const worker1 = path.join(scratch, 'worker-1');
    const worker2 = path.join(scratch, 'worker-2');
    const files: Record<string, Buffer> = {
      'jobs/j1/checkpoints/step-10/state.json': Buffer.from('{"step":10}'),
      'jobs/j1/checkpoints/step-10/trainable.safetensors': randomBytes(4096),
      'jobs/j1/checkpoints/step-20/state.json': Buffer.from('{"step":20}'),
      'jobs/j1/checkpoints/step-20/trainable.safetensors': randomBytes(4096),
    };
    for (const [key, data] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(worker1, key)), { recursive: true });
      await writeFile(path.join(worker1, key), data);
    }
    expect((await syncTree(storage, 'jobs/j1/checkpoints', worker1)).uploaded).toEqual(Object.keys(files).sort());
    expect((await syncTree(storage, 'jobs/j1/checkpoints', worker1)).uploaded).toEqual([]); // nothing changed

    // The trainer keeps the last checkpoints only: a pruned one leaves the store too.
    await rm(path.join(worker1, 'jobs/j1/checkpoints/step-10'), { recursive: true });
    expect((await syncTree(storage, 'jobs/j1/checkpoints', worker1)).deleted).toEqual([
      'jobs/j1/checkpoints/step-10/state.json',
      'jobs/j1/checkpoints/step-10/trainable.safetensors',
    ]);

    // Another worker (another pod, an empty disk) resumes from what the store holds.
    await downloadTree(storage, 'jobs/j1/checkpoints', worker2);
    expect(await localKeys(worker2, 'jobs/j1/checkpoints')).toEqual([
      'jobs/j1/checkpoints/step-20/state.json',
      'jobs/j1/checkpoints/step-20/trainable.safetensors',
    ]);
    const weights = 'jobs/j1/checkpoints/step-20/trainable.safetensors';
    expect(await readFile(path.join(worker2, weights))).toEqual(files[weights]);
    expect(await downloadObject(storage, weights, worker2)).toBe(path.join(worker2, weights));
    await expect(downloadObject(storage, 'jobs/j1/missing', worker2)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(downloadObject(storage, '../escape', worker2)).rejects.toThrow(StorageKeyError);
  });
});

describe('createArtifactStorage', () => {
  it('is LocalStorage by default and S3Storage with EXPERTUNE_STORAGE=s3; missing settings are named', () => {
    const local = createArtifactStorage({}, path.join(scratch, 'default'));
    expect(local).toBeInstanceOf(LocalStorage);
    const remote = createArtifactStorage({
      EXPERTUNE_STORAGE: 's3',
      EXPERTUNE_S3_BUCKET: BUCKET,
      EXPERTUNE_S3_ENDPOINT: endpoint,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
    });
    expect(remote).toBeInstanceOf(S3Storage);
    expect(remote.path).toBeUndefined();
    expect(() => createArtifactStorage({ EXPERTUNE_STORAGE: 's3' })).toThrow(
      'EXPERTUNE_STORAGE=s3 needs EXPERTUNE_S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY',
    );
    expect(() => createArtifactStorage({ EXPERTUNE_STORAGE: 'gcs' })).toThrow('expected local or s3');
  });

  it('talks to the server it was configured for', async () => {
    const storage = createArtifactStorage({
      EXPERTUNE_STORAGE: 's3',
      EXPERTUNE_S3_BUCKET: BUCKET,
      EXPERTUNE_S3_ENDPOINT: endpoint,
      EXPERTUNE_S3_PREFIX: 'from-env',
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
    });
    await storage.put('hello', Buffer.from('world'));
    expect(await s3({ prefix: 'from-env' }).list('hello')).toEqual([]);
    expect((await readAll(s3({ prefix: 'from-env' }).get('hello'))).toString()).toBe('world');
  });
});
