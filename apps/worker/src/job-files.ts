/**
 * The pure parts of running a job: its training config from the job row and resolved paths,
 * the checkpoints already in its run directory, and the digest of an export directory.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';

import type { RunnerInput } from './protocol.js';

/** checkpoint_every when the job's config says 0 (none): a dead worker's job must have something to resume from. */
export function defaultCheckpointEvery(maxSteps: number | undefined): number {
  if (maxSteps === undefined) return 50;
  return Math.max(1, Math.min(50, Math.ceil(maxSteps / 10)));
}

function asRecord(value: unknown): Record<string, unknown> {
  return value && typeof value === 'object' && !Array.isArray(value) ? { ...(value as Record<string, unknown>) } : {};
}

/**
 * The training config input of a job: jobs.config (a whole resolved config or only its sections)
 * with the paths, method and seed of the job's rows, whatever the stored config says about them.
 * Only keys the checkpoint hash ignores are adjusted (trainer checkpoints.ts FREE_KEYS): every
 * step is reported (log_every 1), a config without checkpoints gets some, threads follow the worker.
 */
export function trainConfigInput(input: RunnerInput): Record<string, unknown> {
  const { model: _model, output_dir: _outputDir, method: _method, seed: _seed, ...sections } = asRecord(input.config);
  const { train: _train, validation: _validation, ...data } = asRecord(sections.data);
  const training = asRecord(sections.training);
  training.log_every = 1;
  if (!training.checkpoint_every)
    training.checkpoint_every = defaultCheckpointEvery(
      typeof training.max_steps === 'number' ? training.max_steps : undefined,
    );
  return {
    ...sections,
    ...(input.threads !== null ? { threads: input.threads } : {}),
    model: input.modelDir,
    method: input.method,
    seed: input.seed,
    data: { ...data, train: input.trainFile, ...(input.validationFile ? { validation: input.validationFile } : {}) },
    training,
    output_dir: input.outputDir,
  };
}

/**
 * Complete checkpoints of a run directory, oldest first: the layout of libs/trainer's
 * checkpoints.ts (`checkpoints/step-N/state.json`, written by an atomic rename), read here so the
 * worker need not load the trainer (and its engine) to decide where a job resumes.
 */
export function listRunCheckpoints(runDir: string): { step: number; dir: string }[] {
  const root = path.join(runDir, 'checkpoints');
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => ({ match: /^step-(\d+)$/.exec(name), dir: path.join(root, name) }))
    .filter((c) => c.match !== null && existsSync(path.join(c.dir, 'state.json')))
    .map((c) => ({ step: Number(c.match![1]), dir: c.dir }))
    .sort((a, b) => a.step - b.step);
}

/** Every file under `dir` as a `/`-separated relative path, sorted by code unit. */
async function filesUnder(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await filesUnder(path.join(dir, entry.name), relative)));
    else if (entry.isFile()) out.push(relative);
  }
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Size and digest of a directory artifact. The digest is the sha256 of, for each regular file in
 * sorted relative-path order, `<relative path>\0<byte length>\0<contents>`: names and boundaries
 * count, so renaming or splitting a file changes it. `bytes` is the sum of the file sizes.
 */
export async function digestDirectory(dir: string): Promise<{ bytes: number; sha256: string; files: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  const files = await filesUnder(dir);
  for (const relative of files) {
    const absolute = path.join(dir, ...relative.split('/'));
    const size = (await stat(absolute)).size;
    hash.update(`${relative}\0${size}\0`);
    for await (const chunk of createReadStream(absolute)) hash.update(chunk as Buffer);
    bytes += size;
  }
  return { bytes, sha256: hash.digest('hex'), files: files.length };
}

/** `target` as a storage key of `root` (relative, `/`-separated), or null when it lies outside. */
export function storageKeyOf(root: string, target: string): string | null {
  const relative = path.relative(path.resolve(root), path.resolve(target));
  if (relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) return null;
  return relative.split(path.sep).join('/');
}
