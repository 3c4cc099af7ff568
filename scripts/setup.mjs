#!/usr/bin/env node
// Makes a fresh clone ready: npm packages (npm ci), and with --build the native addon (OpenBLAS
// and cmake installed with apt-get when missing) and every TypeScript package; with --browser,
// Debian's chromium for the console's browser tests. Used by
// `npm run demo` and `npm test`; safe to run again (each step is incremental). With --services,
// PostgreSQL and Redis too (scripts/services.mjs, docs/services.md): used when they answer, started
// or installed when not, and the database of DATABASE_URL (default `expertune`) created and migrated.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ensureServices } from './services.mjs';
import { ensureBrowser } from './system-deps.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: '1', NEXT_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1' };
const run = (cmd, args) => execFileSync(cmd, args, { stdio: 'inherit', cwd: root, env });

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 19)) {
  console.error(`Expertune needs Node.js 20.19 or newer (this is ${process.versions.node}).`);
  process.exit(1);
}

const lock = join(root, 'package-lock.json');
const installed = join(root, 'node_modules', '.package-lock.json');
if (!existsSync(installed) || statSync(lock).mtimeMs > statSync(installed).mtimeMs) {
  console.log('Installing npm packages (npm ci)…');
  run('npm', ['ci', '--no-audit', '--no-fund']);
}

const services = process.argv.includes('--services');
if (services) {
  try {
    await ensureServices({ postgres: true, redis: true });
  } catch (error) {
    console.error(`setup: ${error.message}`);
    process.exit(1);
  }
}

if (process.argv.includes('--browser')) {
  try {
    ensureBrowser();
  } catch (error) {
    console.error(`setup: ${error.message}`);
    process.exit(1);
  }
}

if (process.argv.includes('--build')) {
  run('node', [join(root, 'scripts', 'build-native.mjs')]);
  run(join(root, 'node_modules', '.bin', 'turbo'), [
    'run',
    'build',
    '--output-logs=errors-only',
    '--filter=./libs/*',
    '--filter=./apps/*',
  ]);
}

if (services) {
  // The database of DATABASE_URL (default `expertune`), created when missing, every migration applied.
  if (existsSync(join(root, 'libs', 'db', 'dist', 'libs', 'db', 'src', 'migrate.js'))) {
    const migrate = spawnSync('node', [join(root, 'libs', 'db', 'bin', 'migrate.js')], {
      stdio: 'inherit',
      cwd: root,
      env,
    });
    if (migrate.status !== 0) process.exit(1);
  } else {
    console.log(
      'setup: libs/db is not built, so the database was not migrated: run `npm run migrate` (or add --build).',
    );
  }
}
