/**
 * Checkpoints and resumption (issue 4, item 3): a run killed with SIGKILL after a checkpoint and
 * resumed with `expertune train --resume` gives the uninterrupted run's loss at every later step,
 * exactly (CPU, fixed seed, same thread count), for a mixture with global balance and dropout and
 * for FlyLoRA, whose bias and frozen A live in the checkpoint.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { initRandomModel } from '@expertune/trainer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { repoRoot, runCli, runCliOk, temporaryDirectory, writeJsonl } from './helpers.js';

const work = temporaryDirectory('resume');
const modelDir = join(work.path, 'tiny');
const STEPS = 30;

beforeAll(() => {
  initRandomModel(modelDir, 'tiny', 3);
  writeJsonl(
    join(work.path, 'train.jsonl'),
    Array.from({ length: 10 }, (_, i) => ({ text: `Row ${i}: the tide turns ${i % 3} times before the ${i}th bell.` })),
  );
});
afterAll(() => work.remove());

const METHODS = {
  mola: 'mola: { rank: 4, alpha: 8, dropout: 0.1, num_experts: 4, top_k: 2, balance: { coef: 0.01, scope: global } }',
  flylora: 'flylora: { rank: 8, alpha: 16, dropout: 0.1, top_k: 2, select: abs, bias_rate: 0.01 }',
};

function writeConfig(name: string, method: keyof typeof METHODS, runDir: string, checkpoints = ''): string {
  const path = join(work.path, `${name}.yaml`);
  writeFileSync(
    path,
    [
      `model: ${modelDir}`,
      `method: ${method}`,
      METHODS[method],
      'data: { train: ./train.jsonl, max_seq_len: 32 }',
      // 10 rows in micro-batches of 2, two per update: epochs end mid-step, so the data position matters.
      `training: { max_steps: ${STEPS}, micro_batch_size: 2, grad_accumulation: 2${checkpoints} }`,
      'optimizer: { lr: 0.01, weight_decay: 0.01 }',
      'schedule: { kind: cosine, warmup_steps: 3 }',
      'threads: 2',
      `output_dir: ${runDir}`,
    ].join('\n'),
  );
  return path;
}

function losses(runDir: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n')) {
    const row = JSON.parse(line) as { step: number; loss: number };
    expect(out.has(row.step)).toBe(false);
    out.set(row.step, row.loss);
  }
  return out;
}

function checkpointSteps(runDir: string): number[] {
  const root = join(runDir, 'checkpoints');
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => /^step-(\d+)$/.exec(name))
    .filter((m) => m !== null && existsSync(join(root, m[0], 'state.json')))
    .map((m) => Number(m![1]))
    .sort((a, b) => a - b);
}

/** Starts `expertune train`, kills it (SIGKILL) once a checkpoint of step ≥ `atLeast` exists. */
function trainAndKill(config: string, runDir: string, atLeast: number): Promise<NodeJS.Signals | number | null> {
  const child = spawn(
    process.execPath,
    [join(repoRoot, 'libs', 'trainer', 'bin', 'expertune.js'), 'train', '--config', config],
    { cwd: repoRoot, stdio: 'ignore', env: { ...process.env, FORCE_COLOR: '0' } },
  );
  return new Promise((done) => {
    let killed = false;
    const poll = setInterval(() => {
      const steps = checkpointSteps(runDir);
      if (!killed && steps.length > 0 && steps[steps.length - 1]! >= atLeast) {
        killed = true;
        child.kill('SIGKILL');
      }
    }, 2);
    child.on('exit', (code, signal) => {
      clearInterval(poll);
      done(signal ?? code);
    });
  });
}

