/**
 * The native engine against the tfjs oracle (autograd): logits, every gradient (LoRA, full
 * fine-tuning, input embeddings), AdamW updates and greedy decoding, on random tiny models that
 * cover grouped-query attention, tied and untied heads, q/k/v biases, sliding windows and RoPE
 * scaling.
 */
import type { LlamaConfig } from '@expertune/formats';
import { describe, expect, it } from 'vitest';

import { Engine, Model, Optimizer } from './engine.js';
import { generate } from './generate.js';
import { relativeL2 } from './testing/compare.js';
import { randomAdapterWeights, randomLlamaConfig, randomTrainBatch, randomWeights } from './testing/random-model.js';
import { PROJECTIONS, type LoraConfig } from './types.js';

async function twins(config: LlamaConfig, seed: number): Promise<[Model, Model]> {
  const weights = randomWeights(config, seed);
  const models: Model[] = [];
  for (const engine of [Engine.create('native'), Engine.create('tfjs')]) {
    const model = await engine.createModel(config);
    for (const [name, values] of weights) model.backend.setTensor(name, values);
    models.push(model);
  }
  return [models[0]!, models[1]!];
}

const VARIANTS: Array<[string, Partial<LlamaConfig>]> = [
  ['GQA, untied head', {}],
  ['tied embeddings, qkv bias, one kv head', { tieWordEmbeddings: true, qkvBias: true, numKvHeads: 1 }],
  [
    'sliding window, llama3 RoPE, all biases',
    {
      slidingWindow: 5,
      qkvBias: true,
      oBias: true,
      mlpBias: true,
      ropeTheta: 500000,
      ropeScaling: {
        type: 'llama3',
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 16,
      },
    },
  ],
  [
    'linear RoPE, hidden 48 with 6 heads of 8, 3 layers',
    { hiddenSize: 48, numHeads: 6, numKvHeads: 3, numLayers: 3, ropeScaling: { type: 'linear', factor: 2 } },
  ],
];

const LORA: LoraConfig = {
  rank: 4,
  alpha: 8,
  useRslora: false,
  dropout: 0.2,
  targetModules: [...PROJECTIONS],
  seed: 123,
};

describe.each(VARIANTS)('native engine vs tfjs oracle: %s', (_label, overrides) => {
  const config = randomLlamaConfig(overrides);

  it('logits agree without and with an adapter (rel L2 < 1e-5), and LoRA init is identical', async () => {
    const [native, oracle] = await twins(config, 7);
    const batch = randomTrainBatch(config, { batch: 2, seqLen: 11, seed: 3 });
    expect(relativeL2(await native.logits(batch), await oracle.logits(batch))).toBeLessThan(1e-5);

    native.attachLora(LORA);
    oracle.attachLora(LORA);
    for (const name of native.backend.tensorNames('adapter')) {
      expect(relativeL2(native.backend.getTensor(name), oracle.backend.getTensor(name)), name).toBe(0);
    }
    const adapter = randomAdapterWeights(config, LORA, 9);
    native.adapter!.load(adapter);
    oracle.adapter!.load(adapter);
    const nativeLogits = await native.logits(batch);
    const oracleLogits = await oracle.logits(batch);
    expect(relativeL2(nativeLogits, oracleLogits)).toBeLessThan(1e-5);
    native.dispose();
    oracle.dispose();
  });

  it('LoRA gradients (with dropout) and input-embedding gradients agree (rel L2 < 1e-4)', async () => {
    const [native, oracle] = await twins(config, 11);
    const adapter = randomAdapterWeights(config, LORA, 12);
    for (const model of [native, oracle]) {
      model.attachLora({ ...LORA, useRslora: true });
      model.adapter!.load(adapter);
    }
    const batch = randomTrainBatch(config, { batch: 3, seqLen: 9, seed: 5 });
    const options = { lossScale: 1 / 17, dropoutSeed: 99, needInputGrad: true };
    const a = await native.backend.forwardBackward(batch, options);
    const b = await oracle.backend.forwardBackward(batch, options);
    expect(a.tokens).toBe(b.tokens);
    expect(a.correct).toBe(b.correct);
    expect(Math.abs(a.lossSum - b.lossSum) / b.lossSum).toBeLessThan(1e-5);
    const names = native.backend.tensorNames('trainable');
    expect(names.length).toBe(2 * 7 * config.numLayers);
    for (const name of names) {
      expect(relativeL2(native.backend.getGrad(name), oracle.backend.getGrad(name)), name).toBeLessThan(1e-4);
    }
    expect(relativeL2(native.backend.inputGrad(), oracle.backend.inputGrad())).toBeLessThan(1e-4);
    native.dispose();
    oracle.dispose();
  });

  it('full fine-tuning: the gradient of every weight agrees (rel L2 < 1e-4), with and without recomputation', async () => {
    const [native, oracle] = await twins(config, 21);
    native.setTrainMode('full');
    oracle.setTrainMode('full');
    const batch = randomTrainBatch(config, { batch: 2, seqLen: 10, seed: 8 });
    await oracle.backend.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: 0 });
    for (const recompute of [false, true]) {
      await native.backend.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: 0, recompute });
      const names = native.backend.tensorNames('trainable');
      expect(new Set(names)).toEqual(new Set(oracle.backend.tensorNames('trainable')));
      for (const name of names) {
        expect(relativeL2(native.backend.getGrad(name), oracle.backend.getGrad(name)), name).toBeLessThan(1e-4);
      }
      native.backend.zeroGrad();
    }
    native.dispose();
    oracle.dispose();
  });
});

