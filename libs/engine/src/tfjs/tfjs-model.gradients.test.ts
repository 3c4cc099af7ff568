/**
 * The oracle's gradients checked independently of autograd: central finite differences of the
 * tfjs loss (float32, so a moderate step and a loose tolerance), exact-zero checks for dropout,
 * and the bookkeeping of forwardBackward (loss scale, accumulation, stats, input gradient, memory).
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import type { LlamaConfig } from '@expertune/formats';
import type { LoraConfig, TrainBatch } from '../types.js';
import { dropoutKeepMask, hash3, uniform } from '../rng.js';
import { randomLlamaConfig, randomTrainBatch } from '../testing/random-model.js';
import type { TfjsModel } from './tfjs-model.js';
import { ALL_PROJECTIONS, loadRandomModel, maxAbs, maxAbsDifference, relativeL2 } from './model-fixtures.test-util.js';

const models: TfjsModel[] = [];
afterAll(() => models.forEach((model) => model.dispose()));

async function track(model: Promise<TfjsModel>): Promise<TfjsModel> {
  const loaded = await model;
  models.push(loaded);
  return loaded;
}

/** Runs one forwardBackward with lossScale 1 and returns the loss, leaving no gradient behind. */
async function lossAt(model: TfjsModel, batch: TrainBatch, dropoutSeed: number): Promise<number> {
  const { lossSum } = await model.forwardBackward(batch, { lossScale: 1, dropoutSeed });
  model.zeroGrad();
  return lossSum;
}

/** A few coordinates worth probing: the largest gradient and two pseudo-random ones among the large. */
function probeCoordinates(gradient: Float32Array, salt: number): number[] {
  const largest = maxAbs(gradient);
  const candidates: number[] = [];
  gradient.forEach((g, i) => {
    if (Math.abs(g) >= 0.25 * largest) candidates.push(i);
  });
  const top = candidates.reduce(
    (best, i) => (Math.abs(gradient[i]!) > Math.abs(gradient[best]!) ? i : best),
    candidates[0]!,
  );
  const picks = new Set([top]);
  for (let n = 0; n < 2; n++) picks.add(candidates[Math.floor(uniform(hash3(salt, n, 0)) * candidates.length)]!);
  return [...picks];
}

interface FiniteDifferenceCase {
  title: string;
  config: LlamaConfig;
  lora?: LoraConfig;
  /** Coordinates to probe besides the automatic ones, by tensor name. */
  extraCoordinates?: (batch: TrainBatch) => Record<string, number[]>;
}

const fdCases: FiniteDifferenceCase[] = [
  {
    title: 'untied Llama with every bias and LoRA (rsLoRA, dropout) on all 7 projections',
    config: randomLlamaConfig({ qkvBias: true, oBias: true, mlpBias: true, slidingWindow: 3 }),
    lora: { rank: 2, alpha: 4, useRslora: true, dropout: 0.25, targetModules: ALL_PROJECTIONS, seed: 4 },
  },
  {
    title: 'tied embeddings (embedding gradient from the lookup and the lm head), one key/value head',
    config: randomLlamaConfig({ tieWordEmbeddings: true, numKvHeads: 1 }),
    // A row of a token absent from the input: only the lm-head use contributes.
    extraCoordinates: (batch) => {
      const absent = Array.from({ length: 96 }, (_, id) => id).find((id) => !batch.ids.includes(id))!;
      const present = batch.ids[3]!;
      return { 'model.embed_tokens.weight': [absent * 32 + 5, present * 32 + 7] };
    },
  },
];

