import { ConfigError, parseTrainConfig } from '@expertune/contracts';
import { ADAPTER_METHODS, defaultAdapterConfig } from '@expertune/engine';
import { describe, expect, it } from 'vitest';

import { adapterConfigFor, adapterConfigFromSpec, exportSpecOf } from './adapter-config.js';

const base = { model: 'm', data: { train: 'd.jsonl' }, output_dir: 'out', seed: 7 };

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('training config → engine adapter', () => {
  it.each(ADAPTER_METHODS)('%s: the config defaults are the engine defaults (one table cannot drift)', (method) => {
    for (const layers of [1, 4, 6]) {
      const fromConfig = adapterConfigFor(parseTrainConfig({ ...base, method }), layers);
      expect(fromConfig).toEqual(defaultAdapterConfig(method, layers, { seed: 7 }));
    }
  });

  it('plain LoRA and full fine-tuning', () => {
    expect(adapterConfigFor(parseTrainConfig({ ...base, lora: { rank: 4 } }), 2)).toEqual({
      method: 'lora',
      rank: 4,
      alpha: 32,
      useRslora: false,
      dropout: 0,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      seed: 7,
    });
    expect(adapterConfigFor(parseTrainConfig({ ...base, method: 'full' }), 2)).toBeNull();
  });

  it('MoLA: resolves the preset to the model depth and top_k per layer', () => {
    const config = parseTrainConfig({ ...base, method: 'mola' });
    expect(adapterConfigFor(config, 8)).toEqual({
      method: 'mola',
      rank: 8,
      alpha: 16,
      useRslora: false,
      dropout: 0.05,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      seed: 7,
      numExperts: [2, 2, 4, 4, 6, 6, 8, 8],
      topK: [2, 2, 2, 2, 2, 2, 2, 2],
      balance: { coef: 1e-3, form: 'layer', scope: 'micro' },
      zLossCoef: 0,
    });
  });

  it('MoLA: names the key of every per-layer problem', () => {
    const mola = (section: object) => parseTrainConfig({ ...base, method: 'mola', mola: section });
    expect(errorOf(() => adapterConfigFor(mola({ num_experts: [2, 4, 6] }), 2)).issues).toEqual([
      { path: 'mola.num_experts', message: 'has 3 entries but the model has 2 layers: give one per layer' },
    ]);
    expect(errorOf(() => adapterConfigFor(mola({ top_k: [1] }), 2)).issues[0]!.path).toBe('mola.top_k');
    expect(errorOf(() => adapterConfigFor(mola({ num_experts: [1, 4] }), 2)).message).toMatch(
      /mola\.top_k: layer 0 keeps 2 experts but has only 1 \(experts per layer: 1, 4\)/,
    );
    expect(errorOf(() => adapterConfigFor(mola({ balance: { form: 'pooled' } }), 4)).issues[0]!.path).toBe(
      'mola.balance.form',
    );
    // Pooled is fine when every layer has the same experts.
    expect(adapterConfigFor(mola({ num_experts: 4, balance: { form: 'pooled' } }), 4)).toMatchObject({
      numExperts: [4, 4, 4, 4],
      balance: { form: 'pooled' },
    });
  });

  it('LoRAMoE, DynMoLE and FlyLoRA map their sections', () => {
    expect(
      adapterConfigFor(parseTrainConfig({ ...base, method: 'loramoe', loramoe: { blc_weight: 0.2 } }), 3),
    ).toMatchObject({
      method: 'loramoe',
      rank: 24,
      numExperts: [6, 6, 6],
      blcAlpha: 0,
      blcWeight: 0.2,
      targetModules: ['gate_proj', 'up_proj', 'down_proj'],
    });
    // Every field set away from its default (the defaults themselves are checked above).
    const dynmole = { top_p: 0.6, keep_top_k: 3, entropy_index: 1, entropy_threshold: 0.8, entropy_eps: 1e-6 };
    expect(
      adapterConfigFor(
        parseTrainConfig({
          ...base,
          method: 'dynmole',
          dynmole: { ...dynmole, entropy_coef: 0.05, balance: { scope: 'global' }, z_loss_coef: 0.01 },
        }),
        2,
      ),
    ).toMatchObject({
      method: 'dynmole',
      topP: 0.6,
      keepTopK: 3,
      entropyIndex: 1,
      entropyThreshold: 0.8,
      entropyEps: 1e-6,
      entropyCoef: 0.05,
      balance: { coef: 1e-3, form: 'pooled', scope: 'global' },
      zLossCoef: 0.01,
    });
    expect(
      adapterConfigFor(
        parseTrainConfig({ ...base, method: 'flylora', flylora: { top_k: 4, select: 'abs', bias_rate: 0.01 } }),
        2,
      ),
    ).toMatchObject({ method: 'flylora', topK: 4, select: 'abs', biasRate: 0.01 });
  });

  it('round-trips through the export spec with training-only settings neutral', () => {
    const adapter = adapterConfigFor(parseTrainConfig({ ...base, method: 'dynmole' }), 2)!;
    const spec = exportSpecOf(adapter, 2);
    expect(spec).not.toHaveProperty('seed');
    expect(adapterConfigFromSpec(spec)).toEqual({
      ...adapter,
      seed: 0,
      dropout: 0,
      entropyCoef: 0,
      balance: { coef: 0, form: 'layer', scope: 'micro' },
    });
    const fly = adapterConfigFor(parseTrainConfig({ ...base, method: 'flylora' }), 2)!;
    expect(exportSpecOf(fly, 2)).toEqual({
      method: 'flylora',
      rank: 32,
      alpha: 64,
      useRslora: false,
      targetModules: fly.targetModules,
      numLayers: 2,
      topK: 8,
      select: 'signed',
    });
    expect(adapterConfigFromSpec(exportSpecOf(fly, 2))).toEqual({ ...fly, seed: 0, biasRate: 0 });
  });
});
