import { describe, expect, it } from 'vitest';
import type { AdapterConfig } from '../types.js';
import { hash3, uniform } from '../rng.js';
import { randomLlamaConfig } from '../testing/random-model.js';
import {
  adapterSites,
  adapterTensorShapes,
  defaultAdapterConfig,
  initialAdapterTensors,
  trainableParametersPerLayer,
  validateAdapterConfig,
} from './index.js';

// hidden 16, 4 heads of 4, 2 key/value heads (k/v out 8), intermediate 44, 2 layers.
const config = randomLlamaConfig({ hiddenSize: 16 });
const base = { rank: 2, alpha: 4, useRslora: false, dropout: 0, seed: 1 } as const;
const router = { balance: { coef: 0.01, form: 'layer', scope: 'micro' }, zLossCoef: 0 } as const;
const mola: AdapterConfig = {
  ...base,
  ...router,
  method: 'mola',
  targetModules: ['k_proj', 'down_proj'],
  numExperts: [2, 3],
  topK: [1, 2],
};
const flylora: AdapterConfig = {
  ...base,
  method: 'flylora',
  rank: 4,
  topK: 2,
  select: 'signed',
  biasRate: 0.001,
  targetModules: ['up_proj'],
};

describe('adapter tensor layout', () => {
  it('orders mixture tensors site by site: router, then A and B per expert', () => {
    const shapes = adapterTensorShapes(config, mola);
    expect([...shapes.keys()]).toEqual([
      'model.layers.0.self_attn.k_proj.router.weight',
      'model.layers.0.self_attn.k_proj.experts.0.lora_A.weight',
      'model.layers.0.self_attn.k_proj.experts.0.lora_B.weight',
      'model.layers.0.self_attn.k_proj.experts.1.lora_A.weight',
      'model.layers.0.self_attn.k_proj.experts.1.lora_B.weight',
      'model.layers.0.mlp.down_proj.router.weight',
      'model.layers.0.mlp.down_proj.experts.0.lora_A.weight',
      'model.layers.0.mlp.down_proj.experts.0.lora_B.weight',
      'model.layers.0.mlp.down_proj.experts.1.lora_A.weight',
      'model.layers.0.mlp.down_proj.experts.1.lora_B.weight',
      'model.layers.1.self_attn.k_proj.router.weight',
      ...[0, 1, 2].flatMap((e) => [
        `model.layers.1.self_attn.k_proj.experts.${e}.lora_A.weight`,
        `model.layers.1.self_attn.k_proj.experts.${e}.lora_B.weight`,
      ]),
      'model.layers.1.mlp.down_proj.router.weight',
      ...[0, 1, 2].flatMap((e) => [
        `model.layers.1.mlp.down_proj.experts.${e}.lora_A.weight`,
        `model.layers.1.mlp.down_proj.experts.${e}.lora_B.weight`,
      ]),
    ]);
    expect(shapes.get('model.layers.1.mlp.down_proj.router.weight')).toEqual({
      shape: [3, 44],
      trainable: true,
      layer: 1,
    });
    expect(shapes.get('model.layers.0.self_attn.k_proj.experts.1.lora_B.weight')!.shape).toEqual([8, 2]);
    expect([...shapes.values()].every((info) => info.trainable)).toBe(true);
  });

  it('freezes FlyLoRA A and its bias', () => {
    expect([...adapterTensorShapes(config, flylora)]).toEqual([
      ['model.layers.0.mlp.up_proj.lora_A.weight', { shape: [4, 16], trainable: false, layer: 0 }],
      ['model.layers.0.mlp.up_proj.lora_B.weight', { shape: [44, 4], trainable: true, layer: 0 }],
      ['model.layers.0.mlp.up_proj.topk_bias', { shape: [4], trainable: false, layer: 0 }],
      ['model.layers.1.mlp.up_proj.lora_A.weight', { shape: [4, 16], trainable: false, layer: 1 }],
      ['model.layers.1.mlp.up_proj.lora_B.weight', { shape: [44, 4], trainable: true, layer: 1 }],
      ['model.layers.1.mlp.up_proj.topk_bias', { shape: [4], trainable: false, layer: 1 }],
    ]);
  });

  it('counts trainable parameters per layer', () => {
    // Layer 0: k (in 16, out 8): router 2·16 + 2 experts · 2·(16 + 8) = 128; down (in 44, out 16):
    // 2·44 + 2 · 2·(44 + 16) = 328. Layer 1 with 3 experts: 3·16 + 3·48 = 192, 3·44 + 3·120 = 492.
    expect(trainableParametersPerLayer(config, mola)).toEqual([128 + 328, 192 + 492]);
    expect(trainableParametersPerLayer(config, flylora)).toEqual([44 * 4, 44 * 4]);
    expect(trainableParametersPerLayer(config, { ...base, method: 'lora', targetModules: ['q_proj'] })).toEqual([
      64, 64,
    ]);
  });

  it('numbers sites l·7 + p and keys dropout by the input group', () => {
    const sites = adapterSites(config, { ...base, method: 'lora', targetModules: ['k_proj', 'o_proj', 'up_proj'] });
    expect(sites.map((s) => [s.site, s.inputGroupKey])).toEqual([
      [1, 0],
      [3, 3],
      [5, 4],
      [8, 7],
      [10, 10],
      [12, 11],
    ]);
  });
});