describe('gradients against central finite differences of the tfjs loss', () => {
  for (const testCase of fdCases) {
    it(testCase.title, async () => {
      const model = await track(
        loadRandomModel(testCase.config, {
          seed: 21,
          ...(testCase.lora ? { lora: testCase.lora, randomAdapterSeed: 22 } : {}),
        }),
      );
      const batch = randomTrainBatch(testCase.config, { batch: 2, seqLen: 5, seed: 23 });
      const dropoutSeed = 1234;

      model.setTrainMode('full');
      await model.forwardBackward(batch, { lossScale: 1, dropoutSeed });
      const names = model.tensorNames('trainable');
      const analytic = new Map(names.map((name) => [name, model.getGrad(name)]));
      model.setTrainMode('lora'); // evaluating the loss needs no base-weight gradients

      const eps = 1e-2;
      const report: string[] = [];
      let worst = 0;
      for (const [index, name] of names.entries()) {
        const gradient = analytic.get(name)!;
        expect(maxAbs(gradient)).toBeGreaterThan(0); // every tensor takes part in the loss
        const original = model.getTensor(name);
        const extra = testCase.extraCoordinates?.(batch)[name] ?? [];
        for (const coordinate of [...probeCoordinates(gradient, index), ...extra]) {
          const shifted = (delta: number) => {
            const values = Float32Array.from(original);
            values[coordinate] = values[coordinate]! + delta;
            model.setTensor(name, values);
            return lossAt(model, batch, dropoutSeed);
          };
          // Fourth-order central difference: truncation error O(eps⁴) instead of O(eps²).
          const numeric =
            (8 * ((await shifted(eps)) - (await shifted(-eps))) -
              ((await shifted(2 * eps)) - (await shifted(-2 * eps)))) /
            (12 * eps);
          const g = gradient[coordinate]!;
          const error = Math.abs(numeric - g) / (Math.abs(g) + 1e-2 * maxAbs(gradient));
          worst = Math.max(worst, error);
          report.push(
            `${name}[${coordinate}] analytic ${g.toExponential(4)} numeric ${numeric.toExponential(4)} error ${error.toExponential(2)}`,
          );
        }
        model.setTensor(name, original);
      }
      if (process.env.EXPERTUNE_FD_REPORT) console.log(report.join('\n'));
      expect(worst, report.join('\n')).toBeLessThan(0.02);
    });
  }
});

describe('dropout', () => {
  it('gives exactly zero gradient to A columns whose input element is dropped, at the hashed positions', async () => {
    const config = randomLlamaConfig();
    const lora: LoraConfig = {
      rank: 2,
      alpha: 4,
      useRslora: false,
      dropout: 0.5,
      targetModules: ['down_proj'],
      seed: 1,
    };
    const model = await track(loadRandomModel(config, { seed: 31, lora, randomAdapterSeed: 32 }));
    const [batchSize, seqLen] = [2, 4];
    // Only row b = 1, pos = 2 counts: in the last layer's MLP (per position) only that row gets a gradient.
    const countedRow = 1 * seqLen + 2;
    const batch = randomTrainBatch(config, { batch: batchSize, seqLen, seed: 33 });
    batch.targets.fill(-1);
    batch.targets[countedRow] = 7;
    const lastLayerSite = (config.numLayers - 1) * 7 + 6;
    const F = config.intermediateSize;

    for (const dropoutSeed of [99, 100]) {
      model.zeroGrad();
      await model.forwardBackward(batch, { lossScale: 1, dropoutSeed });
      const gradA = model.getGrad(`model.layers.${config.numLayers - 1}.mlp.down_proj.lora_A.weight`);
      const keep = dropoutKeepMask(dropoutSeed, lastLayerSite, batchSize * seqLen, F, 0.5).subarray(
        countedRow * F,
        (countedRow + 1) * F,
      );
      let dropped = 0;
      for (let j = 0; j < F; j++) {
        const column = [gradA[j]!, gradA[F + j]!];
        if (keep[j] === 0) {
          dropped++;
          expect(column).toEqual([0, 0]);
        } else {
          expect(Math.abs(column[0]!) + Math.abs(column[1]!)).toBeGreaterThan(0);
        }
      }
      expect(dropped).toBeGreaterThan(F / 4);
      expect(dropped).toBeLessThan((3 * F) / 4);
    }
  });

  it('applies only in forwardBackward, never in forward', async () => {
    const config = randomLlamaConfig();
    const lora: LoraConfig = {
      rank: 4,
      alpha: 8,
      useRslora: false,
      dropout: 0.3,
      targetModules: ALL_PROJECTIONS,
      seed: 2,
    };
    const model = await track(loadRandomModel(config, { seed: 34, lora, randomAdapterSeed: 35 }));
    const batch = randomTrainBatch(config, { batch: 2, seqLen: 6, seed: 36 });
    const withDropout = await lossAt(model, batch, 5);
    const logits = await model.forward(batch);
    expect(Math.abs(crossEntropySum(logits, batch.targets, config.vocabSize) - withDropout)).toBeGreaterThan(1e-3);
    // The same seed gives the same masks, another seed other masks.
    expect(await lossAt(model, batch, 5)).toBe(withDropout);
    expect(await lossAt(model, batch, 6)).not.toBe(withDropout);
  });
});

