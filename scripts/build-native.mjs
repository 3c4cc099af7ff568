#!/usr/bin/env node
// Builds the native core: the Node addon with cmake-js (default), or the standalone CMake
// build and its CTest suite (--ctest). Installs OpenBLAS and cmake with apt-get when missing.
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ensureNativeToolchain } from './system-deps.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = join(root, 'native');
const jobs = String(Math.max(1, cpus().length));
const run = (cmd, args, cwd = root) => execFileSync(cmd, args, { stdio: 'inherit', cwd });

try {
  ensureNativeToolchain();
} catch (error) {
  console.error(error.message);
  process.exit(1);
}

if (process.argv.includes('--ctest')) {
  const buildDir = join(nativeDir, 'build-ctest');
  run('cmake', ['-S', nativeDir, '-B', buildDir, '-DCMAKE_BUILD_TYPE=Release']);
  run('cmake', ['--build', buildDir, '-j', jobs]);
  run('ctest', ['--test-dir', buildDir, '--output-on-failure']);
} else {
  const cmakeJs = join(root, 'node_modules', '.bin', 'cmake-js');
  run(cmakeJs, [
    'build',
    '--directory',
    nativeDir,
    '--out',
    join(nativeDir, 'build'),
    '--parallel',
    jobs,
    '--log-level',
    'warn',
  ]);
}
