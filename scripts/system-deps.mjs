// System packages the native build and the browser tests need, installed with apt-get when missing
// (as root), or a message saying how to install them.
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
  installWithApt(missing, 'the native build', log);
}

/** The browser of the console's end-to-end tests (tests/console-e2e.test.ts): Debian's chromium. */
export const CHROMIUM = process.env.EXPERTUNE_CHROMIUM || '/usr/bin/chromium';

/** Makes sure Chromium is present for the browser tests; throws with instructions otherwise. */
export function ensureBrowser({ log = console.log } = {}) {
  if (existsSync(CHROMIUM)) return;
  installWithApt(['chromium'], "the console's browser tests", log);
}

/** Installs Debian packages as root, or throws a message saying how to install them. */
function installWithApt(missing, neededBy, log) {
  if (missing.length === 0) return;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || !hasCommand('apt-get')) {
    throw new Error(
      `${neededBy} needs ${missing.join(', ')}. Install them, e.g. on Debian/Ubuntu:\n` +
        `  sudo apt-get update && sudo apt-get install -y ${missing.join(' ')}`,
    );
  }
  log(`Installing ${missing.join(', ')} with apt-get (needed by ${neededBy})…`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'inherit', env });
}
