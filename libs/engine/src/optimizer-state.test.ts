/**
 * Checkpointing the optimizer: the AdamW state read from one model and restored into a fresh one
 * (with the trainable tensors and the update count) continues bit for bit like the model that
 * never stopped, on both engines, in adapter and full training; a state of the wrong size is refused.
 */
import { describe, expect, it } from 'vitest';

import { Engine, Model, Optimizer, type EngineName, type OptimizerConfig } from './engine.js';
import { randomLlamaConfig, randomTrainBatch, randomWeights } from './testing/random-model.js';
import { PROJECTIONS, type LoraConfig } from './types.js';

const config = randomLlamaConfig();
const weights = randomWeights(config, 7);
const LORA: LoraConfig = {
  rank: 4,
  alpha: 8,
  useRslora: false,
  dropout: 0.2,
  targetModules: [...PROJECTIONS],
  seed: 5,
};
const OPTIMIZER: OptimizerConfig = {
  beta1: 0.9,
  beta2: 0.99,
  eps: 1e-8,
  weightDecay: 0.01,
  maxGradNorm: 1,
  seed: 3,
  schedule: { kind: 'cosine', lr: 1e-2, warmupSteps: 1, totalSteps: 4, minLrRatio: 0.1 },
};
const batches = [0, 1, 2, 3].map((i) => [randomTrainBatch(config, { batch: 2, seqLen: 6, seed: 50 + i })]);

async function fresh(engine: EngineName, full: boolean): Promise<Model> {
  const model = await Engine.create(engine).createModel(config);
  for (const [name, values] of weights) model.backend.setTensor(name, values);
  model.attachLora(LORA);
  if (full) model.setTrainMode('full');
  return model;
}

describe.each<[EngineName, boolean]>([
  ['native', false],
  ['native', true],
  ['tfjs', false],
])('optimizer state (%s, full: %s)', (engine, full) => {
  it('save after 2 updates, restore into a new model, 2 more: the uninterrupted weights exactly', async () => {
    const whole = await fresh(engine, full);
    const wholeOptimizer = new Optimizer(whole, OPTIMIZER);
    const wholeLosses = [];
    for (const micro of batches) wholeLosses.push((await wholeOptimizer.step(micro)).loss);

    const first = await fresh(engine, full);
    expect(first.backend.optimizerState().steps).toBe(0);
    const firstOptimizer = new Optimizer(first, OPTIMIZER);
    for (const micro of batches.slice(0, 2)) await firstOptimizer.step(micro);
    const state = first.backend.optimizerState();
    expect(state.steps).toBe(2);
    expect(state.m.length).toBe(first.parameterCount('trainable'));
    const saved = new Map([...first.adapter!.weights(), ...first.trainableTensors()]);
    first.dispose();

    const resumed = await fresh(engine, full);
    expect(() =>
      resumed.backend.setOptimizerState({ steps: 2, m: state.m.subarray(1), v: state.v.subarray(1) }),
    ).toThrow(/values per moment/);
    for (const [name, values] of saved) resumed.backend.setTensor(name, values);
    resumed.backend.setOptimizerState(state);
    const optimizer = new Optimizer(resumed, OPTIMIZER);
    optimizer.resumeAt(2);
    for (const [i, micro] of batches.slice(2).entries()) {
      const result = await optimizer.step(micro);
      expect(result.step).toBe(3 + i);
      expect(result.loss).toBe(wholeLosses[2 + i]);
    }
    for (const [name, values] of whole.trainableTensors())
      expect(resumed.backend.getTensor(name), name).toEqual(values);
    expect(resumed.backend.optimizerState()).toEqual(whole.backend.optimizerState());
    whole.dispose();
    resumed.dispose();
  });
});
