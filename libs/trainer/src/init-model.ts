/**
 * `expertune init-model`: a randomly initialised Llama-architecture model in Hugging Face layout
 * (config.json, model.safetensors, tokenizer.json with a byte-level tokenizer), for tests, smoke
 * runs and the demo when no pretrained checkpoint is at hand. Nothing is downloaded.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { randomWeights } from '@expertune/engine';
import {
  byteLevelTokenizerConfig,
  byteLevelTokenizerJson,
  createTokenizer,
  expectedTensorShapes,
  parseModelConfig,
  writeSafetensors,
} from '@expertune/formats';

export const MODEL_PRESETS = {
  tiny: {
    hidden_size: 64,
    intermediate_size: 176,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
  },
  small: {
    hidden_size: 256,
    intermediate_size: 704,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    num_key_value_heads: 4,
  },
  base: {
    hidden_size: 512,
    intermediate_size: 1408,
    num_hidden_layers: 8,
    num_attention_heads: 8,
    num_key_value_heads: 4,
  },
} as const;
export type ModelPreset = keyof typeof MODEL_PRESETS;

export function initRandomModel(dir: string, preset: ModelPreset, seed: number): void {
  const shape = MODEL_PRESETS[preset];
  if (!shape) throw new RangeError(`unknown preset '${preset}': use one of ${Object.keys(MODEL_PRESETS).join(', ')}`);
  // Weights of std 1/sqrt(fan-in), norms at 1: activations and logits of order one, like a trained
  // checkpoint. (HF's 0.02 pretraining init would do for full training, but its small frozen
  // lm_head caps the logits so low that an adapter trained on top cannot fit its data.)
  writeRandomModel(dir, {
    shape: {
      ...shape,
      max_position_embeddings: 1024,
      rope_theta: 10000,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
    },
    tokenizerJson: byteLevelTokenizerJson(),
    tokenizerConfig: byteLevelTokenizerConfig(),
    seed,
  });
}

export interface RandomModelSpec {
  /** config.json's shape keys (hidden_size, …, tie_word_embeddings). */
  shape: {
    hidden_size: number;
    intermediate_size: number;
    num_hidden_layers: number;
    num_attention_heads: number;
    num_key_value_heads: number;
    max_position_embeddings: number;
    rope_theta: number;
    rms_norm_eps: number;
    tie_word_embeddings: boolean;
  };
  tokenizerJson: unknown;
  tokenizerConfig: unknown;
  seed: number;
  /** Linear and embedding weights' std; default 1/sqrt(fan-in). */
  weightStd?: number;
}

/** Writes a seeded random Llama (config.json, model.safetensors, tokenizer files) to `dir`. */
export function writeRandomModel(dir: string, spec: RandomModelSpec): void {
  const tokenizer = createTokenizer(spec.tokenizerJson, spec.tokenizerConfig);
  const configJson = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: tokenizer.vocabSize,
    ...spec.shape,
    hidden_act: 'silu',
    bos_token_id: tokenizer.bosTokenId,
    eos_token_id: tokenizer.eosTokenId,
    torch_dtype: 'float32',
  };
  const config = parseModelConfig(configJson);
  const weights = randomWeights(config, spec.seed, {
    biasStd: 0,
    normStd: 0,
    ...(spec.weightStd === undefined ? {} : { weightStd: spec.weightStd }),
  });
  const shapes = expectedTensorShapes(config);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(spec.tokenizerJson) + '\n');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(spec.tokenizerConfig, null, 2) + '\n');
  writeSafetensors(
    join(dir, 'model.safetensors'),
    new Map([...weights].map(([name, data]) => [name, { dtype: 'F32', shape: shapes.get(name)!, data }] as const)),
    { format: 'pt' },
  );
}