/** Σ over counted positions of logsumexp − target logit, in float64 from float32 logits. */
function crossEntropySum(logits: Float32Array, targets: Int32Array, vocab: number): number {
  let sum = 0;
  targets.forEach((target, t) => {
    if (target < 0) return;
    const row = logits.subarray(t * vocab, (t + 1) * vocab);
    const max = maxOf(row);
    let total = 0;
    for (const z of row) total += Math.exp(z - max);
    sum += max + Math.log(total) - row[target]!;
  });
  return sum;
}

function maxOf(values: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) max = Math.max(max, values[i]!);
  return max;
}

describe('forwardBackward bookkeeping', () => {
  it('reports the loss sum, counted tokens and argmax hits of the forward logits', async () => {
    const config = randomLlamaConfig({ vocabSize: 8 }); // a small vocabulary, so some argmax hits happen
    const model = await track(loadRandomModel(config, { seed: 41 }));
    const batch = randomTrainBatch(config, { batch: 3, seqLen: 7, seed: 42, ignoredFraction: 0.3 });
    const logits = await model.forward(batch);
    const stats = await model.forwardBackward(batch, { lossScale: 1, dropoutSeed: 0 });
    let tokens = 0;
    let correct = 0;
    batch.targets.forEach((target, t) => {
      if (target < 0) return;
      tokens++;
      const row = logits.subarray(t * 8, (t + 1) * 8);
      if (row.indexOf(maxOf(row)) === target) correct++;
    });
    expect(stats.tokens).toBe(tokens);
    expect(stats.correct).toBe(correct);
    expect(correct).toBeGreaterThan(0);
    expect(Math.abs(stats.lossSum - crossEntropySum(logits, batch.targets, 8))).toBeLessThan(1e-4);
  });

  it('scales gradients by lossScale and accumulates them over calls until zeroGrad', async () => {
    const config = randomLlamaConfig();
    const lora: LoraConfig = {
      rank: 2,
      alpha: 4,
      useRslora: false,
      dropout: 0.1,
      targetModules: ['q_proj', 'up_proj'],
      seed: 3,
    };
    const model = await track(loadRandomModel(config, { seed: 43, lora, randomAdapterSeed: 44 }));
    model.setTrainMode('full');
    const first = randomTrainBatch(config, { batch: 2, seqLen: 5, seed: 45 });
    const second = randomTrainBatch(config, { batch: 1, seqLen: 8, seed: 46 });
    const names = model.tensorNames('trainable');
    const gradsOf = async (batch: TrainBatch, lossScale: number, dropoutSeed: number) => {
      model.zeroGrad();
      await model.forwardBackward(batch, { lossScale, dropoutSeed });
      return names.map((name) => model.getGrad(name));
    };
    const unit = await gradsOf(first, 1, 7);
    const scaled = await gradsOf(first, 0.125, 7);
    names.forEach((_, i) =>
      expect(
        relativeL2(
          scaled[i]!,
          unit[i]!.map((g) => g * 0.125),
        ),
      ).toBeLessThan(1e-6),
    );

    const other = await gradsOf(second, 0.5, 8);
    model.zeroGrad();
    await model.forwardBackward(first, { lossScale: 1, dropoutSeed: 7 });
    await model.forwardBackward(second, { lossScale: 0.5, dropoutSeed: 8 });
    names.forEach((name, i) => {
      const sum = unit[i]!.map((g, j) => g + other[i]![j]!);
      expect(relativeL2(model.getGrad(name), sum)).toBeLessThan(1e-6);
    });
    model.zeroGrad();
    expect(names.every((name) => maxAbs(model.getGrad(name)) === 0)).toBe(true);
  });

  it('returns dL/dh0, which scatters into the embedding gradient, in either train mode', async () => {
    const config = randomLlamaConfig();
    const lora: LoraConfig = { rank: 2, alpha: 4, useRslora: false, dropout: 0, targetModules: ['v_proj'], seed: 5 };
    const model = await track(loadRandomModel(config, { seed: 47, lora, randomAdapterSeed: 48 }));
    expect(() => model.inputGrad()).toThrow();
    const batch = randomTrainBatch(config, { batch: 2, seqLen: 6, seed: 49 });
    batch.ids[4] = batch.ids[9]!; // a repeated token: its embedding row gets both input gradients
    const d = config.hiddenSize;

    await model.forwardBackward(batch, { lossScale: 0.25, dropoutSeed: 0, needInputGrad: true });
    const inLoraMode = model.inputGrad();
    expect(inLoraMode.length).toBe(2 * 6 * d);
    model.zeroGrad();
    model.setTrainMode('full');
    await model.forwardBackward(batch, { lossScale: 0.25, dropoutSeed: 0, needInputGrad: true });
    const inFullMode = model.inputGrad();
    expect(maxAbsDifference(inFullMode, inLoraMode)).toBeLessThan(1e-6);

    const expectedEmbeddingGrad = new Float64Array(config.vocabSize * d);
    batch.ids.forEach((id, t) => {
      for (let c = 0; c < d; c++) expectedEmbeddingGrad[id * d + c]! += inFullMode[t * d + c]!;
    });
    expect(maxAbsDifference(model.getGrad('model.embed_tokens.weight'), expectedEmbeddingGrad)).toBeLessThan(1e-6);
    expect(maxAbs(inFullMode)).toBeGreaterThan(1e-3);
  });

  it('keeps the number of tensors stable over steps and frees everything on dispose', async () => {
    const config = randomLlamaConfig({ qkvBias: true, tieWordEmbeddings: true });
    const before = tf.memory().numTensors;
    const model = await loadRandomModel(config, {
      seed: 51,
      lora: { rank: 2, alpha: 4, useRslora: false, dropout: 0.1, targetModules: ALL_PROJECTIONS, seed: 6 },
    });
    const batch = randomTrainBatch(config, { batch: 2, seqLen: 5, seed: 52 });
    const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 };
    const counts: number[] = [];
    for (const mode of ['lora', 'full', 'full', 'full'] as const) {
      model.setTrainMode(mode);
      await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: counts.length, needInputGrad: true });
      await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: counts.length + 100 });
      await model.optimizerStep(hyper);
      await model.forward(batch);
      const session = model.createSession(4);
      await session.append([1, 2]);
      await session.append([3]);
      session.dispose();
      counts.push(tf.memory().numTensors);
    }
    expect(counts[2]).toBe(counts[1]);
    expect(counts[3]).toBe(counts[1]);
    model.dispose();
    expect(tf.memory().numTensors).toBe(before);

    // Without anything to differentiate (lora mode, no adapter) forwardBackward keeps nothing either.
    const plain = await loadRandomModel(config, { seed: 53 });
    await plain.forwardBackward(batch, { lossScale: 1, dropoutSeed: 0 });
    const afterFirst = tf.memory().numTensors;
    await plain.forwardBackward(batch, { lossScale: 1, dropoutSeed: 0 });
    expect(tf.memory().numTensors).toBe(afterFirst);
    plain.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(() => model.getTensor('model.norm.weight')).toThrow(/disposed/);
  });
});

