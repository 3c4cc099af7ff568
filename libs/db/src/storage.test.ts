import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dataDir, LocalStorage, StorageKeyError } from './storage.js';

let scratch: string;
let storage: LocalStorage;

beforeEach(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'expertune-storage-'));
  storage = new LocalStorage(path.join(scratch, 'root'));
});
afterEach(async () => rm(scratch, { recursive: true, force: true }));

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('LocalStorage', () => {
  it('round-trips a Buffer and a stream, reporting bytes and the sha256 node:crypto computes', async () => {
    const data = randomBytes(300_000);
    const expected = createHash('sha256').update(data).digest('hex');
    expect(await storage.put('datasets/a.jsonl', data)).toEqual({ bytes: data.length, sha256: expected });
    expect(await readAll(storage.get('datasets/a.jsonl'))).toEqual(data);

    const chunks = [data.subarray(0, 1000), data.subarray(1000)];
    expect(await storage.put('jobs/j1/adapter.safetensors', Readable.from(chunks))).toEqual({
      bytes: data.length,
      sha256: expected,
    });
    expect(storage.path('jobs/j1/adapter.safetensors')).toBe(
      path.join(storage.root, 'jobs', 'j1', 'adapter.safetensors'),
    );
    expect(await readFile(storage.path('jobs/j1/adapter.safetensors'))).toEqual(data);
    expect((await storage.stat('jobs/j1/adapter.safetensors'))?.bytes).toBe(data.length);
  });

  it('replaces an object whole, and stat/delete report a missing key', async () => {
    await storage.put('k', Buffer.from('old'));
    await storage.put('k', Buffer.from('new contents'));
    expect((await readAll(storage.get('k'))).toString()).toBe('new contents');
    expect(await storage.delete('k')).toBe(true);
    expect(await storage.delete('k')).toBe(false);
    expect(await storage.stat('k')).toBeNull();
    await expect(readAll(storage.get('k'))).rejects.toThrow(/ENOENT/);
  });

  it('refuses keys that escape the root: "..", absolute paths, empty segments', async () => {
    for (const key of ['../outside', 'a/../../outside', '/etc/passwd', 'a//b', './a', '', 'a\\..\\b']) {
      await expect(storage.put(key, Buffer.from('x')), key).rejects.toThrow(StorageKeyError);
      expect(() => storage.get(key), key).toThrow(/storage key .* refused/);
    }
    expect(existsSync(path.join(scratch, 'outside'))).toBe(false);
  });

  it('refuses keys that reach outside the root through a symlink', async () => {
    const outside = path.join(scratch, 'outside');
    await mkdir(outside);
    await writeFile(path.join(outside, 'secret'), 'secret');
    await mkdir(storage.root, { recursive: true });
    await symlink(outside, path.join(storage.root, 'link'));
    await symlink(path.join(outside, 'secret'), path.join(storage.root, 'secret-link'));

    await expect(storage.put('link/new', Buffer.from('x'))).rejects.toThrow(/outside the storage root/);
    expect(() => storage.get('link/secret')).toThrow(/outside the storage root/);
    expect(() => storage.get('secret-link')).toThrow(/outside the storage root/);
    await expect(storage.stat('secret-link')).rejects.toThrow(StorageKeyError);
    await expect(storage.delete('link/secret')).rejects.toThrow(StorageKeyError);
    expect(await readdir(outside)).toEqual(['secret']);
  });

  it('follows a symlink that stays inside the root', async () => {
    await storage.put('real/file', Buffer.from('inside'));
    await symlink(path.join(storage.root, 'real'), path.join(storage.root, 'alias'));
    expect((await readAll(storage.get('alias/file'))).toString()).toBe('inside');
  });

  it('leaves nothing under the key when the source stream fails mid-write', async () => {
    await storage.put('ckpt/keep', Buffer.from('previous'));
    async function* crashing() {
      yield Buffer.alloc(64 * 1024, 1);
      yield Buffer.alloc(64 * 1024, 2);
      throw new Error('worker died mid-upload');
    }
    await expect(storage.put('ckpt/new', Readable.from(crashing()))).rejects.toThrow('worker died mid-upload');
    await expect(storage.put('ckpt/keep', Readable.from(crashing()))).rejects.toThrow('worker died mid-upload');
    expect(await storage.stat('ckpt/new')).toBeNull();
    expect((await readAll(storage.get('ckpt/keep'))).toString()).toBe('previous');
    expect(await readdir(path.join(storage.root, 'ckpt'))).toEqual(['keep']);
  });

  it('defaults its root to EXPERTUNE_DATA_DIR, else .expertune/data', () => {
    expect(dataDir({ EXPERTUNE_DATA_DIR: '/srv/expertune' })).toBe('/srv/expertune');
    expect(dataDir({})).toBe(path.resolve('.expertune/data'));
  });
});
