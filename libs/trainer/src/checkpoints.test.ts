import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { parseTrainConfig } from '@expertune/contracts';
import { afterAll, describe, expect, it } from 'vitest';

import {
  configHash,
  differingKeys,
  listCheckpoints,
  pruneCheckpoints,
  resolveCheckpoint,
  verifyCheckpoint,
} from './checkpoints.js';
import { writeManifest } from './file-manifest.js';

const root = mkdtempSync(join(tmpdir(), 'expertune-checkpoints-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function fakeCheckpoint(runDir: string, step: number, evalLoss: number | null): void {
  const dir = join(runDir, 'checkpoints', `step-${step}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'state.json'), JSON.stringify({ step, eval_loss: evalLoss }));
  writeFileSync(join(dir, 'trainable.safetensors'), Buffer.alloc(4096, step));
  writeManifest(dir, ['state.json', 'trainable.safetensors']);
}

describe('checkpoints', () => {
  it('keeps the last K and the best by eval loss; a run directory resolves to its latest', () => {
    const run = join(root, 'run');
    const losses = [2.0, 1.2, 1.5, 1.7, 1.9];
    losses.forEach((loss, i) => fakeCheckpoint(run, (i + 1) * 10, loss));
    mkdirSync(join(run, 'checkpoints', '.step-60.tmp-1')); // an interrupted write is never a checkpoint
    pruneCheckpoints(run, 2);
    expect(listCheckpoints(run).map((c) => c.step)).toEqual([20, 40, 50]);
    expect(resolveCheckpoint(run)).toBe(join(run, 'checkpoints', 'step-50'));
    expect(readdirSync(join(run, 'checkpoints'))).toContain('.step-60.tmp-1');
    pruneCheckpoints(run, 0);
    expect(existsSync(join(run, 'checkpoints', 'step-20'))).toBe(true);
    expect(() => resolveCheckpoint(join(root, 'empty'))).toThrow(/no complete checkpoint/);
  });

  it('resumes from the last whole checkpoint: a torn, damaged or half-written later one is ignored', () => {
    const run = join(root, 'crashed');
    fakeCheckpoint(run, 10, null);
    fakeCheckpoint(run, 20, null);
    // A writer killed mid-write leaves its temporary directory, never a step-N one.
    const torn = join(run, 'checkpoints', '.step-30.tmp-4242');
    mkdirSync(torn);
    writeFileSync(join(torn, 'trainable.safetensors'), Buffer.alloc(100));
    // A step directory without its manifest (copied in by hand, or by an older writer) is not whole either.
    mkdirSync(join(run, 'checkpoints', 'step-40'));
    writeFileSync(join(run, 'checkpoints', 'step-40', 'state.json'), '{"step":40}');
    // The latest whole one, damaged afterwards: one byte of its tensors flipped.
    const damaged = join(run, 'checkpoints', 'step-20', 'trainable.safetensors');
    const bytes = readFileSync(damaged);
    bytes[100]! ^= 1;
    writeFileSync(damaged, bytes);

    const skipped: string[] = [];
    expect(resolveCheckpoint(run, (dir, problem) => skipped.push(`${basename(dir)}: ${problem}`))).toBe(
      join(run, 'checkpoints', 'step-10'),
    );
    expect(skipped).toEqual(['step-20: trainable.safetensors does not match its sha256 in manifest.json']);
    expect(() => verifyCheckpoint(join(run, 'checkpoints', 'step-20'))).toThrow(/not a complete checkpoint/);
    expect(() => resolveCheckpoint(join(run, 'checkpoints', 'step-40'))).toThrow(/no manifest\.json/);
    rmSync(join(run, 'checkpoints', 'step-10', 'state.json'));
    expect(() => resolveCheckpoint(run)).toThrow(/no complete checkpoint/);
  });

  it('names the settings that differ, leaving out those that do not change the numbers', () => {
    const base = { model: '/m', data: { train: '/t.jsonl' }, output_dir: '/a' };
    const a = parseTrainConfig(base, 'a.yaml');
    const b = parseTrainConfig(
      { ...base, output_dir: '/b', threads: 3, training: { checkpoint_every: 5, log_every: 2 } },
      'b.yaml',
    );
    expect(differingKeys(a, b)).toEqual([]);
    expect(configHash(a)).toBe(configHash(b));
    const c = parseTrainConfig({ ...base, seed: 9, optimizer: { lr: 0.5 } }, 'c.yaml');
    expect(differingKeys(a, c)).toEqual(['optimizer.lr', 'seed']);
    expect(configHash(a)).not.toBe(configHash(c));
  });
});