describe('train modes and the optimizer step', () => {
  const hyper = { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 0 };

  it('trains only the adapter in lora mode and everything in full mode', async () => {
    const config = randomLlamaConfig({ mlpBias: true });
    const lora: LoraConfig = { rank: 2, alpha: 4, useRslora: false, dropout: 0, targetModules: ['k_proj'], seed: 7 };
    const model = await track(loadRandomModel(config, { seed: 61, lora }));
    const adapterNames = model.tensorNames('adapter');
    expect(adapterNames).toEqual([
      'model.layers.0.self_attn.k_proj.lora_A.weight',
      'model.layers.0.self_attn.k_proj.lora_B.weight',
      'model.layers.1.self_attn.k_proj.lora_A.weight',
      'model.layers.1.self_attn.k_proj.lora_B.weight',
    ]);
    expect(model.trainMode).toBe('lora');
    expect(model.tensorNames('trainable')).toEqual(adapterNames);
    expect(model.tensorShape('model.layers.0.self_attn.k_proj.lora_B.weight')).toEqual([16, 2]);
    expect(() => model.getGrad('model.norm.weight')).toThrow(/not trainable/);

    const batch = randomTrainBatch(config, { batch: 1, seqLen: 6, seed: 62 });
    const baseBefore = new Map(model.tensorNames('base').map((name) => [name, model.getTensor(name)]));
    await model.forwardBackward(batch, { lossScale: 0.2, dropoutSeed: 0 });
    await model.optimizerStep(hyper);
    for (const [name, values] of baseBefore) expect(model.getTensor(name)).toEqual(values);
    // B starts at zero: after one step it moved (A's gradient was zero, so A only decayed).
    expect(maxAbs(model.getTensor(adapterNames[1]!))).toBeGreaterThan(0);

    model.setTrainMode('full');
    expect(model.tensorNames('trainable')).toEqual([...model.tensorNames('base'), ...adapterNames]);
  });

  it('applies clipping and AdamW per tensor exactly as the reference update, over two steps', async () => {
    const config = randomLlamaConfig({ qkvBias: true });
    const lora: LoraConfig = {
      rank: 2,
      alpha: 4,
      useRslora: true,
      dropout: 0.2,
      targetModules: ['o_proj', 'gate_proj'],
      seed: 8,
    };
    const model = await track(loadRandomModel(config, { seed: 63, lora, randomAdapterSeed: 64 }));
    model.setTrainMode('full');
    const names = model.tensorNames('trainable');
    const { adamWUpdate, clipCoefficient, createAdamWState, globalGradNorm } = await import('./adamw.js');
    const states = new Map(names.map((name) => [name, createAdamWState(model.getTensor(name).length)]));
    const clipped = { ...hyper, maxGradNorm: 0.5 };

    for (const seed of [65, 66]) {
      const batch = randomTrainBatch(config, { batch: 2, seqLen: 5, seed });
      await model.forwardBackward(batch, { lossScale: 1 / 8, dropoutSeed: seed });
      const grads = names.map((name) => model.getGrad(name));
      const values = names.map((name) => model.getTensor(name));
      const norm = globalGradNorm(grads);
      expect(norm).toBeGreaterThan(clipped.maxGradNorm); // clipping is exercised
      const factor = clipCoefficient(norm, clipped.maxGradNorm);
      names.forEach((name, i) => {
        const g = grads[i]!.map((x) => x * factor);
        adamWUpdate(values[i]!, g, states.get(name)!, clipped, model.tensorShape(name).length >= 2);
      });

      const { gradNorm } = await model.optimizerStep(clipped);
      expect(gradNorm).toBe(norm);
      names.forEach((name, i) => expect(model.getTensor(name)).toEqual(values[i]));
      expect(names.every((name) => maxAbs(model.getGrad(name)) === 0)).toBe(true);
    }
  });

  it('decays matrices and embeddings but not norms and biases', async () => {
    const config = randomLlamaConfig({ qkvBias: true });
    const model = await track(loadRandomModel(config, { seed: 67 }));
    model.setTrainMode('full');
    const before = new Map(model.tensorNames('base').map((name) => [name, model.getTensor(name)]));
    // lossScale 0: zero gradients, so the Adam term is 0 / (0 + eps) = 0 and only decay acts.
    await model.forwardBackward(randomTrainBatch(config, { batch: 1, seqLen: 4, seed: 68 }), {
      lossScale: 0,
      dropoutSeed: 0,
    });
    await model.optimizerStep(hyper);
    for (const [name, values] of before) {
      const decayed = model.tensorShape(name).length >= 2;
      const expected = decayed ? values.map((x) => x - hyper.lr * hyper.weightDecay * x) : values;
      expect(model.getTensor(name), name).toEqual(expected);
    }
  });
});