describe('initial adapter values', () => {
  it('stack the experts A over one flat index, draw routers from 2·site + 1, zero B', () => {
    const values = initialAdapterTensors(config, mola);
    const site = 1 * 7 + 6; // layer 1 down_proj, in 44
    const bound = 1 / Math.sqrt(44);
    const a2 = values.get('model.layers.1.mlp.down_proj.experts.2.lora_A.weight')!;
    // Expert 2's element (row 1, column 5) is row 2·2 + 1 = 5 of the stacked [6, 44] matrix.
    const flat = (2 * 2 + 1) * 44 + 5;
    expect(a2[1 * 44 + 5]).toBe(Math.fround((2 * uniform(hash3(1, 2 * site, flat)) - 1) * bound));
    const r = values.get('model.layers.1.mlp.down_proj.router.weight')!;
    expect(r[2 * 44 + 7]).toBe(Math.fround((2 * uniform(hash3(1, 2 * site + 1, 2 * 44 + 7)) - 1) * bound));
    expect(values.get('model.layers.1.mlp.down_proj.experts.0.lora_B.weight')!.every((v) => v === 0)).toBe(true);
    const fly = initialAdapterTensors(config, flylora);
    expect(fly.get('model.layers.0.mlp.up_proj.topk_bias')).toEqual(new Float32Array(4));
    const a = fly.get('model.layers.0.mlp.up_proj.lora_A.weight')!;
    expect(a.filter((v) => v !== 0).length).toBe(4 * 8); // 16 // (4 / 2) = 8 per row
  });
});

describe('validateAdapterConfig', () => {
  const bad: [string, AdapterConfig, RegExp][] = [
    ['numExperts length', { ...mola, numExperts: [2] } as AdapterConfig, /numExperts needs one entry per layer \(2\)/],
    ['an empty layer', { ...mola, numExperts: [0, 2] } as AdapterConfig, /numExperts\[0\] must be an integer ≥ 1/],
    ['topK above E', { ...mola, topK: [3, 2] } as AdapterConfig, /topK\[0\] must be an integer in \[1, 2\]/],
    [
      'pooled with different E',
      { ...mola, balance: { coef: 0, form: 'pooled', scope: 'micro' } } as AdapterConfig,
      /pooled balance form needs the same number of experts/,
    ],
    [
      'odd LoRAMoE',
      {
        ...base,
        ...router,
        method: 'loramoe',
        targetModules: ['up_proj'],
        numExperts: [2, 3],
        blcAlpha: 0,
        blcWeight: 0,
      },
      /even number of experts.*numExperts\[1\] = 3/,
    ],
    ['top_p 0', defaultAdapterConfig('dynmole', 2, { topP: 0 }), /topP must be in \(0, 1\]/],
    ['keep_top_k 0', defaultAdapterConfig('dynmole', 2, { keepTopK: 0 }), /keepTopK must be an integer ≥ 1/],
    ['q above 2', defaultAdapterConfig('dynmole', 2, { entropyIndex: 2.5 }), /entropyIndex .* \(0, 2\]/],
    ['q = 0', defaultAdapterConfig('dynmole', 2, { entropyIndex: 0 }), /entropyIndex/],
    [
      'rank 6 with k 4',
      { ...flylora, rank: 6, topK: 4 } as AdapterConfig,
      /topK must be an integer in \[1, rank = 6\]|multiple/,
    ],
    [
      'rank 8 with k 3',
      { ...flylora, rank: 8, topK: 3 } as AdapterConfig,
      /rank \(8\) must be a multiple of topK \(3\)/,
    ],
    ['k above rank', { ...flylora, topK: 5 } as AdapterConfig, /topK must be an integer in \[1, rank = 4\]/],
    ['dropout 1', { ...flylora, dropout: 1 }, /dropout must be in \[0, 1\)/],
    [
      'unknown module',
      { ...flylora, targetModules: ['qkv_proj'] } as unknown as AdapterConfig,
      /unknown target module 'qkv_proj'/,
    ],
    ['unknown method', { ...flylora, method: 'mixlora' } as unknown as AdapterConfig, /unknown method 'mixlora'/],
  ];
  for (const [title, adapter, message] of bad) {
    it(`refuses ${title}`, () => expect(() => validateAdapterConfig(adapter, config)).toThrow(message));
  }

  it('accepts every default (for a Llama-2-7B-sized layer count) and the test configs', () => {
    const llama = randomLlamaConfig({ numLayers: 32, hiddenSize: 4096, numHeads: 32, numKvHeads: 32 });
    for (const method of ['lora', 'mola', 'loramoe', 'dynmole', 'flylora'] as const)
      expect(() => validateAdapterConfig(defaultAdapterConfig(method, 32), llama)).not.toThrow();
    expect(defaultAdapterConfig('mola', 32).numExperts.slice(6, 10)).toEqual([2, 2, 4, 4]);
    expect(defaultAdapterConfig('mola', 32).numExperts.at(-1)).toBe(8);
    expect(() => validateAdapterConfig(mola, config)).not.toThrow();
    expect(() => validateAdapterConfig(flylora, config)).not.toThrow();
  });
});
