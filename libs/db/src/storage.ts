import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, realpathSync } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface StoredObject {
  bytes: number;
  sha256: string;
}

export interface StorageStat {
  bytes: number;
  modifiedAt: Date;
}

/**
 * Where datasets, checkpoints and exported adapters live. Keys are relative, `/`-separated paths
 * (`datasets/<id>.jsonl`); an implementation refuses keys that would leave its root.
 */
export interface ArtifactStorage {
  /** Stores `data` under `key` atomically: readers see the old object or the whole new one, never a part. */
  put(key: string, data: Buffer | Readable): Promise<StoredObject>;
  get(key: string): Readable;
  /** null when nothing is stored under `key`. */
  stat(key: string): Promise<StorageStat | null>;
  /** true when something was deleted. */
  delete(key: string): Promise<boolean>;
  /** Every key below the directory-like key `prefix` (recursive), sorted; [] when there is none. */
  list(prefix: string): Promise<string[]>;
  /** A local file path, for storages that have one (the trainer reads model directories in place). */
  path?(key: string): string;
}

export class StorageKeyError extends Error {
  constructor(
    readonly key: string,
    readonly reason: string,
  ) {
    super(`storage key ${JSON.stringify(key)} refused: ${reason}`);
    this.name = 'StorageKeyError';
  }
}

export const DEFAULT_DATA_DIR = '.expertune/data';

/** `EXPERTUNE_DATA_DIR`, else `.expertune/data` under the working directory. */
export function dataDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.EXPERTUNE_DATA_DIR || DEFAULT_DATA_DIR);
}

/**
 * The `/`-separated segments of `key`, after refusing what could name something outside a storage
 * root: absolute paths, `.`/`..`/empty segments, backslashes, NUL. Every storage applies the same
 * rules, so a key valid for LocalStorage is valid for S3 and the other way round.
 */
export function storageKeySegments(key: string): string[] {
  if (typeof key !== 'string' || key.length === 0) throw new StorageKeyError(String(key), 'empty key');
  if (key.includes('\0')) throw new StorageKeyError(key, 'contains a NUL byte');
  if (key.includes('\\')) throw new StorageKeyError(key, 'contains a backslash (use / between segments)');
  if (key.startsWith('/') || path.isAbsolute(key)) throw new StorageKeyError(key, 'absolute path');
  const segments = key.split('/');
  if (segments.some((segment) => segment === '' || segment === '.' || segment === '..')) {
    throw new StorageKeyError(key, 'empty, "." or ".." path segment');
  }
  return segments;
}

/** Files under one directory. Writes go to a temporary sibling, then `rename` over the key. */
export class LocalStorage implements ArtifactStorage {
  readonly root: string;

  constructor(rootDir: string = dataDir()) {
    this.root = path.resolve(rootDir);
  }

  async put(key: string, data: Buffer | Readable): Promise<StoredObject> {
    const target = this.resolve(key);
    await mkdir(this.root, { recursive: true });
    await mkdir(path.dirname(target), { recursive: true });
    // mkdir follows a symlinked directory on the way; check again where the file will really land.
    this.assertInside(key, realpathSync(path.dirname(target)));

    const temporary = path.join(
      path.dirname(target),
      `.${path.basename(target)}.${randomBytes(6).toString('hex')}.partial`,
    );
    const hash = createHash('sha256');
    let bytes = 0;
    const measure = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        bytes += chunk.length;
        callback(null, chunk);
      },
    });
    try {
      const source = Buffer.isBuffer(data) ? Readable.from([data]) : data;
      await pipeline(source, measure, createWriteStream(temporary, { flags: 'wx' }));
      const handle = await open(temporary, 'r+');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, target);
    } catch (error) {
      await unlink(temporary).catch(() => undefined);
      throw error;
    }
    return { bytes, sha256: hash.digest('hex') };
  }

  get(key: string): Readable {
    return createReadStream(this.resolve(key));
  }

  async stat(key: string): Promise<StorageStat | null> {
    try {
      const info = await stat(this.resolve(key));
      if (!info.isFile()) return null;
      return { bytes: info.size, modifiedAt: info.mtime };
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  async delete(key: string): Promise<boolean> {
    try {
      await unlink(this.resolve(key));
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const base = this.resolve(prefix);
    const keys: string[] = [];
    const walk = async (dir: string, keyPrefix: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (error) {
        if (isNotFound(error)) return;
        throw error;
      }
      for (const entry of entries) {
        const key = `${keyPrefix}/${entry.name}`;
        if (entry.isDirectory()) await walk(path.join(dir, entry.name), key);
        // put()'s temporary files are not objects yet.
        else if (entry.isFile() && !entry.name.endsWith('.partial')) keys.push(key);
      }
    };
    await walk(base, prefix);
    return keys.sort();
  }

  path(key: string): string {
    return this.resolve(key);
  }

  /**
   * The absolute path of `key`, after refusing keys that are absolute, contain `.`/`..` segments, or
   * whose existing part resolves (through symlinks) outside the root.
   */
  private resolve(key: string): string {
    const segments = storageKeySegments(key);
    const target = path.join(this.root, ...segments);
    this.assertInside(key, realpathOfExisting(target));
    return target;
  }

  private assertInside(key: string, resolved: string): void {
    const root = realpathOfExisting(this.root);
    if (resolved !== root && !resolved.startsWith(root + path.sep)) {
      throw new StorageKeyError(key, `resolves to ${resolved}, outside the storage root ${root} (symlink?)`);
    }
  }
}

/** realpath of the deepest existing ancestor of `target`, with the missing rest appended. */
function realpathOfExisting(target: string): string {
  const missing: string[] = [];
  let current = target;
  for (;;) {
    try {
      return path.join(realpathSync(current), ...missing.reverse());
    } catch (error) {
      if (!isNotFound(error)) throw error;
      const parent = path.dirname(current);
      if (parent === current) return target;
      missing.push(path.basename(current));
      current = parent;
    }
  }
}

function isNotFound(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
