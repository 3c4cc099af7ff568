/**
 * Adapter directories on import (`--adapter DIR` of logits, generate, eval, info): a PEFT LoRA or
 * an expertune-mole mixture, its adapter_config.json and adapter_model.safetensors broken in every
 * way. Anything but a loadable adapter is a CheckpointError (or the SafetensorsError of its weights).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  ADAPTER_PROJECTIONS,
  CheckpointError,
  expectedAdapterTensors,
  mixtureAdapterConfig,
  parseModelConfig,
  PEFT_PREFIX,
  projectionDims,
  readAdapterExport,
  SafetensorsError,
  serializeSafetensors,
  type AdapterSpec,
  type LoadedAdapterExport,
  type TensorToWrite,
} from '@expertune/formats';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';

import { fuzzParser, logFigures } from './harness.js';
import { mutatedBytes, mutatedJson } from './mutations.js';

const model = parseModelConfig({
  architectures: ['LlamaForCausalLM'],
  vocab_size: 16,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
});

const spec: fc.Arbitrary<AdapterSpec> = fc
  .record({
    method: fc.constantFrom('lora', 'mola', 'loramoe', 'dynmole', 'flylora'),
    rank: fc.integer({ min: 1, max: 3 }),
    targets: fc.subarray([...ADAPTER_PROJECTIONS], { minLength: 1, maxLength: 3 }),
    experts: fc.integer({ min: 1, max: 3 }),
  })
  .map(({ method, rank, targets, experts }): AdapterSpec => {
    const common = { rank, alpha: 2 * rank, useRslora: false, targetModules: targets };
    const numExperts = [experts, experts];
    switch (method) {
      case 'lora':
        return { method, ...common, dropout: 0, layers: null };
      case 'mola':
        return { method, ...common, numExperts, topK: [1, experts] };
      case 'loramoe':
        return { method, ...common, numExperts, groups: 2 };
      case 'dynmole':
        return {
          method,
          ...common,
          numExperts,
          topP: 0.75,
          keepTopK: 1,
          entropyIndex: 1.1,
          entropyThreshold: 0.9,
          entropyEps: 1e-6,
        };
      default:
        return { method: 'flylora', ...common, numLayers: 2, topK: 1, select: 'signed' };
    }
  });

/** adapter_config.json as our exports write it. */
function configOf(adapter: AdapterSpec): Record<string, unknown> {
  if (adapter.method !== 'lora') return mixtureAdapterConfig(adapter, 'models/tiny');
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: 'models/tiny',
    r: adapter.rank,
    lora_alpha: adapter.alpha,
    lora_dropout: 0,
    target_modules: adapter.targetModules,
    bias: 'none',
    use_rslora: false,
    layers_to_transform: null,
  };
}

function weightsOf(adapter: AdapterSpec): Uint8Array {
  const tensors = new Map<string, TensorToWrite>();
  for (const [name, info] of expectedAdapterTensors(adapter, model.numLayers)) {
    const dims = projectionDims(model, info.projection);
    const shape = info.shape.map((d) => (typeof d === 'number' ? d : dims[d]));
    const size = shape.reduce((n, d) => n * d, 1);
    tensors.set(PEFT_PREFIX + name, { dtype: 'F32', shape, data: new Float32Array(size).fill(0.5) });
  }
  return serializeSafetensors(tensors, { format: 'pt' });
}

const valid = spec.map((adapter) => ({ config: configOf(adapter), weights: weightsOf(adapter) }));

/** The config mutated as JSON or as text, the weights as bytes; one or both broken. */
const input = valid.chain(({ config, weights }) =>
  fc.record({
    config: fc.oneof(
      mutatedJson(fc.constant(config)).map((json) => {
        try {
          return JSON.stringify(json) ?? 'null';
        } catch {
          return '['.repeat(100_000);
        }
      }),
      mutatedBytes(fc.constant(new TextEncoder().encode(JSON.stringify(config)))),
    ),
    weights: fc.oneof({ weight: 3, arbitrary: fc.constant(weights) }, mutatedBytes(fc.constant(weights))),
    withModel: fc.boolean(),
  }),
);

function checkLoaded(loaded: LoadedAdapterExport): void {
  for (const [name, shape] of loaded.shapes) {
    expect(loaded.tensors.get(name)?.length).toBe(shape.reduce((n, d) => n * d, 1));
  }
  expect(Number.isSafeInteger(loaded.numLayers)).toBe(true);
}

const root = mkdtempSync(join(tmpdir(), 'expertune-fuzz-adapter-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const dir = join(root, 'adapter');
mkdirSync(dir);

function writeAdapter(config: string | Uint8Array, weights: Uint8Array): void {
  writeFileSync(join(dir, 'adapter_config.json'), config);
  writeFileSync(join(dir, 'adapter_model.safetensors'), weights);
}

describe('adapter directory fuzzing', () => {
  it('readAdapterExport: a loadable adapter or a CheckpointError / SafetensorsError', async () => {
    logFigures(
      await fuzzParser({
        parser: 'adapter directory',
        input,
        parse: ({ config, weights, withModel }) => {
          writeAdapter(config, weights);
          return readAdapterExport(dir, withModel ? { model } : {});
        },
        expected: [CheckpointError, SafetensorsError],
        check: checkLoaded,
        shortRuns: 1000,
      }),
    );
  });
});

describe('adapter directory: found by fuzzing', () => {
  const loramoe: AdapterSpec = {
    method: 'loramoe',
    rank: 1,
    alpha: 2,
    useRslora: false,
    targetModules: ['q_proj'],
    numExperts: [1, 1],
    groups: 2,
  };

  it('an adapter_config.json that is not an object is a CheckpointError, not a TypeError', () => {
    writeAdapter('null', weightsOf(loramoe));
    expect(() => readAdapterExport(dir)).toThrow(CheckpointError);
    expect(() => readAdapterExport(dir)).toThrow('adapter_config.json is not a JSON object (found null)');
  });

  it('a mixture declaring 2^32 experts is refused by count instead of listing its tensors (out of memory)', () => {
    const config = { ...configOf(loramoe), num_experts: [4294967296, 1] };
    writeAdapter(JSON.stringify(config), weightsOf(loramoe));
    const started = performance.now();
    expect(() => readAdapterExport(dir)).toThrow(/has 8589934596 tensors, the file holds 6/);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
