import { describe, expect, it } from 'vitest';

import { configDiff, flattenConfig, MISSING } from './config-diff';

describe('flattenConfig', () => {
  it('writes dotted keys and keeps arrays in one cell', () => {
    expect(
      flattenConfig({
        method: 'mola',
        mola: { rank: 8, target_modules: ['q_proj', 'v_proj'], balance: { coef: 0.001 } },
        x: null,
      }),
    ).toEqual({
      method: 'mola',
      'mola.rank': '8',
      'mola.target_modules': '["q_proj","v_proj"]',
      'mola.balance.coef': '0.001',
      x: 'null',
    });
  });
});

describe('configDiff', () => {
  const lora = { method: 'lora', seed: 0, hyperparameters: { lora: { rank: 16 }, optimizer: { lr: 0.0002 } } };
  const mola = { method: 'mola', seed: 0, hyperparameters: { mola: { rank: 8 }, optimizer: { lr: 0.0002 } } };

  it('has a row per key of any run, marking the ones that differ', () => {
    expect(configDiff([lora, mola])).toEqual([
      { key: 'hyperparameters.lora.rank', values: ['16', MISSING], differs: true },
      { key: 'hyperparameters.mola.rank', values: [MISSING, '8'], differs: true },
      { key: 'hyperparameters.optimizer.lr', values: ['0.0002', '0.0002'], differs: false },
      { key: 'method', values: ['lora', 'mola'], differs: true },
      { key: 'seed', values: ['0', '0'], differs: false },
    ]);
  });

  it('keeps only differing rows with differences only on', () => {
    expect(configDiff([lora, mola], true).map((r) => r.key)).toEqual([
      'hyperparameters.lora.rank',
      'hyperparameters.mola.rank',
      'method',
    ]);
    expect(configDiff([lora, lora], true)).toEqual([]);
  });
});
