#!/usr/bin/env node
// Makes a fresh clone ready: npm packages (npm ci), and with --build the native addon (OpenBLAS
// and cmake installed with apt-get when missing) and every TypeScript package. Used by
// `npm run demo` and `npm test`; safe to run again (each step is incremental).
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

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

if (process.argv.includes('--build')) {
  run('node', [join(root, 'scripts', 'build-native.mjs')]);
  run(join(root, 'node_modules', '.bin', 'turbo'), ['run', 'build', '--output-logs=errors-only', '--filter=./libs/*']);
}
