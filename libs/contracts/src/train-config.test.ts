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
