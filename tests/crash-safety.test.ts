/**
 * A checkpoint writer killed in the middle of a write (SIGKILL while its tensors are on disk and
 * its optimizer state is not) leaves nothing a resume would take: the run resolves to the previous
 * whole checkpoint, and a whole one damaged afterwards is skipped by its sha256 manifest.
 */
import { fork } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { resolveCheckpoint } from '@expertune/trainer';
import { afterAll, describe, expect, it } from 'vitest';

import { repoRoot, temporaryDirectory } from './helpers.js';

const dir = temporaryDirectory('crash-safety');
afterAll(() => dir.remove());

// The real writeCheckpoint on a stand-in model of 4 MiB of tensors; with `hang`, the optimizer
// state is never handed over: the writer reports that it is mid-write and waits to be killed.
const WRITER = `
import { writeCheckpoint } from ${JSON.stringify(join(repoRoot, 'libs/trainer/dist/checkpoints.js'))};
const [runDir, stepText, mode] = process.argv.slice(2);
const step = Number(stepText);
const values = new Float32Array(1 << 20).fill(step);
const model = {
  adapter: { weights: () => new Map([['layers.0.lora_A', values]]) },
  backend: {
    tensorShape: () => [values.length],
    optimizerState: () => {
      if (mode === 'hang') {
        process.send('mid-write');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
      }
      return { steps: step, m: values, v: values };
    },
  },
};
const state = { step, epoch: 0, position: step, seed: 0, engine: 'native', config_hash: 'x', config: {}, eval_loss: null };
writeCheckpoint(runDir, model, state, 3);
`;
const writer = join(dir.path, 'writer.mjs');
writeFileSync(writer, WRITER);

function write(runDir: string, step: number, mode: 'whole' | 'hang'): Promise<NodeJS.Signals | number | null> {
  const child = fork(writer, [runDir, String(step), mode], { stdio: 'ignore', execArgv: [] });
  child.on('message', (message) => message === 'mid-write' && child.kill('SIGKILL'));
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
}

describe('checkpoints under a killed writer', () => {
  it('ignores a checkpoint whose writer was killed mid-write and resumes from the previous whole one', async () => {
    const run = join(dir.path, 'run');
    expect(await write(run, 10, 'whole')).toBe(0);
    expect(await write(run, 20, 'whole')).toBe(0);
    expect(await write(run, 30, 'hang')).toBe('SIGKILL');

    const entries = readdirSync(join(run, 'checkpoints'));
    const torn = entries.find((name) => name.startsWith('.step-30.tmp-'));
    expect(torn, entries.join(', ')).toBeDefined();
    expect(existsSync(join(run, 'checkpoints', torn!, 'trainable.safetensors'))).toBe(true); // killed mid-write
    expect(entries).not.toContain('step-30');
    expect(resolveCheckpoint(run)).toBe(join(run, 'checkpoints', 'step-20'));

    // step-20 damaged on disk afterwards (a torn copy): its manifest no longer matches, step-10 is taken.
    const tensors = join(run, 'checkpoints', 'step-20', 'trainable.safetensors');
    writeFileSync(tensors, readFileSync(tensors).subarray(0, 1000));
    const skipped: string[] = [];
    expect(resolveCheckpoint(run, (skippedDir) => skipped.push(skippedDir))).toBe(join(run, 'checkpoints', 'step-10'));
    expect(skipped).toEqual([join(run, 'checkpoints', 'step-20')]);

    // The run goes on: the next whole checkpoint is the one a resume takes.
    expect(await write(run, 30, 'whole')).toBe(0);
    expect(resolveCheckpoint(run)).toBe(join(run, 'checkpoints', 'step-30'));
  }, 60_000);
});
