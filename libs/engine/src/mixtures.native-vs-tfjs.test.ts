/**
 * The native engine's mixture methods against the tfjs oracle (autograd): initial tensors, logits,
 * the gradients of A, B, routers and input embeddings with every auxiliary loss switched on,
 * padding and task types, the global-batch balance over micro-batches, AdamW steps with
 * FlyLoRA's bias update, and the routing statistics.
 */
import { describe, expect, it } from 'vitest';

import { Engine, Model, Optimizer } from './engine.js';
import { relativeL2 } from './testing/compare.js';
import { randomLlamaConfig, randomTrainBatch, randomWeights } from './testing/random-model.js';
import { hash3, uniform } from './rng.js';
import { PROJECTIONS, type AdapterConfig, type TrainBatch } from './types.js';

const config = randomLlamaConfig({ numLayers: 2 });
const common = { alpha: 8, useRslora: false, dropout: 0.1, targetModules: [...PROJECTIONS], seed: 17 };

const METHODS: AdapterConfig[] = [
  {
    ...common,
    method: 'mola',
    rank: 2,
    numExperts: [3, 5],
    topK: [2, 3],
    balance: { coef: 0.2, form: 'layer', scope: 'micro' },
    zLossCoef: 0.05,
  },
  {
    ...common,
    method: 'loramoe',
    rank: 3,
    numExperts: [4, 4],
    blcAlpha: 0.3,
    blcWeight: 0.4,
    balance: { coef: 0.1, form: 'pooled', scope: 'micro' },
    zLossCoef: 0.05,
  },
  {
    ...common,
    method: 'dynmole',
    rank: 2,
    numExperts: [4, 4],
    topP: 0.6,
    keepTopK: 1,
    entropyIndex: 1.1,
    entropyThreshold: 0.9,
    entropyEps: 1e-5,
    entropyCoef: 0.3,
    balance: { coef: 0.2, form: 'pooled', scope: 'micro' },
    zLossCoef: 0.05,
  },
  { ...common, method: 'flylora', rank: 8, topK: 2, select: 'signed', biasRate: 0.01 },
  { ...common, method: 'flylora', rank: 8, topK: 4, select: 'abs', biasRate: 0.01 },
];

const label = (a: AdapterConfig) => `${a.method}${a.method === 'flylora' ? ` (${a.select})` : ''}`;

async function twins(adapter: AdapterConfig): Promise<[Model, Model]> {
  const weights = randomWeights(config, 3);
  const models: Model[] = [];
  for (const engine of [Engine.create('native'), Engine.create('tfjs')]) {
    const model = await engine.createModel(config);
    for (const [name, values] of weights) model.backend.setTensor(name, values);
    model.attachAdapter(adapter);
    models.push(model);
  }
  return [models[0]!, models[1]!];
}

/** Non-zero B (so every gradient is), and sharper routers (so top-k, top-p and broadcast all occur). */
function perturb(model: Model, seed: number): Map<string, Float32Array> {
  const values = new Map<string, Float32Array>();
  for (const name of model.backend.tensorNames('trainable')) {
    const v = model.backend.getTensor(name);
    const scale = name.endsWith('lora_B.weight') ? 0.3 : name.endsWith('router.weight') ? 3 : 1;
    for (let i = 0; i < v.length; i++) {
      const noise = 2 * uniform(hash3(seed, name.length, i)) - 1;
      v[i] = name.endsWith('lora_B.weight') ? scale * noise : scale * v[i]!;
    }
    values.set(name, v);
  }
  return values;
}

/** A batch with padding at the end of its second row and a task type per row. */
function paddedBatch(seed: number): TrainBatch {
  const batch = randomTrainBatch(config, { batch: 3, seqLen: 8, seed });
  const tokenMask = new Uint8Array(24).fill(1);
  for (let t = 13; t < 16; t++) {
    tokenMask[t] = 0;
    batch.targets[t] = -1;
  }
  return { ...batch, tokenMask, taskTypes: Int32Array.from([1, 0, 1]) };
}

