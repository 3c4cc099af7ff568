/**
 * The training job spec: one zod schema read by the CLI (`expertune train --config`), and later by
 * the API and the console. Keys are snake_case, as in the YAML files and JSON APIs users know.
 */
import { z } from 'zod';

export const PROJECTION_NAMES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

const positiveInt = z.number().int().positive();

export const loraSchema = z
  .strictObject({
    rank: positiveInt.default(16).describe('Rank r of each adapter'),
    alpha: z.number().positive().default(32).describe('Scale numerator: the update is (alpha / r)·B·A·x'),
    dropout: z.number().min(0).lt(1).default(0).describe('Dropout on the adapter input'),
    use_rslora: z.boolean().default(false).describe('Scale by alpha / sqrt(r) (rank-stabilised LoRA)'),
    target_modules: z
      .array(z.enum(PROJECTION_NAMES))
      .min(1)
      .default([...PROJECTION_NAMES])
      .describe('Projections to adapt (all 7 by default)'),
  })
  .prefault({});

export const dataSchema = z.strictObject({
  train: z.string().min(1).describe('JSONL file: one {"text": ...} or {"ids": [...]} object per line'),
  max_seq_len: positiveInt.default(512).describe('Longer rows are truncated'),
  add_eos: z.boolean().default(true).describe('Append the end-of-sequence token to each text row'),
});

export const trainingSchema = z
  .strictObject({
    max_steps: positiveInt.optional().describe('Optimizer updates to run (overrides epochs)'),
    epochs: z.number().positive().default(1).describe('Passes over the data when max_steps is not set'),
    micro_batch_size: positiveInt.default(4).describe('Rows per forward/backward'),
    grad_accumulation: positiveInt.default(1).describe('Micro-batches per optimizer update'),
    recompute: z.boolean().default(false).describe('Recompute activations in backward (less memory)'),
    log_every: positiveInt.default(1).describe('Report metrics every N steps'),
  })
  .prefault({});

export const optimizerSchema = z
  .strictObject({
    lr: z.number().positive().default(2e-4),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.999),
    eps: z.number().positive().default(1e-8),
    weight_decay: z.number().min(0).default(0),
    max_grad_norm: z.number().min(0).default(1).describe('Global-norm clipping; 0 disables it'),
  })
  .prefault({});

export const scheduleSchema = z
  .strictObject({
    kind: z.enum(['constant', 'linear', 'cosine']).default('cosine'),
    warmup_steps: z.number().int().min(0).default(0),
    min_lr_ratio: z.number().min(0).max(1).default(0),
  })
  .prefault({});

export const trainConfigSchema = z.strictObject({
  model: z.string().min(1).describe('Hugging Face model directory (config.json, *.safetensors, tokenizer.json)'),
  method: z.enum(['lora', 'full']).default('lora'),
  engine: z.enum(['native', 'tfjs']).default('native'),
  threads: z.number().int().min(0).default(0).describe('Native engine threads, 0 = all cores'),
  seed: z.number().int().min(0).max(0xffffffff).default(0),
  lora: loraSchema,
  data: dataSchema,
  training: trainingSchema,
  optimizer: optimizerSchema,
  schedule: scheduleSchema,
  output_dir: z.string().min(1),
  export_dtype: z.enum(['F32', 'BF16', 'F16']).default('F32'),
});

export type TrainConfig = z.output<typeof trainConfigSchema>;
export type TrainConfigInput = z.input<typeof trainConfigSchema>;

export class ConfigError extends Error {
  constructor(
    message: string,
    readonly issues: Array<{ path: string; message: string }>,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Validates and fills defaults; every problem is reported with its key path. */
export function parseTrainConfig(input: unknown, source = 'config'): TrainConfig {
  const result = trainConfigSchema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => ({
    path: issue.path.map(String).join('.') || '(root)',
    message: issue.message,
  }));
  const lines = issues.map((i) => `  ${i.path}: ${i.message}`).join('\n');
  throw new ConfigError(`${source} is not a valid training config:\n${lines}`, issues);
}
