import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { parseTrainConfig } from '@expertune/contracts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { initRandomModel } from './init-model.js';
import { runTraining, type TrainEvent } from './train.js';

const dir = mkdtempSync(join(tmpdir(), 'expertune-events-'));
const baseDir = join(dir, 'base');
const data = join(dir, 'train.jsonl');
beforeAll(() => {
  initRandomModel(baseDir, 'tiny', 2);
  const rows = ['one fish', 'two fish', 'red fish', 'blue fish', 'old fish', 'new fish'];
  writeFileSync(data, rows.map((text) => JSON.stringify({ text })).join('\n') + '\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = (name: string, over: Record<string, unknown> = {}) =>
  parseTrainConfig({
    model: baseDir,
    method: 'mola',
    mola: { rank: 2, num_experts: 2, top_k: 1 },
    data: { train: data, max_seq_len: 32 },
    training: { max_steps: 6, micro_batch_size: 2, checkpoint_every: 2, keep_checkpoints: 0 },
    output_dir: join(dir, name),
    ...over,
  });

describe('training callbacks', () => {
  it('streams routing after every step and events for each checkpoint and the finish, matching the files', async () => {
    const events: TrainEvent[] = [];
    const routing: { step: number }[] = [];
    const result = await runTraining(config('run'), {
      onEvent: (e) => events.push(e),
      onRouting: (r) => routing.push(r),
    });
    expect(events.map((e) => `${e.type}@${e.step}`)).toEqual([
      'checkpoint@2',
      'checkpoint@4',
      'checkpoint@6',
      'finished@6',
    ]);
    for (const e of events) if (e.type === 'checkpoint') expect(existsSync(join(e.path, 'state.json'))).toBe(true);
    const finished = events.at(-1) as Extract<TrainEvent, { type: 'finished' }>;
    const record = JSON.parse(readFileSync(join(result.outputDir, 'run.json'), 'utf8'));
    expect(finished.metrics).toEqual(record.final_metrics);
    expect(finished.exportDir).toBe(result.exportDir);
    expect(record.throughput.trainable_parameters).toBeGreaterThan(0);
    // Tokens processed: six steps of two padded rows each.
    const steps = readFileSync(join(result.outputDir, 'metrics.jsonl'), 'utf8').trim().split('\n');
    expect(steps).toHaveLength(6);
    expect(record.throughput.tokens % 2).toBe(0);
    expect(record.throughput.tokens_per_second).toBeCloseTo(record.throughput.tokens / record.throughput.seconds, 6);
    const lines = readFileSync(join(result.outputDir, 'routing.jsonl'), 'utf8').trim().split('\n');
    expect(routing).toEqual(lines.map((line) => JSON.parse(line)));
    expect(routing.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('reports a stop with its checkpoint, and no finish', async () => {
    const events: TrainEvent[] = [];
    const abort = new AbortController();
    await runTraining(config('stopped', { training: { max_steps: 6, micro_batch_size: 2 } }), {
      signal: abort.signal,
      onStep: (r) => r.step === 3 && abort.abort(),
      onEvent: (e) => events.push(e),
    });
    expect(events.map((e) => `${e.type}@${e.step}`)).toEqual(['checkpoint@3', 'stopped@3']);
  });
});
