/**
 * Choosing and switching the tfjs backend. tfjs has one global current backend; each model
 * remembers its own and makes it current before running ops (switching to an initialised
 * backend is synchronous, see `useBackend`).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';

/**
 * - `cpu`: tfjs's pure-JS float32 kernels (the oracle; default).
 * - `wasm`: `@tensorflow/tfjs-backend-wasm` (XNNPACK, single-threaded in Node).
 * - `tensorflow`: `@tensorflow/tfjs-node-gpu` (libtensorflow) when its native addon is installed.
 */
export type TfjsBackendName = 'cpu' | 'wasm' | 'tensorflow';

let wasmReady: Promise<void> | null = null;

async function registerWasm(): Promise<void> {
  // Importing the package registers the backend; in Node it then reads its .wasm binaries
  // from the directory given to setWasmPaths (a file-system path works there).
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const require = createRequire(import.meta.url);
  const packageEntry = require.resolve('@tensorflow/tfjs-backend-wasm');
  wasm.setWasmPaths(path.dirname(packageEntry) + path.sep);
}

async function tryRegisterTensorflow(): Promise<string | null> {
  // Optional dependency whose native addon is often absent: a variable name keeps bundlers and
  // the type checker from requiring it at build time.
  const moduleName = '@tensorflow/tfjs-node-gpu';
  try {
    await import(moduleName);
    return null;
  } catch (error) {
    return error instanceof Error ? error.message.split('\n')[0]! : String(error);
  }
}

/**
 * Initialises the requested backend and returns the one actually in use. `tensorflow` falls back
 * to `cpu`, with a console warning, when `@tensorflow/tfjs-node-gpu` cannot be loaded.
 */
export async function initBackend(requested: TfjsBackendName): Promise<TfjsBackendName> {
  let name: TfjsBackendName = requested;
  if (requested === 'wasm') {
    wasmReady ??= registerWasm();
    await wasmReady;
  } else if (requested === 'tensorflow' && tf.findBackendFactory('tensorflow') === null) {
    const failure = await tryRegisterTensorflow();
    if (failure !== null || tf.findBackendFactory('tensorflow') === null) {
      console.warn(
        `[expertune] tfjs backend 'tensorflow' unavailable (@tensorflow/tfjs-node-gpu: ${failure ?? 'no backend registered'}); using 'cpu'.`,
      );
      name = 'cpu';
    }
  }
  const ok = await tf.setBackend(name);
  if (!ok) throw new Error(`tfjs backend '${name}' failed to initialise`);
  await tf.ready();
  return name;
}

/** Makes `name` (already initialised by `initBackend`) the current tfjs backend. */
export function useBackend(name: TfjsBackendName): void {
  if (tf.getBackend() === name) return;
  // For an initialised backend, setBackend completes synchronously (it only awaits first-time
  // initialisation); the check below guards that assumption.
  void tf.setBackend(name);
  if (tf.getBackend() !== name) throw new Error(`could not switch the tfjs backend to '${name}'`);
}
