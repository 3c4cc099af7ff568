/**
 * The training job spec: one zod schema read by the CLI (`expertune train --config`), and later by
 * the API and the console. Keys are snake_case, as in the YAML files and JSON APIs users know.
 */
import { z } from 'zod';

import { positiveInt } from './methods/common.js';
import { dynmoleSchema, type DynmoleConfig } from './methods/dynmole.js';
import { flyloraSchema, type FlyloraConfig } from './methods/flylora.js';
import { loraSchema, type LoraMethodConfig } from './methods/lora.js';
import { loramoeSchema, type LoramoeConfig } from './methods/loramoe.js';
import { molaSchema, type MolaConfig } from './methods/mola.js';

export { PROJECTION_NAMES } from './methods/common.js';
export { loraSchema } from './methods/lora.js';

export const TRAIN_METHODS = ['lora', 'full', 'mola', 'loramoe', 'dynmole', 'flylora'] as const;
export type TrainMethod = (typeof TRAIN_METHODS)[number];
/** The methods that train an adapter (every one but `full`), each configured by its own section. */
export const ADAPTER_METHOD_NAMES = ['lora', 'mola', 'loramoe', 'dynmole', 'flylora'] as const;
export type AdapterMethodName = (typeof ADAPTER_METHOD_NAMES)[number];
/** The mixture methods: their export is the expertune-mole layout (docs/adapter-format.md). */
export const MIXTURE_METHOD_NAMES = ['mola', 'loramoe', 'dynmole', 'flylora'] as const;
export type MixtureMethodName = (typeof MIXTURE_METHOD_NAMES)[number];

export const DATA_FORMATS = ['auto', 'text', 'alpaca', 'chat', 'prompt_completion', 'ids'] as const;

const column = (what: string) => z.string().min(1).optional().describe(`The file's name for ${what}`);

export const dataColumnsSchema = z
  .strictObject({
    text: column('"text"'),
    ids: column('"ids"'),
    instruction: column('alpaca\'s "instruction"'),
    input: column('alpaca\'s "input"'),
    output: column('alpaca\'s "output"'),
    prompt: column('"prompt"'),
    completion: column('"completion"'),
    messages: column('"messages" (OpenAI chat)'),
    conversations: column('"conversations" (ShareGPT chat)'),
    task: column('"task"'),
    task_type: column('"task_type"'),
  })
  .prefault({});

export const dataSchema = z
  .strictObject({
    train: z
      .string()
      .min(1)
      .describe(
        'JSONL file, one row per line: text, ids, alpaca, prompt/completion or chat (docs/data.md), optionally with "task" and "task_type": 0 or 1',
      ),
    validation: z
      .string()
      .min(1)
      .optional()
      .describe('Held-out JSONL file (same formats), evaluated during training (training.eval_every)'),
    validation_fraction: z
      .number()
      .min(0)
      .lt(1)
      .default(0)
      .describe('Fraction of the training rows held out for validation, chosen with the seed (not with validation)'),
    format: z
      .enum(DATA_FORMATS)
      .default('auto')
      .describe('Row format, or auto: detected per row (chat, then alpaca, then prompt/completion, then text or ids)'),
    columns: dataColumnsSchema.describe('Column mapping: our field name → the name used in the file'),
    train_on_inputs: z
      .boolean()
      .default(false)
      .describe('Loss on every token; false: on completions (assistant turns) only'),
    packing: z
      .boolean()
      .default(false)
      .describe('Concatenate rows into sequences of up to max_seq_len tokens; no target crosses a row boundary'),
    on_bad_rows: z
      .enum(['skip', 'fail'])
      .default('skip')
      .describe('skip: report every bad row by line and field, train on the good ones; fail: refuse the file'),
    max_seq_len: positiveInt.default(512).describe('Longer rows are truncated'),
    add_eos: z.boolean().default(true).describe('Append the end-of-sequence token to each text row'),
  })
  .refine((data) => data.validation === undefined || data.validation_fraction === 0, {
    message: 'give validation or validation_fraction, not both',
    path: ['validation_fraction'],
  });

export const trainingSchema = z
  .strictObject({
    max_steps: positiveInt.optional().describe('Optimizer updates to run (overrides epochs)'),
    epochs: z.number().positive().default(1).describe('Passes over the data when max_steps is not set'),
    micro_batch_size: positiveInt.default(4).describe('Rows per forward/backward'),
    grad_accumulation: positiveInt.default(1).describe('Micro-batches per optimizer update'),
    recompute: z.boolean().default(false).describe('Recompute activations in backward (less memory)'),
    log_every: positiveInt.default(1).describe('Report metrics every N steps'),
    eval_every: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe(
        'Evaluate the validation data every N steps (eval.jsonl); 0 = only once, after the last step. No validation data: no evaluation',
      ),
    checkpoint_every: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe('Write a resumable checkpoint (output_dir/checkpoints/step-N) every N steps; 0 = none'),
    keep_checkpoints: z
      .number()
      .int()
      .min(0)
      .default(3)
      .describe('Keep the last K checkpoints (and the one with the best eval loss when evaluation runs); 0 = keep all'),
  })
  .prefault({});

export const evalSchema = z
  .strictObject({
    max_answer_tokens: z
      .number()
      .int()
      .min(0)
      .default(16)
      .describe('Rows whose reference answer has at most this many tokens are scored by greedy exact match; 0 = none'),
    max_generate_rows: z
      .number()
      .int()
      .min(0)
      .default(64)
      .describe('Generate at most this many validation rows per evaluation (the first eligible ones, in file order)'),
    batch_size: positiveInt.default(8).describe('Validation sequences per forward when computing the eval loss'),
  })
  .prefault({});