describe('native engine vs tfjs oracle: training and decoding', () => {
  const config = randomLlamaConfig({ qkvBias: true });

  it('three AdamW steps with accumulation, clipping and a cosine schedule give the same weights', async () => {
    const [native, oracle] = await twins(config, 31);
    const lora = { ...LORA, dropout: 0.1 };
    native.attachLora(lora);
    oracle.attachLora(lora);
    const optimizerConfig = {
      beta1: 0.9,
      beta2: 0.99,
      eps: 1e-8,
      weightDecay: 0.01,
      maxGradNorm: 0.5,
      seed: 4,
      schedule: { kind: 'cosine' as const, lr: 1e-2, warmupSteps: 1, totalSteps: 3, minLrRatio: 0.1 },
    };
    const optimizers = [new Optimizer(native, optimizerConfig), new Optimizer(oracle, optimizerConfig)];
    for (let step = 0; step < 3; step++) {
      const micro = [0, 1].map((i) => randomTrainBatch(config, { batch: 2, seqLen: 8, seed: 100 + 2 * step + i }));
      const [a, b] = [await optimizers[0]!.step(micro), await optimizers[1]!.step(micro)];
      expect(Math.abs(a!.loss - b!.loss) / b!.loss).toBeLessThan(1e-5);
      expect(Math.abs(a!.gradNorm - b!.gradNorm) / b!.gradNorm).toBeLessThan(1e-4);
      expect(a!.lr).toBe(b!.lr);
    }
    for (const name of native.backend.tensorNames('adapter')) {
      expect(relativeL2(native.backend.getTensor(name), oracle.backend.getTensor(name)), name).toBeLessThan(1e-4);
    }
    native.dispose();
    oracle.dispose();
  });

  it('greedy generation gives the same ids on both engines, with an adapter', async () => {
    const [native, oracle] = await twins(config, 41);
    const adapter = randomAdapterWeights(config, LORA, 42);
    for (const model of [native, oracle]) {
      model.attachLora(LORA);
      model.adapter!.load(adapter);
    }
    const prompt = [5, 17, 3, 60, 8];
    const a = await generate(native, prompt, { maxNewTokens: 12, greedy: true });
    const b = await generate(oracle, prompt, { maxNewTokens: 12, greedy: true });
    expect(a).toHaveLength(12);
    expect(a).toEqual(b);
    native.dispose();
    oracle.dispose();
  });
});