describe.each(Object.keys(METHODS) as (keyof typeof METHODS)[])('resume (%s)', (method) => {
  it('a run killed after a checkpoint and resumed matches the uninterrupted run at every later step', async () => {
    const whole = join(work.path, `${method}-whole`);
    runCliOk(['train', '--config', writeConfig(`${method}-whole`, method, whole)]);
    const reference = losses(whole);
    expect(reference.size).toBe(STEPS);

    const runDir = join(work.path, `${method}-killed`);
    const config = writeConfig(`${method}-killed`, method, runDir, ', checkpoint_every: 1, keep_checkpoints: 2');
    const outcome = await trainAndKill(config, runDir, 4);
    expect(outcome).toBe('SIGKILL');
    expect(existsSync(join(runDir, 'run.json'))).toBe(false);
    const k = checkpointSteps(runDir).at(-1)!;
    expect(k).toBeGreaterThanOrEqual(4);
    expect(k).toBeLessThan(STEPS);
    // keep_checkpoints: 2 — at most the last two are left (the kill may interrupt a prune).
    expect(checkpointSteps(runDir).length).toBeLessThanOrEqual(3);

    const resumed = runCliOk(['train', '--config', config, '--resume', runDir]);
    expect(resumed.stdout).toContain(`resumed after step ${k}`);
    const after = losses(runDir);
    expect([...after.keys()]).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    for (let step = 1; step <= STEPS; step++) expect(after.get(step), `step ${step}`).toBe(reference.get(step));
    expect(checkpointSteps(runDir)).toEqual([STEPS - 1, STEPS]);
    const run = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8')) as { steps_completed: number };
    expect(run.steps_completed).toBe(STEPS);

    // An explicit earlier checkpoint resumes there too; a changed setting is refused by name.
    const refused = runCli([
      'train',
      '--config',
      config,
      '--set',
      'optimizer.lr=0.02',
      '--set',
      'training.grad_accumulation=1',
      '--resume',
      join(runDir, 'checkpoints', `step-${STEPS - 1}`),
    ]);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(
      /config differs from the checkpoint's in optimizer\.lr, training\.grad_accumulation/,
    );
    runCliOk(['train', '--config', config, '--resume', join(runDir, 'checkpoints', `step-${STEPS - 1}`)]);
    expect(losses(runDir).get(STEPS)).toBe(reference.get(STEPS));
  });
});

describe('cooperative stop', () => {
  it('Ctrl-C finishes the step, checkpoints it with checkpointing off, and the run resumes exactly', async () => {
    const whole = join(work.path, 'stop-whole');
    runCliOk(['train', '--config', writeConfig('stop-whole', 'mola', whole)]);
    const reference = losses(whole);

    const runDir = join(work.path, 'stop-interrupted');
    const config = writeConfig('stop-interrupted', 'mola', runDir); // checkpoint_every: 0 (off)
    const child = spawn(
      process.execPath,
      [join(repoRoot, 'libs', 'trainer', 'bin', 'expertune.js'), 'train', '--config', config],
      { cwd: repoRoot, stdio: 'ignore', env: { ...process.env, FORCE_COLOR: '0' } },
    );
    const metricsPath = join(runDir, 'metrics.jsonl');
    const code = await new Promise<number | null>((done) => {
      let interrupted = false;
      const poll = setInterval(() => {
        const lines = existsSync(metricsPath) ? readFileSync(metricsPath, 'utf8').trim().split('\n').length : 0;
        if (!interrupted && lines >= 3) {
          interrupted = true;
          child.kill('SIGINT');
        }
      }, 2);
      child.on('exit', (exitCode) => {
        clearInterval(poll);
        done(exitCode);
      });
    });
    expect(code).toBe(0);
    const k = losses(runDir).size;
    expect(k).toBeGreaterThanOrEqual(3);
    expect(k).toBeLessThan(STEPS);
    expect(checkpointSteps(runDir)).toEqual([k]);

    runCliOk(['train', '--config', config, '--resume', runDir]);
    const after = losses(runDir);
    for (let step = 1; step <= STEPS; step++) expect(after.get(step), `step ${step}`).toBe(reference.get(step));
  });
});
