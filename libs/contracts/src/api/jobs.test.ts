import { describe, expect, it } from 'vitest';

import { parseTrainConfig, TRAIN_METHODS } from '../train-config.js';
import { jobTrainConfig, resolveJobRequest, trainQueueName } from './jobs.js';

const minimal = { model: 'model-1', training_file: 'ds-1' };

describe('job create request', () => {
  it('fills every default, the selected method section included, and echoes the ids', () => {
    const result = resolveJobRequest({ ...minimal, method: 'mola' });
    if (!result.success) throw result.error;
    const job = result.data;
    expect(job.method).toBe('mola');
    expect(job.accelerator).toBe('cpu');
    expect(job.seed).toBe(0);
    expect(job.validation_file).toBeNull();
    expect(job.metadata).toEqual({});
    expect(job.hyperparameters.mola?.top_k).toBe(2);
    expect(job.hyperparameters.lora).toBeUndefined();
    expect(job.hyperparameters.optimizer.lr).toBe(2e-4);
    expect(job.hyperparameters.data).toMatchObject({ max_seq_len: 512, format: 'auto', packing: false });
    expect(job.hyperparameters.training.micro_batch_size).toBe(4);
  });

  it('defaults to lora with the training config defaults', () => {
    const result = resolveJobRequest(minimal);
    if (!result.success) throw result.error;
    expect(result.data.hyperparameters.lora).toMatchObject({ rank: 16, alpha: 32 });
  });

  it('refuses an unknown method and lists the allowed ones', () => {
    const result = resolveJobRequest({ ...minimal, method: 'qlora' });
    expect(result.success).toBe(false);
    if (result.success) return;
    const issue = result.error.issues[0]!;
    expect(issue.path).toEqual(['method']);
    for (const method of TRAIN_METHODS) expect(issue.message).toContain(method);
  });

  it('reports an out-of-range hyperparameter with its key path', () => {
    const result = resolveJobRequest({ ...minimal, hyperparameters: { lora: { dropout: 1.5 } } });
    expect(result.success).toBe(false);
    if (result.success) return;
    expect(result.error.issues[0]!.path).toEqual(['hyperparameters', 'lora', 'dropout']);
  });

  it("refuses another method's section and file paths inside data", () => {
    const wrongSection = resolveJobRequest({ ...minimal, method: 'lora', hyperparameters: { mola: {} } });
    expect(wrongSection.success).toBe(false);
    const withPath = resolveJobRequest({ ...minimal, hyperparameters: { data: { train: '/etc/passwd' } } });
    expect(withPath.success).toBe(false);
  });

  it('becomes a training config the trainer accepts, with the same values', () => {
    const result = resolveJobRequest({
      ...minimal,
      method: 'dynmole',
      seed: 7,
      hyperparameters: { training: { max_steps: 3 } },
    });
    if (!result.success) throw result.error;
    const config = parseTrainConfig(
      jobTrainConfig(result.data, { modelDir: '/m', trainFile: '/d.jsonl', validationFile: null, outputDir: '/out' }),
    );
    expect(config.method).toBe('dynmole');
    expect(config.seed).toBe(7);
    expect(config.training.max_steps).toBe(3);
    expect(config.dynmole).toEqual(result.data.hyperparameters.dynmole);
    expect(config.data.train).toBe('/d.jsonl');
  });

  it('names one queue per accelerator without ":" (BullMQ refuses it)', () => {
    expect(trainQueueName('cpu')).toBe('train-cpu');
  });
});
