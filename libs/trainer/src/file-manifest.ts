/**
 * A directory's sha256 manifest (`manifest.json`), written last and checked on load: a directory
 * whose manifest is missing or disagrees with its files was cut short (a killed writer, a full
 * disk, a torn copy) and is never read as whole.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const MANIFEST_FILE = 'manifest.json';

interface Manifest {
  sha256: Record<string, string>;
}

/** The file's sha256, read in chunks; `flush` also forces it to disk before a rename publishes it. */
function sha256Of(path: string, flush: boolean): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (let read; (read = readSync(fd, chunk, 0, chunk.length, null)) > 0;) hash.update(chunk.subarray(0, read));
    if (flush) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** Writes `dir/manifest.json` for `files` (names inside `dir`), after syncing each to disk. */
export function writeManifest(dir: string, files: string[]): void {
  const manifest: Manifest = {
    sha256: Object.fromEntries(files.map((name) => [name, sha256Of(join(dir, name), true)])),
  };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n', { flush: true });
}

/** Why `dir` is not whole (a missing manifest, or the first file that is missing or differs), or null when it is. */
export function manifestProblem(dir: string): string | null {
  const path = join(dir, MANIFEST_FILE);
  if (!existsSync(path)) return `no ${MANIFEST_FILE} (an interrupted write)`;
  let manifest: Manifest;
  try {
    manifest = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  } catch {
    return `${MANIFEST_FILE} is not valid JSON`;
  }
  if (typeof manifest?.sha256 !== 'object' || manifest.sha256 === null) return `${MANIFEST_FILE} lists no files`;
  for (const [name, expected] of Object.entries(manifest.sha256)) {
    if (name.includes('/') || name.includes('\\') || name === '..') return `${MANIFEST_FILE} names ${name}`;
    if (!existsSync(join(dir, name))) return `${name} is missing`;
    if (sha256Of(join(dir, name), false) !== expected) return `${name} does not match its sha256 in ${MANIFEST_FILE}`;
  }
  return null;
}
