/**
 * A model directory's config.json, as bytes on disk (loadModelConfig) and as parsed JSON
 * (parseModelConfig), then checked against a checkpoint's tensors the way loading a model does.
 * Anything but a supported config is a ModelConfigError naming the field; a config whose weights
 * do not match is a CheckpointError.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  CheckpointError,
  expectedTensorShapes,
  loadModelConfig,
  ModelConfigError,
  parseModelConfig,
  validateCheckpointAgainstConfig,
  type LlamaConfig,
  type TensorDirectory,
} from '@expertune/formats';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';

import { fuzzParser, logFigures } from './harness.js';
import { mutatedBytes, mutatedJson, nested } from './mutations.js';

const ARCHITECTURES = [
  ['LlamaForCausalLM', 'llama'],
  ['MistralForCausalLM', 'mistral'],
  ['Qwen2ForCausalLM', 'qwen2'],
] as const;

/** A supported config.json with small dimensions and a mix of the optional fields. */
const validConfig = fc
  .record({
    arch: fc.constantFrom(...ARCHITECTURES),
    heads: fc.integer({ min: 1, max: 4 }),
    groups: fc.integer({ min: 1, max: 2 }),
    headDim: fc.constantFrom(2, 4, 8),
    layers: fc.integer({ min: 1, max: 3 }),
    vocab: fc.integer({ min: 1, max: 64 }),
    ffn: fc.integer({ min: 1, max: 32 }),
    tie: fc.boolean(),
    scaling: fc.constantFrom('none', 'linear', 'llama3', 'rope_parameters'),
    explicitHeadDim: fc.boolean(),
  })
  .map((c) => ({
    architectures: [c.arch[0]],
    model_type: c.arch[1],
    vocab_size: c.vocab,
    hidden_size: c.heads * c.groups * c.headDim,
    intermediate_size: c.ffn,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads * c.groups,
    num_key_value_heads: c.heads,
    ...(c.explicitHeadDim ? { head_dim: c.headDim } : {}),
    hidden_act: 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: 128,
    tie_word_embeddings: c.tie,
    bos_token_id: 0,
    eos_token_id: [1],
    torch_dtype: 'float32',
    ...(c.scaling === 'linear' ? { rope_scaling: { type: 'linear', factor: 2 } } : {}),
    ...(c.scaling === 'llama3'
      ? {
          rope_scaling: {
            rope_type: 'llama3',
            factor: 8,
            low_freq_factor: 1,
            high_freq_factor: 4,
            original_max_position_embeddings: 64,
          },
        }
      : {}),
    ...(c.scaling === 'rope_parameters' ? { rope_parameters: { rope_theta: 500000, rope_type: 'default' } } : {}),
  }));

/** The tensors of one small model; a config that describes another model must be refused. */
const smallModel = parseModelConfig({
  architectures: ['LlamaForCausalLM'],
  vocab_size: 16,
  hidden_size: 8,
  intermediate_size: 8,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
});
const smallCheckpoint: TensorDirectory = (() => {
  const shapes = expectedTensorShapes(smallModel);
  return {
    names: () => [...shapes.keys()],
    info: (name) => ({ dtype: 'F32', shape: shapes.get(name)! }),
  };
})();

/** What the engines rely on: sizes are positive safe integers, heads divide evenly. */
function checkConfig(config: LlamaConfig): void {
  for (const size of [
    config.vocabSize,
    config.hiddenSize,
    config.intermediateSize,
    config.numLayers,
    config.numHeads,
    config.numKvHeads,
    config.headDim,
    config.maxPositionEmbeddings,
  ])
    expect(Number.isSafeInteger(size) && size > 0).toBe(true);
  expect(config.numHeads % config.numKvHeads).toBe(0);
  expect(config.headDim % 2).toBe(0);
  expect(Number.isFinite(config.rmsNormEps) && config.rmsNormEps > 0).toBe(true);
  expect(Number.isFinite(config.ropeTheta) && config.ropeTheta > 0).toBe(true);
}

const dir = mkdtempSync(join(tmpdir(), 'expertune-fuzz-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Either the parsed JSON object itself, or config.json bytes (mutated text) on disk. */
const input = fc.oneof(
  mutatedJson(validConfig).map((json) => ({ json })),
  mutatedBytes(validConfig.map((json) => new TextEncoder().encode(JSON.stringify(json, null, 2)))).map((bytes) => ({
    bytes,
  })),
);

describe('config.json fuzzing', () => {
  it('parseModelConfig / loadModelConfig: a supported config or a ModelConfigError; weights checked by CheckpointError', async () => {
    logFigures(
      await fuzzParser({
        parser: 'config.json',
        input,
        parse: (value) => {
          let config: LlamaConfig;
          if ('json' in value) config = parseModelConfig(value.json, 'config.json');
          else {
            writeFileSync(join(dir, 'config.json'), value.bytes);
            config = loadModelConfig(dir);
          }
          checkConfig(config);
          validateCheckpointAgainstConfig(config, smallCheckpoint);
          return config;
        },
        expected: [ModelConfigError, CheckpointError],
        shortRuns: 2000,
      }),
    );
  });
});

describe('config.json: found by fuzzing', () => {
  const shrunk = {
    model_type: 'llama',
    hidden_size: 2,
    intermediate_size: 1,
    num_hidden_layers: 1,
    num_attention_heads: 1,
    num_key_value_heads: 1,
  };

  it('a field nested 100,000 deep is a ModelConfigError, not a stack overflow while quoting it', () => {
    const config = { ...shrunk, vocab_size: 1, architectures: nested(100_000, 'array') };
    expect(() => parseModelConfig(config)).toThrow(ModelConfigError);
    expect(() => parseModelConfig(config)).toThrow(/"architectures".*nested too deep to show/);
  });

  it('a size beyond 2^53 is refused (an unsafe integer would hang whatever loops over it)', () => {
    expect(() => parseModelConfig({ ...shrunk, vocab_size: 9007199254740992 })).toThrow(
      /"vocab_size": = 9007199254740992: expected a positive integer/,
    );
    expect(() => parseModelConfig({ ...shrunk, vocab_size: 2 ** 31 })).toThrow(/token ids must fit in 32 bits/);
  });

  it('a config declaring 2^53 − 1 layers is checked against the checkpoint without listing them', () => {
    const config = parseModelConfig({ ...shrunk, vocab_size: 1, num_hidden_layers: Number.MAX_SAFE_INTEGER });
    expect(() => validateCheckpointAgainstConfig(config, smallCheckpoint)).toThrow(
      /layers need \d+ tensors, the checkpoint holds 12/,
    );
  });
});
