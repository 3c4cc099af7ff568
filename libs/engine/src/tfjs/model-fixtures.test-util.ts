/** Shared set-up of the tfjs engine tests: tiny random models loaded into a TfjsModel. */
import type { LlamaConfig } from '@expertune/formats';
import { PROJECTIONS, type AdapterConfig, type LoraConfig } from '../types.js';
import { hash3, uniform } from '../rng.js';
import { adapterTensorShapes } from '../methods/index.js';
import { hashName, randomAdapterWeights, randomWeights, type RandomWeightsOptions } from '../testing/random-model.js';
import { createTfjsModel, type TfjsModel } from './tfjs-model.js';
import type { TfjsBackendName } from './backend.js';

export interface FixtureOptions {
  seed?: number;
  weights?: RandomWeightsOptions;
  lora?: LoraConfig;
  /** Overwrite the adapter (B = 0 at init) with random values from this seed. */
  randomAdapterSeed?: number;
  backend?: TfjsBackendName;
}

export async function loadRandomModel(config: LlamaConfig, options: FixtureOptions = {}): Promise<TfjsModel> {
  const model = await createTfjsModel(config, options.backend === undefined ? {} : { backend: options.backend });
  for (const [name, values] of randomWeights(config, options.seed ?? 1, options.weights)) model.setTensor(name, values);
  if (options.lora !== undefined) {
    model.attachLora(options.lora);
    if (options.randomAdapterSeed !== undefined) {
      for (const [name, values] of randomAdapterWeights(config, options.lora, options.randomAdapterSeed))
        model.setTensor(name, values);
    }
  }
  return model;
}

export function maxAbs(values: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i]!));
  return max;
}

export { maxAbsDifference, relativeL2 } from '../testing/compare.js';

export const ALL_PROJECTIONS: LoraConfig['targetModules'] = [...PROJECTIONS];

export interface MethodFixtureOptions {
  /** Seed of the base weights (default 1). */
  seed?: number;
  /** Overwrite B (and routers, and mixture A) with random values from this seed (B = 0 at init). */
  adapterSeed?: number;
  /** Router standard deviation in units of 1 / sqrt(in) (default 1): larger values sharpen the routing. */
  routerScale?: number;
  /** Standard deviation of a random FlyLoRA bias (default 0: the bias stays 0). */
  biasStd?: number;
}

/**
 * Random adapter tensors of any method: `A` (not FlyLoRA's frozen sparse one) uniform with std
 * `1 / sqrt(in)`, `B` with std `0.1 / sqrt(r)`, routers with std `routerScale / sqrt(in)`, FlyLoRA's
 * bias with std `biasStd` (only when positive).
 */
export function randomMethodAdapterWeights(
  config: LlamaConfig,
  adapter: AdapterConfig,
  seed: number,
  options: Pick<MethodFixtureOptions, 'routerScale' | 'biasStd'> = {},
): Map<string, Float32Array> {
  const weights = new Map<string, Float32Array>();
  for (const [name, info] of adapterTensorShapes(config, adapter)) {
    const count = info.shape.reduce((a, b) => a * b, 1);
    let std: number;
    if (name.endsWith('.router.weight')) std = (options.routerScale ?? 1) / Math.sqrt(info.shape[1]!);
    else if (name.endsWith('.lora_B.weight')) std = 0.1 / Math.sqrt(adapter.rank);
    else if (name.endsWith('.topk_bias')) std = options.biasStd ?? 0;
    else if (adapter.method !== 'flylora') std = 1 / Math.sqrt(info.shape[1]!);
    else continue; // FlyLoRA's A keeps its sparse initialisation
    if (std === 0) continue;
    const salt = hashName(name);
    const halfWidth = Math.sqrt(3) * std;
    weights.set(
      name,
      Float32Array.from({ length: count }, (_, i) => (2 * uniform(hash3(seed, salt, i)) - 1) * halfWidth),
    );
  }
  return weights;
}

/** A random base model with a fresh adapter of any method, optionally randomised. */
export async function loadMethodModel(
  config: LlamaConfig,
  adapter: AdapterConfig,
  options: MethodFixtureOptions = {},
): Promise<TfjsModel> {
  const model = await loadRandomModel(config, { seed: options.seed ?? 1 });
  model.attachAdapter(adapter);
  if (options.adapterSeed !== undefined) {
    for (const [name, values] of randomMethodAdapterWeights(config, adapter, options.adapterSeed, options))
      model.setTensor(name, values);
  }
  return model;
}
