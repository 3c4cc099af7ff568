/**
 * The console counts trainable parameters as the user types (apps/web/lib/params.ts, a formula on
 * config.json, since the browser cannot load the engine). Here that formula meets the engine's own
 * count, taken from the adapter tensors it would create, for every method on the embedded model.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { parseTrainConfig } from '@expertune/contracts';
import { trainableParametersPerLayer } from '@expertune/engine';
import { parseModelConfig } from '@expertune/formats';
import { adapterConfigFor } from '@expertune/trainer';
import { describe, expect, it } from 'vitest';

import { llamaShape, trainableParameters, type CountMethod } from '../apps/web/lib/params.js';
import { repoRoot } from './helpers.js';

const configJson = JSON.parse(readFileSync(join(repoRoot, 'models', 'expertune-tiny-en', 'config.json'), 'utf8'));
const model = parseModelConfig(configJson);

const SECTIONS: [CountMethod, Record<string, unknown>][] = [
  ['lora', { rank: 4, target_modules: ['q_proj', 'v_proj', 'down_proj'] }],
  ['mola', { rank: 2, num_experts: { preset: 'inverted_triangle', scale: 1 } }],
  ['mola', { rank: 3, num_experts: [2, 2, 3, 5] }],
  ['loramoe', { rank: 4, num_experts: 4 }],
  ['dynmole', { rank: 2, num_experts: 3, target_modules: ['gate_proj', 'up_proj'] }],
  ['flylora', { rank: 16, top_k: 4 }],
];

describe("the console's trainable-parameter count", () => {
  for (const [method, section] of SECTIONS) {
    it(`matches the engine's adapter tensors for ${method} ${JSON.stringify(section)}`, () => {
      const trainConfig = parseTrainConfig({
        model: 'm',
        method,
        output_dir: 'o',
        data: { train: 't.jsonl' },
        [method]: section,
      });
      const adapter = adapterConfigFor(trainConfig, model.numLayers)!;
      const engine = trainableParametersPerLayer(model, adapter).reduce((a, b) => a + b, 0);
      const shape = llamaShape(configJson);
      if (typeof shape === 'string') throw new Error(shape);
      const methodSection = trainConfig[method as keyof typeof trainConfig] as Parameters<
        typeof trainableParameters
      >[2];
      expect(trainableParameters(shape, method, methodSection)).toBe(engine);
      expect(engine).toBeGreaterThan(0);
    });
  }
});
