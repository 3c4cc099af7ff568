import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { LoraConfig } from '../types.js';
import { randomLlamaConfig, randomTrainBatch } from '../testing/random-model.js';
import { createTfjsModel, type TfjsModel } from './tfjs-model.js';
import { ALL_PROJECTIONS, loadRandomModel, maxAbsDifference, relativeL2 } from './model-fixtures.test-util.js';

const models: TfjsModel[] = [];
afterAll(() => models.forEach((model) => model.dispose()));

describe('the wasm backend', () => {
  it('computes the same logits, gradients and updates as the cpu backend, models side by side', async () => {
    const config = randomLlamaConfig({ qkvBias: true, slidingWindow: 4 });
    const lora: LoraConfig = {
      rank: 4,
      alpha: 8,
      useRslora: false,
      dropout: 0.1,
      targetModules: ALL_PROJECTIONS,
      seed: 1,
    };
    const cpu = await loadRandomModel(config, { seed: 2, lora, randomAdapterSeed: 3 });
    const wasm = await loadRandomModel(config, { seed: 2, lora, randomAdapterSeed: 3, backend: 'wasm' });
    models.push(cpu, wasm);
    expect(cpu.backendName).toBe('cpu');
    expect(wasm.backendName).toBe('wasm');
    expect(wasm.engineName).toBe('tfjs-wasm');

    const batch = randomTrainBatch(config, { batch: 2, seqLen: 6, seed: 4 });
    expect(maxAbsDifference(await wasm.forward(batch), await cpu.forward(batch))).toBeLessThan(1e-4);
    expect(tf.getBackend()).toBe('cpu'); // each call switches to its model's backend

    const stats = [];
    for (const model of [cpu, wasm]) {
      model.setTrainMode('full');
      stats.push(await model.forwardBackward(batch, { lossScale: 0.1, dropoutSeed: 9, needInputGrad: true }));
    }
    const [cpuStats, wasmStats] = stats;
    expect(Math.abs(wasmStats!.lossSum - cpuStats!.lossSum)).toBeLessThan(1e-4);
    expect([wasmStats!.tokens, wasmStats!.correct]).toEqual([cpuStats!.tokens, cpuStats!.correct]);
    for (const name of cpu.tensorNames('trainable')) {
      expect(relativeL2(wasm.getGrad(name), cpu.getGrad(name)), name).toBeLessThan(1e-4);
    }
    expect(relativeL2(wasm.inputGrad(), cpu.inputGrad())).toBeLessThan(1e-4);

    const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 };
    const [cpuStep, wasmStep] = [await cpu.optimizerStep(hyper), await wasm.optimizerStep(hyper)];
    expect(Math.abs(wasmStep.gradNorm - cpuStep.gradNorm)).toBeLessThan(1e-4 * cpuStep.gradNorm);
    expect(maxAbsDifference(await wasm.forward(batch), await cpu.forward(batch))).toBeLessThan(1e-3);
  });
});

describe('the tensorflow backend', () => {
  it('is used when @tensorflow/tfjs-node-gpu loads, else falls back to cpu with a warning', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      const model = await createTfjsModel(randomLlamaConfig(), { backend: 'tensorflow' });
      models.push(model);
      if (model.backendName === 'cpu') {
        expect(warn).toHaveBeenCalledWith(expect.stringMatching(/'tensorflow' unavailable.*using 'cpu'/));
      } else {
        expect(model.backendName).toBe('tensorflow');
      }
      const logits = await model.forward({ ids: Int32Array.from([1, 2]), batch: 1, seqLen: 2 });
      expect(logits.every((x) => x === 0)).toBe(true); // all-zero weights
    } finally {
      warn.mockRestore();
    }
  });
});
