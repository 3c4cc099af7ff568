/** Shared helpers of the integration tests: temporary directories and the built CLI. */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { ExpertuneClient, Job } from '@expertune/contracts';
import { createTestDatabase, deleteRedisKeys } from '@expertune/db/testing';
import { Redis } from 'ioredis';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const cliPath = join(repoRoot, 'libs', 'trainer', 'bin', 'expertune.js');

export function temporaryDirectory(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `expertune-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `expertune` CLI (npm test builds it first). */
export function runCli(args: string[], cwd = repoRoot): CliResult {
  if (!existsSync(join(repoRoot, 'libs', 'trainer', 'dist', 'cli.js')))
    throw new Error('the CLI is not built: run `npm run build` (npm test does it)');
  const result = spawnSync(process.execPath, [cliPath, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Runs the CLI and fails with its output unless it exits with status 0. */
export function runCliOk(args: string[], cwd = repoRoot): CliResult {
  const result = runCli(args, cwd);
  if (result.status !== 0)
    throw new Error(`expertune ${args[0]} failed (${result.status}):\n${result.stderr}\n${result.stdout}`);
  return result;
}

export function writeJsonl(path: string, rows: unknown[]): void {
  writeFileSync(path, rows.map((row) => JSON.stringify(row)).join('\n') + '\n');
}

// ------------------------------------------------------------------------------------------------
// The job API end to end: the real API and worker processes on the real Postgres and Redis.

export const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
export const apiMain = join(repoRoot, 'apps', 'api', 'dist', 'main.js');
export const workerBin = join(repoRoot, 'apps', 'worker', 'bin', 'worker.js');

function newestMtime(dir: string, keep: (name: string) => boolean): number {
  if (!existsSync(dir)) return 0;
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !keep(entry.name)) continue;
    newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/**
 * Compiles apps/<app> with its tsc build when dist/ is missing or older than src/ (npm test builds
 * only the libs). The apps run from dist/: tsx/esbuild drop the decorator metadata Nest needs.
 */
export function ensureAppBuilt(app: 'api' | 'worker'): void {
  const dir = join(repoRoot, 'apps', app);
  const sources = newestMtime(join(dir, 'src'), (name) => name.endsWith('.ts') && !name.endsWith('.test.ts'));
  const built = existsSync(join(dir, 'dist', 'main.js'))
    ? newestMtime(join(dir, 'dist'), (name) => name.endsWith('.js'))
    : 0;
  if (built >= sources) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.build.json')], { stdio: 'pipe' });
}

export interface ThrowawayServices {
  /** DATABASE_URL of a fresh, migrated database. */
  databaseUrl: string;
  /** A BullMQ key prefix nobody else uses. */
  queuePrefix: string;
  /** Drops the database (WITH FORCE) and deletes the prefix's Redis keys. */
  drop(): Promise<void>;
}

/** A throwaway database (created through the server's `postgres` database, migrated) and queue prefix. */
export async function createThrowawayServices(tag: string): Promise<ThrowawayServices> {
  const database = await createTestDatabase({ prefix: `expertune_${tag}` });
  const queuePrefix = `expertune-${tag}-${database.suffix}`;
  return {
    databaseUrl: database.url,
    queuePrefix,
    async drop() {
      await database.drop();
      await deleteRedisKeys(new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 }), `${queuePrefix}:*`);
    },
  };
}

/** A TCP port free right now on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface ServiceProcess {
  name: string;
  child: ChildProcess;
  /** The last 64 KiB of stdout and stderr together. */
  output(): string;
  /** Resolves once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  /** `signal` (SIGTERM by default), then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

/** Spawns `node <script> [...args]` with `env` (in the repository root unless `cwd`), keeping its output for failure messages. */
export function startNodeProcess(
  name: string,
  script: string,
  env: NodeJS.ProcessEnv,
  { args = [], cwd = repoRoot }: { args?: string[]; cwd?: string } = {},
): ServiceProcess {
  const child = spawn(process.execPath, [script, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-65_536);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    name,
    child,
    output: () => output,
    exited,
    running,
    async stop(signal = 'SIGTERM', graceMs = 5_000) {
      if (!running()) return;
      child.kill(signal);
      const timer = setTimeout(() => running() && child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` every `everyMs` until it returns something truthy; fails after `timeoutMs`. */
export async function waitUntil<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  timeoutMs = 60_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Waits until `GET <baseUrl>/health` answers 200 (Postgres and Redis reachable); fails early if the process died. */
export async function waitForHealth(baseUrl: string, service: ServiceProcess, timeoutMs = 60_000): Promise<void> {
  await waitUntil(
    `${service.name} at ${baseUrl}/health`,
    async () => {
      if (!service.running()) throw new Error(`${service.name} exited before it was ready:\n${service.output()}`);
      try {
        const response = await fetch(`${baseUrl}/health`);
        await response.body?.cancel();
        return response.status === 200;
      } catch {
        return false; // not listening yet
      }
    },
    timeoutMs,
  );
}

/** Waits until the process printed a line matching `pattern` (e.g. the worker's "on queue"). */
export async function waitForOutput(service: ServiceProcess, pattern: RegExp, timeoutMs = 30_000): Promise<void> {
  await waitUntil(
    `${service.name} to print ${pattern}`,
    () => {
      if (pattern.test(service.output())) return true;
      if (!service.running()) throw new Error(`${service.name} exited:\n${service.output()}`);
      return false;
    },
    timeoutMs,
  );
}

export interface SseMessage {
  id: string | null;
  event: string | null;
  data: string;
}

/**
 * Reads a text/event-stream body message by message (`id:`, `event:`, `data:` lines, a blank line
 * ends a message; comments skipped; the API ends lines with \n). `onMessage` returns true to stop reading (the reader is then
 * cancelled). Resolves with 'stopped', or 'ended' when the server closed the stream; a broken
 * connection rejects.
 */
export async function readSse(
  body: ReadableStream<Uint8Array>,
  onMessage: (message: SseMessage) => boolean | void,
): Promise<'stopped' | 'ended'> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let current: SseMessage = { id: null, event: null, data: '' };
  let hasData = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return 'ended';
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line === '') {
          if (hasData || current.id !== null) {
            if (onMessage(current)) return 'stopped';
          }
          current = { id: null, event: null, data: '' };
          hasData = false;
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const fieldValue = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'id') current.id = fieldValue;
        else if (field === 'event') current.event = fieldValue;
        else if (field === 'data') {
          current.data = hasData ? `${current.data}\n${fieldValue}` : fieldValue;
          hasData = true;
        }
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/**
 * Polls a job through the API until `test` accepts it; a timeout fails with `logs()` (the processes'
 * output) appended.
 */
export function jobWaiter(client: ExpertuneClient, logs: () => string, everyMs = 150) {
  return (id: string, what: string, test: (job: Job) => boolean, timeoutMs = 60_000): Promise<Job> =>
    waitUntil(
      `job ${id}: ${what}`,
      async () => {
        const job = await client.jobs.get(id);
        return test(job) && job;
      },
      timeoutMs,
      everyMs,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n${logs()}`);
    });
}

/** The worker's artifact digest (apps/worker README): each file by relative path, `path NUL bytes NUL contents`. */
export function digestDirectory(root: string): string {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const full = join(d, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) files.push(relative(root, full).split(sep).join('/'));
    }
  };
  walk(root);
  files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const hash = createHash('sha256');
  for (const file of files) {
    const contents = readFileSync(join(root, file));
    hash.update(`${file}\0${contents.length}\0`);
    hash.update(contents);
  }
  return hash.digest('hex');
}