describe.each(METHODS)('native vs tfjs: %#', (adapter) => {
  it(`${label(adapter)}: identical initial tensors, logits, gradients and auxiliary losses`, async () => {
    const [native, oracle] = await twins(adapter);
    expect(native.adapter!.tensorNames()).toEqual(oracle.adapter!.tensorNames());
    expect(native.backend.tensorNames('trainable')).toEqual(oracle.backend.tensorNames('trainable'));
    for (const name of native.adapter!.tensorNames())
      expect(relativeL2(native.backend.getTensor(name), oracle.backend.getTensor(name)), name).toBeLessThan(1e-7);

    const weights = perturb(native, 5);
    for (const [name, v] of weights) for (const model of [native, oracle]) model.backend.setTensor(name, v);
    const batch = paddedBatch(9);
    expect(relativeL2(await native.logits(batch), await oracle.logits(batch))).toBeLessThan(1e-5);

    const options = { lossScale: 1 / 20, dropoutSeed: 4, needInputGrad: true, auxScale: 0.7 };
    const a = await native.backend.forwardBackward(batch, options);
    const b = await oracle.backend.forwardBackward(batch, options);
    expect(Math.abs(a.lossSum - b.lossSum) / b.lossSum).toBeLessThan(1e-5);
    for (const key of ['balance', 'zLoss', 'entropy', 'lbc', 'total'] as const)
      expect(a.aux[key], key).toBeCloseTo(b.aux[key], 5);
    if (adapter.method !== 'flylora') expect(a.aux.total).toBeGreaterThan(0);
    for (const name of native.backend.tensorNames('trainable'))
      expect(relativeL2(native.backend.getGrad(name), oracle.backend.getGrad(name)), name).toBeLessThan(1e-4);
    expect(relativeL2(native.backend.inputGrad(), oracle.backend.inputGrad())).toBeLessThan(1e-4);

    // The same step recomputing activations in backward gives the same gradients.
    const recomputed = await Engine.create('native').createModel(config);
    for (const [name, v] of randomWeights(config, 3)) recomputed.backend.setTensor(name, v);
    recomputed.attachAdapter(adapter);
    for (const [name, v] of weights) recomputed.backend.setTensor(name, v);
    await recomputed.backend.forwardBackward(batch, { ...options, recompute: true });
    for (const name of native.backend.tensorNames('trainable'))
      expect(relativeL2(recomputed.backend.getGrad(name), native.backend.getGrad(name)), name).toBeLessThan(1e-6);

    // Routing statistics of that micro-batch: padding excluded, same numbers on both engines.
    const [statsA, statsB] = [native.routingStats(), oracle.routingStats()];
    expect(statsA.length).toBe(7 * config.numLayers);
    statsA.forEach((site, i) => {
      const other = statsB[i]!;
      expect([site.layer, site.projection, site.experts, site.tokens]).toEqual([
        other.layer,
        other.projection,
        other.experts,
        21,
      ]);
      expect(relativeL2(site.load, other.load)).toBeLessThan(1e-6);
      expect(relativeL2(site.meanGate, other.meanGate)).toBeLessThan(1e-5);
      expect(site.broadcast).toBeCloseTo(other.broadcast, 6);
      if (site.entropy === null) expect(other.entropy).toBeNull();
      else expect(site.entropy).toBeCloseTo(other.entropy!, 5);
    });
    expect(native.routingStats()[0]!.tokens).toBe(0); // reading resets
    for (const model of [native, oracle, recomputed]) model.dispose();
  });

  it(`${label(adapter)}: two AdamW steps of two micro-batches give the same adapter on both engines`, async () => {
    const [native, oracle] = await twins(adapter);
    const weights = perturb(native, 6);
    for (const [name, v] of weights) for (const model of [native, oracle]) model.backend.setTensor(name, v);
    const optimizerConfig = {
      beta1: 0.9,
      beta2: 0.99,
      eps: 1e-8,
      weightDecay: 0.01,
      maxGradNorm: 1,
      seed: 2,
      schedule: { kind: 'constant' as const, lr: 1e-2, warmupSteps: 0, totalSteps: 2, minLrRatio: 0 },
    };
    const optimizers = [new Optimizer(native, optimizerConfig), new Optimizer(oracle, optimizerConfig)];
    for (let step = 0; step < 2; step++) {
      const micro = [paddedBatch(20 + 2 * step), paddedBatch(21 + 2 * step)];
      const [a, b] = [await optimizers[0]!.step(micro), await optimizers[1]!.step(micro)];
      expect(Math.abs(a!.loss - b!.loss) / b!.loss).toBeLessThan(1e-5);
      expect(a!.aux.total).toBeCloseTo(b!.aux.total, 5);
    }
    // Adam divides by sqrt(v): the smallest gradient entries turn float32 rounding into visible steps.
    for (const name of native.adapter!.tensorNames())
      expect(relativeL2(native.backend.getTensor(name), oracle.backend.getTensor(name)), name).toBeLessThan(1e-3);
    if (adapter.method === 'flylora') {
      // A is frozen; the bias moved in training.
      for (const [name, v] of weights)
        if (name.endsWith('lora_A.weight')) expect(native.backend.getTensor(name)).toEqual(v);
      const bias = native.adapter!.tensorNames().filter((n) => n.endsWith('topk_bias'));
      expect(bias.some((n) => native.backend.getTensor(n).some((v) => v !== 0))).toBe(true);
    }
    native.dispose();
    oracle.dispose();
  });
});

