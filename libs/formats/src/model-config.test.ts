import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';

import { openCheckpoint } from './checkpoint.js';
import { CheckpointError, ModelConfigError } from './errors.js';
import { tempDir } from './fixtures.test-util.js';
import {
  expectedTensorShapes,
  loadModelConfig,
  parseModelConfig,
  validateCheckpointAgainstConfig,
  type LlamaConfig,
  type TensorDirectory,
} from './model-config.js';
import { writeSafetensors, type TensorToWrite } from './safetensors.js';

function expectConfigError(json: unknown, ...fragments: string[]): ModelConfigError {
  let caught: unknown;
  try {
    parseModelConfig(json, 'models/x/config.json');
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(ModelConfigError);
  const error = caught as ModelConfigError;
  expect(error.message).toContain('models/x/config.json');
  for (const fragment of fragments) expect(error.message).toContain(fragment);
  return error;
}

// Field values as published in the models' config.json files.
const llama31_8b = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.43.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

const mistral7b = {
  architectures: ['MistralForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  use_cache: true,
  vocab_size: 32000,
};

const qwen2_05b = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 131072,
  max_window_layers: 24,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 131072,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const tinyLlama = {
  architectures: ['LlamaForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 5632,
  max_position_embeddings: 2048,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  use_cache: true,
  vocab_size: 32000,
};

const minimal = {
  architectures: ['LlamaForCausalLM'],
  vocab_size: 64,
  hidden_size: 16,
  intermediate_size: 40,
  num_hidden_layers: 2,
  num_attention_heads: 4,
};

describe('parseModelConfig', () => {
  test('Llama 3.1 8B with llama3 rope scaling', () => {
    expect(parseModelConfig(llama31_8b)).toEqual({
      architecture: 'LlamaForCausalLM',
      modelType: 'llama',
      vocabSize: 128256,
      hiddenSize: 4096,
      intermediateSize: 14336,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: {
        type: 'llama3',
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      },
      maxPositionEmbeddings: 131072,
      tieWordEmbeddings: false,
      qkvBias: false,
      oBias: false,
      mlpBias: false,
      slidingWindow: null,
      bosTokenId: 128000,
      eosTokenIds: [128001, 128008, 128009],
      torchDtype: 'bfloat16',
    } satisfies LlamaConfig);
  });

  test('Mistral 7B with a sliding window', () => {
    const config = parseModelConfig(mistral7b);
    expect(config).toMatchObject({
      architecture: 'MistralForCausalLM',
      modelType: 'mistral',
      numKvHeads: 8,
      headDim: 128,
      slidingWindow: 4096,
      maxPositionEmbeddings: 32768,
      ropeScaling: null,
      qkvBias: false,
      eosTokenIds: [2],
      bosTokenId: 1,
    });
    expect(parseModelConfig({ ...mistral7b, sliding_window: null }).slidingWindow).toBeNull();
  });

  test('Qwen2 0.5B: q/k/v biases, tied embeddings, its sliding_window ignored', () => {
    expect(parseModelConfig(qwen2_05b)).toMatchObject({
      architecture: 'Qwen2ForCausalLM',
      modelType: 'qwen2',
      hiddenSize: 896,
      numHeads: 14,
      numKvHeads: 2,
      headDim: 64,
      qkvBias: true,
      oBias: false,
      mlpBias: false,
      tieWordEmbeddings: true,
      slidingWindow: null,
      ropeTheta: 1000000,
      rmsNormEps: 1e-6,
      eosTokenIds: [151643],
    });
  });

  test('TinyLlama 1.1B', () => {
    expect(parseModelConfig(tinyLlama)).toMatchObject({
      numLayers: 22,
      numHeads: 32,
      numKvHeads: 4,
      headDim: 64,
      intermediateSize: 5632,
      ropeScaling: null,
      maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false,
    });
  });

  test('defaults for every optional field', () => {
    expect(parseModelConfig(minimal)).toEqual({
      architecture: 'LlamaForCausalLM',
      modelType: 'llama',
      vocabSize: 64,
      hiddenSize: 16,
      intermediateSize: 40,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 4,
      headDim: 4,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      ropeScaling: null,
      maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false,
      qkvBias: false,
      oBias: false,
      mlpBias: false,
      slidingWindow: null,
      bosTokenId: null,
      eosTokenIds: [],
      torchDtype: null,
    });
  });

  test('explicit head_dim wins over hidden_size / heads', () => {
    expect(parseModelConfig({ ...minimal, head_dim: 8 }).headDim).toBe(8);
  });

  test('Llama attention_bias and mlp_bias', () => {
    expect(parseModelConfig({ ...minimal, attention_bias: true, mlp_bias: true })).toMatchObject({
      qkvBias: true,
      oBias: true,
      mlpBias: true,
    });
    expectConfigError({ ...minimal, attention_bias: 'yes' }, '"attention_bias"', 'true or false');
  });

  test('architecture inferred from model_type when architectures is missing', () => {
    const rest: Record<string, unknown> = { ...mistral7b };
    delete rest['architectures'];
    expect(parseModelConfig(rest).architecture).toBe('MistralForCausalLM');
    expectConfigError({ ...minimal, architectures: undefined }, '"architectures"', 'is missing');
  });

  test.each(['MixtralForCausalLM', 'GemmaForCausalLM', 'Phi3ForCausalLM'])(
    'refuses %s, listing the supported ones',
    (arch) => {
      expectConfigError(
        { ...minimal, architectures: [arch] },
        `architecture ${arch} is not supported`,
        'LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM',
      );
    },
  );

  test('refuses a model_type that contradicts the architecture', () => {
    expectConfigError(
      { ...minimal, model_type: 'mistral' },
      '"model_type"',
      'does not match architecture LlamaForCausalLM',
    );
  });

  test.each(['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'])(
    'missing %s is named',
    (field) => {
      const json: Record<string, unknown> = { ...minimal };
      delete json[field];
      const error = expectConfigError(json, `"${field}"`, 'required field is missing');
      expect(error.field).toBe(field);
    },
  );

  test.each([
    ['hidden_size', 16.5],
    ['hidden_size', '16'],
    ['num_hidden_layers', 0],
    ['vocab_size', -64],
    ['max_position_embeddings', 1e3 + 0.5],
    ['num_key_value_heads', 2.5],
  ])('%s = %j is not a positive integer', (field, value) => {
    expectConfigError(
      { ...minimal, [field]: value },
      `"${field}"`,
      JSON.stringify(value),
      'expected a positive integer',
    );
  });

  test('key/value heads must divide the query heads', () => {
    expectConfigError(
      { ...minimal, num_key_value_heads: 3 },
      '"num_key_value_heads"',
      '= 3 does not divide num_attention_heads = 4',
    );
  });

  test('head dimension must be an integer and even', () => {
    expectConfigError({ ...minimal, hidden_size: 18 }, '"hidden_size"', 'not a multiple of num_attention_heads');
    expectConfigError({ ...minimal, hidden_size: 12 }, '"head_dim"', '= 3 is odd');
    expectConfigError({ ...minimal, head_dim: 5 }, '"head_dim"', '= 5 is odd');
  });

  test('rms_norm_eps and rope_theta must be positive numbers', () => {
    expectConfigError({ ...minimal, rms_norm_eps: 0 }, '"rms_norm_eps"', 'positive number');
    expectConfigError({ ...minimal, rope_theta: '1e4' }, '"rope_theta"', 'positive number');
  });

  test('hidden_act must be silu', () => {
    expectConfigError({ ...minimal, hidden_act: 'gelu' }, '"hidden_act"', '"gelu"', 'silu');
  });

  describe('rope_scaling', () => {
    test('linear, with rope_type or the legacy key type', () => {
      expect(parseModelConfig({ ...minimal, rope_scaling: { rope_type: 'linear', factor: 4 } }).ropeScaling).toEqual({
        type: 'linear',
        factor: 4,
      });
      expect(parseModelConfig({ ...minimal, rope_scaling: { type: 'linear', factor: 2 } }).ropeScaling).toEqual({
        type: 'linear',
        factor: 2,
      });
      expectConfigError({ ...minimal, rope_scaling: { type: 'linear' } }, '"rope_scaling.factor"', 'missing');
    });

    test('default means none', () => {
      expect(parseModelConfig({ ...minimal, rope_scaling: { rope_type: 'default' } }).ropeScaling).toBeNull();
    });

    test.each(['dynamic', 'yarn', 'longrope', 'su'])('refuses %s by name', (ropeType) => {
      expectConfigError({ ...minimal, rope_scaling: { type: ropeType, factor: 2 } }, `"${ropeType}"`, 'not supported');
    });

    test.each(['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'])(
      'llama3 needs %s',
      (key) => {
        const scaling: Record<string, unknown> = { ...llama31_8b.rope_scaling };
        delete scaling[key];
        expectConfigError(
          { ...llama31_8b, rope_scaling: scaling },
          `"rope_scaling.${key}"`,
          'required field is missing',
        );
      },
    );

    test('refuses a non-object rope_scaling', () => {
      expectConfigError({ ...minimal, rope_scaling: 'linear' }, '"rope_scaling"', 'expected an object');
    });

    test('reads the newer rope_parameters block', () => {
      const config = parseModelConfig({
        ...minimal,
        rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 500000 },
      });
      expect(config.ropeTheta).toBe(500000);
      expect(config.ropeScaling).toEqual({ type: 'linear', factor: 2 });
    });
  });

  test('Qwen2 use_sliding_window is refused; layer_types must be full attention', () => {
    expectConfigError({ ...qwen2_05b, use_sliding_window: true }, '"use_sliding_window"', 'not supported');
    expect(() => parseModelConfig({ ...qwen2_05b, layer_types: new Array(24).fill('full_attention') })).not.toThrow();
    expectConfigError(
      { ...qwen2_05b, layer_types: ['full_attention', 'sliding_attention'] },
      '"layer_types"',
      '"sliding_attention"',
    );
  });

  test.each([
    ['quantization_config', { quant_method: 'gptq', bits: 4 }],
    ['attn_logit_softcapping', 50],
    ['final_logit_softcapping', 30],
    ['partial_rotary_factor', 0.5],
    ['num_experts', 8],
    ['num_local_experts', 8],
    ['attention_dropout', 0.1],
  ])('refuses %s, which changes the math', (field, value) => {
    const error = expectConfigError({ ...minimal, [field]: value }, `"${field}"`);
    expect(error.field).toBe(field);
  });

  test('accepts math-neutral settings: pretraining_tp, partial_rotary_factor 1, null soft-capping', () => {
    expect(() =>
      parseModelConfig({ ...minimal, pretraining_tp: 4, partial_rotary_factor: 1, attn_logit_softcapping: null }),
    ).not.toThrow();
  });

  test('token ids and dtype', () => {
    expect(parseModelConfig({ ...minimal, bos_token_id: null, eos_token_id: 7, dtype: 'float16' })).toMatchObject({
      bosTokenId: null,
      eosTokenIds: [7],
      torchDtype: 'float16',
    });
    expectConfigError({ ...minimal, eos_token_id: [1, -2] }, '"eos_token_id"', '-2');
    expectConfigError({ ...minimal, torch_dtype: 16 }, '"torch_dtype"');
  });

  test('refuses non-objects', () => {
    expectConfigError([], 'not a JSON object');
  });
});

describe('loadModelConfig', () => {
  test('reads config.json and names the file in errors', () => {
    const dir = tempDir();
    expect(() => loadModelConfig(dir)).toThrow(/no config\.json/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(tinyLlama));
    expect(loadModelConfig(dir).numLayers).toBe(22);
    writeFileSync(join(dir, 'config.json'), '{"architectures": [');
    expect(() => loadModelConfig(dir)).toThrow(ModelConfigError);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...tinyLlama, vocab_size: undefined }));
    expect(() => loadModelConfig(dir)).toThrow(`${join(dir, 'config.json')}: "vocab_size": required field is missing`);
  });
});

