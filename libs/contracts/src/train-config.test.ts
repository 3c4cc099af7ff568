import { describe, expect, it } from 'vitest';

import { ConfigError, parseTrainConfig } from './train-config.js';

describe('training config', () => {
  it('fills every default from a minimal config', () => {
    const config = parseTrainConfig({ model: 'm', data: { train: 'd.jsonl' }, output_dir: 'out' });
    expect(config.method).toBe('lora');
    expect(config.lora).toEqual({
      rank: 16,
      alpha: 32,
      dropout: 0,
      use_rslora: false,
      target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    });
    expect(config.training.micro_batch_size).toBe(4);
    expect(config.schedule.kind).toBe('cosine');
    expect(config.optimizer.max_grad_norm).toBe(1);
    expect(config.data.max_seq_len).toBe(512);
  });

  it('fills the data section: auto format, completions-only loss, no packing, no validation, skip bad rows', () => {
    const config = parseTrainConfig({ model: 'm', data: { train: 'd.jsonl' }, output_dir: 'out' });
    expect(config.data).toEqual({
      train: 'd.jsonl',
      validation_fraction: 0,
      format: 'auto',
      columns: {},
      train_on_inputs: false,
      packing: false,
      on_bad_rows: 'skip',
      max_seq_len: 512,
      add_eos: true,
    });
  });

  it('checks the data section: formats, column names, the split', () => {
    const config = parseTrainConfig({
      model: 'm',
      data: { train: 'd.jsonl', format: 'alpaca', columns: { output: 'response' }, validation_fraction: 0.1 },
      output_dir: 'out',
    });
    expect(config.data.columns).toEqual({ output: 'response' });
    const paths = (data: unknown) => {
      try {
        parseTrainConfig({ model: 'm', data, output_dir: 'out' });
      } catch (error) {
        return (error as ConfigError).issues.map((i) => i.path);
      }
      return [];
    };
    expect(paths({ train: 'd', format: 'csv' })).toEqual(['data.format']);
    expect(paths({ train: 'd', columns: { answer: 'x' } })).toEqual(['data.columns']);
    expect(paths({ train: 'd', validation_fraction: 1 })).toEqual(['data.validation_fraction']);
    expect(paths({ train: 'd', validation: 'v', validation_fraction: 0.2 })).toEqual(['data.validation_fraction']);
    expect(paths({ train: 'd', on_bad_rows: 'ignore' })).toEqual(['data.on_bad_rows']);
  });

  it('names every bad field by its path', () => {
    let caught: unknown;
    try {
      parseTrainConfig({
        model: 'm',
        data: { train: 'd.jsonl', max_seq_len: -3 },
        lora: { rank: 2.5, target_modules: ['qkv_proj'] },
        optimizer: { lr: 0 },
        output_dir: 'out',
        colour: 'blue',
      });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const paths = (caught as ConfigError).issues.map((i) => i.path).sort();
    expect(paths).toEqual(['(root)', 'data.max_seq_len', 'lora.rank', 'lora.target_modules.0', 'optimizer.lr']);
    expect((caught as ConfigError).message).toContain('lora.target_modules.0');
  });

  it('requires the model, the training data and the output directory', () => {
    expect(() => parseTrainConfig({})).toThrow(/model[\s\S]*data[\s\S]*output_dir/);
  });
});