export const optimizerSchema = z
  .strictObject({
    lr: z.number().positive().default(2e-4).describe('Peak learning rate'),
    beta1: z.number().min(0).lt(1).default(0.9).describe('AdamW first-moment decay'),
    beta2: z.number().min(0).lt(1).default(0.999).describe('AdamW second-moment decay'),
    eps: z.number().positive().default(1e-8).describe('AdamW denominator epsilon'),
    weight_decay: z.number().min(0).default(0).describe('Decoupled weight decay'),
    max_grad_norm: z.number().min(0).default(1).describe('Global-norm clipping; 0 disables it'),
  })
  .prefault({});

export const scheduleSchema = z
  .strictObject({
    kind: z.enum(['constant', 'linear', 'cosine']).default('cosine').describe('Learning-rate decay after warmup'),
    warmup_steps: z.number().int().min(0).default(0).describe('Linear warmup from 0 over this many steps'),
    min_lr_ratio: z.number().min(0).max(1).default(0).describe('Final learning rate as a fraction of lr'),
  })
  .prefault({});

export const trainConfigSchema = z.strictObject({
  model: z.string().min(1).describe('Hugging Face model directory (config.json, *.safetensors, tokenizer.json)'),
  method: z
    .enum(TRAIN_METHODS)
    .default('lora')
    .describe('lora, full fine-tuning, or a mixture (mola, loramoe, dynmole, flylora); each reads its own section'),
  engine: z.enum(['native', 'tfjs']).default('native').describe('native (C++ core) or tfjs (the reference engine)'),
  threads: z.number().int().min(0).default(0).describe('Native engine threads, 0 = all cores'),
  seed: z
    .number()
    .int()
    .min(0)
    .max(0xffffffff)
    .default(0)
    .describe('Seeds the adapter initialisation, data order and dropout'),
  lora: loraSchema,
  mola: molaSchema.optional(),
  loramoe: loramoeSchema.optional(),
  dynmole: dynmoleSchema.optional(),
  flylora: flyloraSchema.optional(),
  data: dataSchema,
  training: trainingSchema,
  eval: evalSchema,
  optimizer: optimizerSchema,
  schedule: scheduleSchema,
  output_dir: z.string().min(1).describe('Run directory: run.json, metrics.jsonl, final/, export/'),
  export_dtype: z.enum(['F32', 'BF16', 'F16']).default('F32').describe('dtype of the exported tensors'),
});

type ParsedTrainConfig = z.output<typeof trainConfigSchema>;
/** A parsed config (`parseTrainConfig` also fills the selected mixture method's section with its defaults). */
export type TrainConfig = ParsedTrainConfig;
export type TrainConfigInput = z.input<typeof trainConfigSchema>;

export class ConfigError extends Error {
  constructor(
    message: string,
    readonly issues: Array<{ path: string; message: string }>,
  ) {
    super(message);
    this.name = 'ConfigError';
  }

  /** One line per problem, each with its key path. */
  static fromZod(error: z.ZodError, heading: string): ConfigError {
    const issues = error.issues.map((issue) => ({
      path: issue.path.map(String).join('.') || '(root)',
      message: issue.message,
    }));
    const lines = issues.map((i) => `  ${i.path}: ${i.message}`).join('\n');
    return new ConfigError(`${heading}:\n${lines}`, issues);
  }
}

/** Validates and fills defaults; every problem is reported with its key path. */
export function parseTrainConfig(input: unknown, source = 'config'): TrainConfig {
  const result = trainConfigSchema.safeParse(input);
  if (result.success) return withMethodSection(result.data);
  throw ConfigError.fromZod(result.error, `${source} is not a valid training config`);
}

/** Each adapter method's section, by method name. */
export interface MethodSections {
  lora: LoraMethodConfig;
  mola: MolaConfig;
  loramoe: LoramoeConfig;
  dynmole: DynmoleConfig;
  flylora: FlyloraConfig;
}

/** The schema of each adapter method's config section, by method name. */
export const METHOD_SECTION_SCHEMAS = {
  lora: loraSchema,
  mola: molaSchema,
  loramoe: loramoeSchema,
  dynmole: dynmoleSchema,
  flylora: flyloraSchema,
} as const;

/** Fills the selected method's section with its defaults when the config leaves it out. */
function withMethodSection(config: ParsedTrainConfig): TrainConfig {
  switch (config.method) {
    case 'mola':
    case 'loramoe':
    case 'dynmole':
    case 'flylora':
      if (config[config.method] === undefined)
        return { ...config, [config.method]: METHOD_SECTION_SCHEMAS[config.method].parse({}) };
      return config;
    default:
      return config;
  }
}

/**
 * The adapter method of a config and its section (rank, alpha, dropout, targets and the method's
 * own settings), defaults filled; null for full fine-tuning. Sections of other methods are ignored.
 */
export function adapterSection(
  config: TrainConfig,
): { [M in keyof MethodSections]: { method: M; section: MethodSections[M] } }[keyof MethodSections] | null {
  switch (config.method) {
    case 'full':
      return null;
    case 'lora':
      return { method: 'lora', section: config.lora };
    case 'mola':
      return { method: 'mola', section: config.mola ?? molaSchema.parse({}) };
    case 'loramoe':
      return { method: 'loramoe', section: config.loramoe ?? loramoeSchema.parse({}) };
    case 'dynmole':
      return { method: 'dynmole', section: config.dynmole ?? dynmoleSchema.parse({}) };
    case 'flylora':
      return { method: 'flylora', section: config.flylora ?? flyloraSchema.parse({}) };
  }
}