describe('expectedTensorShapes', () => {
  test('a one-layer GQA Llama, untied', () => {
    // V = 10, d = 8, F = 12, H = 4, KV = 2, hd = 2.
    const config = parseModelConfig({
      ...minimal,
      vocab_size: 10,
      hidden_size: 8,
      intermediate_size: 12,
      num_hidden_layers: 1,
      num_key_value_heads: 2,
    });
    expect([...expectedTensorShapes(config)]).toEqual([
      ['model.embed_tokens.weight', [10, 8]],
      ['model.layers.0.input_layernorm.weight', [8]],
      ['model.layers.0.self_attn.q_proj.weight', [8, 8]],
      ['model.layers.0.self_attn.k_proj.weight', [4, 8]],
      ['model.layers.0.self_attn.v_proj.weight', [4, 8]],
      ['model.layers.0.self_attn.o_proj.weight', [8, 8]],
      ['model.layers.0.post_attention_layernorm.weight', [8]],
      ['model.layers.0.mlp.gate_proj.weight', [12, 8]],
      ['model.layers.0.mlp.up_proj.weight', [12, 8]],
      ['model.layers.0.mlp.down_proj.weight', [8, 12]],
      ['model.norm.weight', [8]],
      ['lm_head.weight', [10, 8]],
    ]);
  });

  test('explicit head_dim, Qwen2 biases, tied embeddings', () => {
    const config = parseModelConfig({ ...qwen2_05b, num_hidden_layers: 1, head_dim: 128 });
    const shapes = expectedTensorShapes(config);
    expect(shapes.get('model.layers.0.self_attn.q_proj.weight')).toEqual([14 * 128, 896]);
    expect(shapes.get('model.layers.0.self_attn.q_proj.bias')).toEqual([14 * 128]);
    expect(shapes.get('model.layers.0.self_attn.k_proj.bias')).toEqual([256]);
    expect(shapes.get('model.layers.0.self_attn.v_proj.bias')).toEqual([256]);
    expect(shapes.has('model.layers.0.self_attn.o_proj.bias')).toBe(false);
    expect(shapes.get('model.layers.0.self_attn.o_proj.weight')).toEqual([896, 14 * 128]);
    expect(shapes.has('lm_head.weight')).toBe(false);
    expect(shapes.size).toBe(1 + 12 + 1);
  });

  test('Llama with every bias', () => {
    const config = parseModelConfig({ ...minimal, num_hidden_layers: 1, attention_bias: true, mlp_bias: true });
    const biases = [...expectedTensorShapes(config).keys()].filter((name) => name.endsWith('.bias'));
    expect(biases).toEqual(
      [
        'self_attn.q_proj',
        'self_attn.k_proj',
        'self_attn.v_proj',
        'self_attn.o_proj',
        'mlp.gate_proj',
        'mlp.up_proj',
        'mlp.down_proj',
      ].map((module) => `model.layers.0.${module}.bias`),
    );
  });
});