describe('global-batch load balance', () => {
  for (const method of ['mola', 'dynmole'] as const) {
    it(`${method}: over 4 micro-batches it equals the one-batch loss of their concatenation`, async () => {
      const base = METHODS.find((m) => m.method === method)! as Extract<AdapterConfig, { balance: unknown }>;
      const global: AdapterConfig = { ...base, dropout: 0, balance: { ...base.balance, scope: 'global' } };
      const [native, oracle] = await twins(global);
      const whole = await Engine.create('native').createModel(config);
      for (const [name, v] of randomWeights(config, 3)) whole.backend.setTensor(name, v);
      whole.attachAdapter({ ...global, balance: { ...base.balance, scope: 'micro' } });
      for (const [name, v] of perturb(native, 8))
        for (const model of [native, oracle, whole]) model.backend.setTensor(name, v);

      const all = paddedBatch(31);
      const rows = (from: number, to: number): TrainBatch => ({
        ids: all.ids.slice(from * 8, to * 8),
        targets: all.targets.slice(from * 8, to * 8),
        tokenMask: all.tokenMask!.slice(from * 8, to * 8),
        taskTypes: all.taskTypes!.slice(from, to),
        batch: to - from,
        seqLen: 8,
      });
      const micro = [rows(0, 1), rows(1, 2), rows(2, 3)];
      micro.splice(1, 0, { ...rows(0, 1), ids: rows(0, 1).ids.map((id) => (id + 7) % config.vocabSize) });
      const concatenated: TrainBatch = {
        ids: Int32Array.from(micro.flatMap((b) => [...b.ids])),
        targets: Int32Array.from(micro.flatMap((b) => [...b.targets])),
        tokenMask: Uint8Array.from(micro.flatMap((b) => [...b.tokenMask!])),
        taskTypes: Int32Array.from(micro.flatMap((b) => [...b.taskTypes!])),
        batch: 4,
        seqLen: 8,
      };
      const oneBatch = await whole.backend.forwardBackward(concatenated, { lossScale: 0, dropoutSeed: 0 });
      let lastNative = 0;
      let lastOracle = 0;
      for (const batch of micro) {
        lastNative = (await native.backend.forwardBackward(batch, { lossScale: 0, dropoutSeed: 0 })).balanceStep;
        lastOracle = (await oracle.backend.forwardBackward(batch, { lossScale: 0, dropoutSeed: 0 })).balanceStep;
      }
      expect(oneBatch.aux.balance).toBeGreaterThan(0);
      expect(lastNative).toBeCloseTo(oneBatch.aux.balance, 6);
      expect(lastOracle).toBeCloseTo(oneBatch.aux.balance, 6);
      // The micro-batch scope would not give it: each micro-batch balances only its own counts.
      let meanMicro = 0;
      for (const batch of micro)
        meanMicro += (await whole.backend.forwardBackward(batch, { lossScale: 0, dropoutSeed: 0 })).aux.balance / 4;
      expect(Math.abs(meanMicro - oneBatch.aux.balance)).toBeGreaterThan(1e-4);
      for (const model of [native, oracle, whole]) model.dispose();
    });
  }
});
