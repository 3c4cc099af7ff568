// System packages the native build needs, installed with apt-get when missing (as root), or a
// message saying how to install them.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const OPENBLAS_HEADERS = [
  '/usr/include/x86_64-linux-gnu/cblas.h',
  '/usr/include/aarch64-linux-gnu/cblas.h',
  '/usr/include/openblas/cblas.h',
  '/usr/include/cblas.h',
];

function hasCommand(name) {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

function hasOpenBlas() {
  if (!OPENBLAS_HEADERS.some((file) => existsSync(file))) return false;
  const libs = spawnSync('sh', ['-c', 'ldconfig -p | grep -q libopenblas'], { stdio: 'ignore' });
  return libs.status === 0;
}

/** Makes sure cmake, a C++ compiler and OpenBLAS are present; throws with instructions otherwise. */
export function ensureNativeToolchain({ log = console.log } = {}) {
  const missing = [];
  if (!hasCommand('cmake')) missing.push('cmake');
  if (!hasCommand('g++') && !hasCommand('c++')) missing.push('g++');
  if (!hasOpenBlas()) missing.push('libopenblas-dev');
  if (missing.length === 0) return;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || !hasCommand('apt-get')) {
    throw new Error(
      `The native build needs ${missing.join(', ')}. Install them, e.g. on Debian/Ubuntu:\n` +
        `  sudo apt-get update && sudo apt-get install -y ${missing.join(' ')}`,
    );
  }
  log(`Installing ${missing.join(', ')} with apt-get (needed by the native build)…`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'inherit', env });
}