describe('validateCheckpointAgainstConfig', () => {
  const config = parseModelConfig({ ...minimal, num_hidden_layers: 2 });

  /** A fake checkpoint holding the given name → shape entries (F32 unless said). */
  function fake(shapes: Map<string, number[]>, dtypes: Record<string, string> = {}): TensorDirectory {
    return {
      names: () => [...shapes.keys()],
      info: (name) => ({ dtype: dtypes[name] ?? 'F32', shape: shapes.get(name)! }),
    };
  }

  function expectMismatch(directory: TensorDirectory, ...fragments: string[]): string {
    let caught: unknown;
    try {
      validateCheckpointAgainstConfig(config, directory, 'models/tiny');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(CheckpointError);
    const message = (caught as Error).message;
    expect(message).toContain('models/tiny');
    for (const fragment of fragments) expect(message).toContain(fragment);
    return message;
  }

  test('accepts exactly the expected tensors, ignoring rotary inv_freq buffers', () => {
    const shapes = expectedTensorShapes(config);
    shapes.set('model.layers.0.self_attn.rotary_emb.inv_freq', [2]);
    expect(validateCheckpointAgainstConfig(config, fake(shapes))).toEqual({
      ignored: ['model.layers.0.self_attn.rotary_emb.inv_freq'],
    });
  });

  test('lists missing tensors', () => {
    const shapes = expectedTensorShapes(config);
    shapes.delete('lm_head.weight');
    shapes.delete('model.layers.1.mlp.up_proj.weight');
    expectMismatch(fake(shapes), '2 missing tensor(s)', 'model.layers.1.mlp.up_proj.weight', 'lm_head.weight');
  });

  test('lists unexpected tensors, the first 10 and a count', () => {
    const shapes = expectedTensorShapes(config);
    for (let i = 0; i < 13; i++) shapes.set(`model.layers.${i}.extra.weight`, [1]);
    const message = expectMismatch(
      fake(shapes),
      '13 unexpected tensor(s)',
      'model.layers.9.extra.weight',
      'and 3 more',
    );
    expect(message).not.toContain('model.layers.10.extra.weight');
  });

  test('names the tensor, the shape found and the shape expected', () => {
    const shapes = expectedTensorShapes(config);
    // k_proj is [KV·hd, d] = [4·4, 16]; a checkpoint with 2 KV heads would have [8, 16].
    shapes.set('model.layers.1.self_attn.k_proj.weight', [8, 16]);
    expectMismatch(
      fake(shapes),
      '1 shape mismatch',
      'model.layers.1.self_attn.k_proj.weight: found [8, 16], expected [16, 16]',
    );
  });

  test('refuses integer (quantized) weights', () => {
    const shapes = expectedTensorShapes(config);
    expectMismatch(fake(shapes, { 'model.norm.weight': 'I8' }), 'model.norm.weight: I8', 'quantized');
  });

  test('a tied model may carry an unused lm_head of the right shape', () => {
    const tied: LlamaConfig = { ...config, tieWordEmbeddings: true };
    const shapes = expectedTensorShapes(tied);
    shapes.set('lm_head.weight', [64, 16]);
    expect(validateCheckpointAgainstConfig(tied, fake(shapes)).ignored).toEqual(['lm_head.weight']);
    shapes.set('lm_head.weight', [64, 15]);
    expect(() => validateCheckpointAgainstConfig(tied, fake(shapes))).toThrow(/lm_head.weight: found \[64, 15\]/);
  });

  test('a Qwen2 checkpoint without its q/k/v biases is incomplete', () => {
    const qwen = parseModelConfig({ ...qwen2_05b, num_hidden_layers: 1 });
    const shapes = expectedTensorShapes(qwen);
    shapes.delete('model.layers.0.self_attn.v_proj.bias');
    expect(() => validateCheckpointAgainstConfig(qwen, fake(shapes))).toThrow(/missing.*v_proj\.bias/);
  });

  test('checks a real checkpoint directory', () => {
    const dir = tempDir();
    const tensors: Record<string, TensorToWrite> = {};
    for (const [name, shape] of expectedTensorShapes(config)) {
      tensors[name] = { dtype: 'BF16', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5) };
    }
    writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    const checkpoint = openCheckpoint(dir);
    expect(validateCheckpointAgainstConfig(config, checkpoint).ignored).toEqual([]);
    expect(checkpoint.readFloat32('model.norm.weight')).toEqual(new Float32Array(16).fill(0.5));
    const smaller = parseModelConfig({ ...minimal, num_hidden_layers: 1 });
    expect(() => validateCheckpointAgainstConfig(smaller, checkpoint)).toThrow(/unexpected.*model\.layers\.1\./);
    checkpoint.close();
  });
});
