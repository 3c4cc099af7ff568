/** Shared helpers of the integration tests: temporary directories and the built CLI. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
