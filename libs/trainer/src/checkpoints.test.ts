import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { parseTrainConfig } from '@expertune/contracts';
import { afterAll, describe, expect, it } from 'vitest';

import { configHash, differingKeys, listCheckpoints, pruneCheckpoints, resolveCheckpoint } from './checkpoints.js';

const root = mkdtempSync(join(tmpdir(), 'expertune-checkpoints-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function fakeCheckpoint(runDir: string, step: number, evalLoss: number | null): void {
  const dir = join(runDir, 'checkpoints', `step-${step}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'state.json'), JSON.stringify({ step, eval_loss: evalLoss }));
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
    expect(() => resolveCheckpoint(join(root, 'empty'))).toThrow(/no checkpoint/);
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
