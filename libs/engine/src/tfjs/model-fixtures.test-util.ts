/** Shared set-up of the tfjs engine tests: tiny random models loaded into a TfjsModel. */
import type { LlamaConfig } from '@expertune/formats';
import type { LoraConfig } from '../types.js';
import { randomAdapterWeights, randomWeights, type RandomWeightsOptions } from '../testing/random-model.js';
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

export const ALL_PROJECTIONS: LoraConfig['targetModules'] = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
];
