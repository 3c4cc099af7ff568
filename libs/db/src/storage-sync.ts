/**
 * A local directory as a cache of an object storage "directory" (every key under a prefix): how a
 * worker trains from an S3 store (the trainer reads and writes files), and how the API tars an
 * export that lives in one. With LocalStorage the two are the same files, and these are not needed.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

import { type ArtifactStorage, storageKeySegments } from './storage.js';

/** `<root>/<key>`; the key is checked by the storages' rules first, so it cannot leave `root`. */
export function localPathOf(root: string, key: string): string {
  return path.join(root, ...storageKeySegments(key));
}

/** Downloads `key` to `<root>/<key>` unless a file of the same size is there; returns its path. */
export async function downloadObject(storage: ArtifactStorage, key: string, root: string): Promise<string> {
  const target = localPathOf(root, key);
  const [remote, local] = await Promise.all([storage.stat(key), stat(target).catch(() => null)]);
  if (!remote)
    throw Object.assign(new Error(`ENOENT: no object stored under ${JSON.stringify(key)}`), { code: 'ENOENT' });
  if (local?.isFile() && local.size === remote.bytes) return target;
  await mkdir(path.dirname(target), { recursive: true });
  // Through a temporary name, so a reader (or a crash) never sees a half-written file.
  const partial = `${target}.${process.pid}.download`;
  try {
    await pipeline(storage.get(key), createWriteStream(partial));
    await rename(partial, target);
  } finally {
    await rm(partial, { force: true });
  }
  return target;
}

/** Downloads every object under `prefix` into `<root>/<prefix>/…`; returns the keys. */
export async function downloadTree(storage: ArtifactStorage, prefix: string, root: string): Promise<string[]> {
  const keys = await storage.list(prefix);
  for (const key of keys) await downloadObject(storage, key, root);
  return keys;
}

/** The keys of the regular files under `<root>/<prefix>`, sorted; [] when the directory is missing. */
export async function localKeys(root: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  const walk = async (dir: string, keyPrefix: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if ((error as { code?: string }).code === 'ENOENT') return;
      throw error;
    }
    for (const entry of entries) {
      const key = `${keyPrefix}/${entry.name}`;
      if (entry.isDirectory()) await walk(path.join(dir, entry.name), key);
      else if (entry.isFile()) keys.push(key);
    }
  };
  await walk(localPathOf(root, prefix), prefix);
  return keys.sort();
}

/**
 * Makes the objects under `prefix` what `<root>/<prefix>` holds: uploads the files the storage
 * lacks (or holds at another size) and deletes the objects whose file is gone (a pruned checkpoint).
 */
export async function syncTree(
  storage: ArtifactStorage,
  prefix: string,
  root: string,
): Promise<{ uploaded: string[]; deleted: string[] }> {
  const [local, remote] = await Promise.all([localKeys(root, prefix), storage.list(prefix)]);
  const remoteSet = new Set(remote);
  const uploaded: string[] = [];
  for (const key of local) {
    const file = localPathOf(root, key);
    if (remoteSet.has(key) && (await storage.stat(key))?.bytes === (await stat(file)).size) continue;
    await storage.put(key, createReadStream(file));
    uploaded.push(key);
  }
  const localSet = new Set(local);
  const deleted = remote.filter((key) => !localSet.has(key));
  for (const key of deleted) await storage.delete(key);
  return { uploaded, deleted };
}
