import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { parseTrainConfig } from '@expertune/contracts';
import { afterAll, describe, expect, it } from 'vitest';

import { defaultCheckpointEvery, digestDirectory, listRunCheckpoints, trainConfigInput } from '../src/job-files.js';
import type { RunnerInput } from '../src/protocol.js';
import { cancelledJobId } from '../src/worker.js';

const dir = mkdtempSync(path.join(tmpdir(), 'expertune-job-files-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const input = (config: Record<string, unknown>): RunnerInput => ({
  jobId: 'j',
  method: 'mola',
  seed: 9,
  config,
  modelDir: '/models/tiny',
  trainFile: '/data/datasets/a.jsonl',
  validationFile: null,
  outputDir: '/data/jobs/j',
  resumeFrom: null,
  threads: 1,
});

describe('the training config of a job', () => {
  it("takes paths, method and seed from the job's rows, whatever jobs.config says", () => {
    const config = parseTrainConfig(
      trainConfigInput(
        input({
          model: '/elsewhere',
          method: 'lora',
          seed: 1,
          output_dir: '/tmp/x',
          data: { train: '/etc/passwd', max_seq_len: 64 },
          training: { max_steps: 30, checkpoint_every: 5, log_every: 10 },
          mola: { rank: 2 },
        }),
      ),
    );
    expect(config).toMatchObject({
      model: '/models/tiny',
      method: 'mola',
      seed: 9,
      threads: 1,
      output_dir: '/data/jobs/j',
      data: { train: '/data/datasets/a.jsonl', max_seq_len: 64 },
      training: { max_steps: 30, checkpoint_every: 5, log_every: 1 },
    });
    expect(config.data.validation).toBeUndefined();
  });

  it('accepts the hyperparameter sections alone, and gives a run without checkpoints some', () => {
    const config = parseTrainConfig(
      trainConfigInput({ ...input({ training: { max_steps: 200 } }), validationFile: '/data/v.jsonl' }),
    );
    expect(config.training.checkpoint_every).toBe(20);
    expect(config.data.validation).toBe('/data/v.jsonl');
    expect(defaultCheckpointEvery(undefined)).toBe(50);
    expect(defaultCheckpointEvery(3)).toBe(1);
  });
});

describe('run directories', () => {
  it('lists complete checkpoints only, by step', () => {
    const run = path.join(dir, 'run');
    for (const name of ['step-10', 'step-5', 'step-20', '.step-25.tmp-1', 'other']) {
      mkdirSync(path.join(run, 'checkpoints', name), { recursive: true });
      if (name !== 'step-20') writeFileSync(path.join(run, 'checkpoints', name, 'state.json'), '{}');
    }
    expect(listRunCheckpoints(run).map((c) => c.step)).toEqual([5, 10]);
    expect(listRunCheckpoints(path.join(dir, 'none'))).toEqual([]);
  });

  it('digests a directory by sorted relative path, length and contents', async () => {
    const a = path.join(dir, 'a');
    mkdirSync(path.join(a, 'sub'), { recursive: true });
    writeFileSync(path.join(a, 'x.json'), '{"a":1}');
    writeFileSync(path.join(a, 'sub', 'y.bin'), 'yy');
    const first = await digestDirectory(a);
    expect(first).toMatchObject({ bytes: 9, files: 2 });
    expect(first.sha256).toMatch(/^[0-9a-f]{64}$/);
    // Moving bytes between files, or renaming one, changes the digest.
    writeFileSync(path.join(a, 'x.json'), '{"a":1}y');
    writeFileSync(path.join(a, 'sub', 'y.bin'), 'y');
    expect((await digestDirectory(a)).sha256).not.toBe(first.sha256);
  });
});

describe('cancel messages', () => {
  it('take the job id plain or as JSON', () => {
    const id = '0b1e5a4c-7a38-4a8c-9d64-0d3c6f2f1a11';
    for (const message of [id, ` ${id}\n`, JSON.stringify(id), JSON.stringify({ jobId: id }), `{"job_id":"${id}"}`])
      expect(cancelledJobId(message)).toBe(id);
  });
});
