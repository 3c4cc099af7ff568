/**
 * The pretraining recipe read by `expertune pretrain --config`: which text files, the tokenizer to
 * learn from them, the Llama shape to initialise, and the full-training run (the same training,
 * optimizer and schedule sections as a fine-tuning config). Keys are snake_case like the others.
 */
import { z } from 'zod';

import { positiveInt } from './methods/common.js';
import { ConfigError, evalSchema, optimizerSchema, scheduleSchema, trainingSchema } from './train-config.js';

export const pretrainConfigSchema = z.strictObject({
  text: z
    .array(z.string().min(1))
    .min(1)
    .describe('Plain-text files (UTF-8); blank lines separate paragraphs, which become training rows'),
  output_dir: z
    .string()
    .min(1)
    .describe('Run directory: the initial model, corpus.jsonl, metrics.jsonl, eval.jsonl, run.json'),
  model_dir: z
    .string()
    .min(1)
    .optional()
    .describe('Where the pretrained model goes (Hugging Face layout); default output_dir/model'),
  seed: z.number().int().min(0).max(0xffffffff).default(0).describe('Seeds the initial weights, data order and split'),
  threads: z.number().int().min(0).default(0).describe('Native engine threads, 0 = all cores'),
  tokenizer: z
    .strictObject({
      vocab_size: z.number().int().min(260).default(4096).describe('256 bytes + merges + special tokens'),
      min_frequency: positiveInt.default(2).describe('Pairs seen fewer times are never merged'),
      special_tokens: z
        .array(z.string().min(1))
        .min(2)
        .default(['<s>', '</s>'])
        .describe('Special tokens; the first is BOS, the second EOS'),
    })
    .prefault({}),
  model: z
    .strictObject({
      hidden_size: positiveInt.default(256),
      intermediate_size: positiveInt.default(704),
      num_hidden_layers: positiveInt.default(4),
      num_attention_heads: positiveInt.default(8),
      num_key_value_heads: positiveInt.default(4),
      max_position_embeddings: positiveInt.default(1024),
      rope_theta: z.number().positive().default(10000),
      rms_norm_eps: z.number().positive().default(1e-5),
      tie_word_embeddings: z.boolean().default(true).describe('Share the embedding and the LM head (fewer parameters)'),
      init_std: z
        .number()
        .positive()
        .default(0.02)
        .describe('Standard deviation of the initial linear and embedding weights'),
    })
    .prefault({}),
  data: z
    .strictObject({
      max_seq_len: positiveInt.default(256).describe('Tokens per packed training sequence'),
      chunk_chars: positiveInt
        .default(1000)
        .describe('Paragraphs longer than this are split at sentence ends into rows of at most this many characters'),
      validation_fraction: z.number().min(0).lt(1).default(0.01).describe('Rows held out to measure the eval loss'),
    })
    .prefault({}),
  training: trainingSchema,
  eval: evalSchema,
  optimizer: optimizerSchema,
  schedule: scheduleSchema,
  export_dtype: z.enum(['F32', 'BF16', 'F16']).default('BF16').describe('dtype of the saved model weights'),
});

export type PretrainConfig = z.output<typeof pretrainConfigSchema>;

/** Validates a pretraining recipe and fills defaults; every problem is reported with its key path. */
export function parsePretrainConfig(input: unknown, source = 'config'): PretrainConfig {
  const result = pretrainConfigSchema.safeParse(input);
  if (result.success) return result.data;
  throw ConfigError.fromZod(result.error, `${source} is not a valid pretraining config`);
}
