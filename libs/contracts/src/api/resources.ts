/** Datasets, base models, adapters and checkpoints as the API returns them. */
import { z } from 'zod';

import { DATA_FORMATS } from '../train-config.js';
import { resourceId, unixSeconds } from './common.js';

export const DATASET_STATUSES = ['ready', 'invalid'] as const;

export const datasetTokenStatsSchema = z.strictObject({
  rows: z.number().int().min(0),
  bad_rows: z.number().int().min(0),
  tokens: z
    .number()
    .int()
    .min(0)
    .nullable()
    .describe('Total tokens with the tokenizer of `tokenized_with`; null when not counted'),
  mean_tokens: z.number().min(0).nullable(),
  max_tokens: z.number().int().min(0).nullable(),
  tokenized_with: z.string().nullable().describe('Model id whose tokenizer counted the tokens'),
  formats: z.record(z.string(), z.number().int().min(0)).describe('Rows per detected format'),
});

export const datasetSchema = z.strictObject({
  id: resourceId,
  object: z.literal('dataset'),
  filename: z.string(),
  bytes: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  format: z.enum(DATA_FORMATS).describe('The format found in the file (auto when rows mix formats)'),
  created_at: unixSeconds,
  stats: datasetTokenStatsSchema,
  preview: z.array(z.unknown()).optional().describe('The first rows as parsed (GET one dataset only)'),
});
export type Dataset = z.infer<typeof datasetSchema>;

/** One bad row of an upload: the 422 answer lists these under `error.lines`. */
export const datasetProblemSchema = z.strictObject({
  line: z.number().int().min(1),
  field: z.string().nullable(),
  message: z.string(),
});
export type DatasetProblem = z.infer<typeof datasetProblemSchema>;

export const modelRegisterRequestSchema = z.strictObject({
  path: z.string().min(1).describe('Local Hugging Face model directory (config.json, *.safetensors, tokenizer.json)'),
  name: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/, 'names are letters, digits, ".", "_", "-" and "/"')
    .optional()
    .describe('Display name; the directory name when left out'),
});
export type ModelRegisterRequest = z.input<typeof modelRegisterRequestSchema>;

export const modelSchema = z.strictObject({
  id: resourceId,
  object: z.literal('model'),
  name: z.string(),
  path: z.string(),
  architecture: z.string().nullable(),
  parameter_count: z.number().int().min(0),
  created_at: unixSeconds,
  config: z.record(z.string(), z.unknown()).optional().describe('The parsed config.json (inspect only)'),
});
export type Model = z.infer<typeof modelSchema>;

export const adapterSchema = z.strictObject({
  id: resourceId,
  object: z.literal('adapter'),
  job_id: resourceId,
  method: z.string(),
  base_model: z.string(),
  layout: z.string().describe('peft (HF PEFT directory) or expertune-mole (docs/adapter-format.md)'),
  bytes: z.number().int().min(0),
  sha256: z.string().nullable(),
  created_at: unixSeconds,
  files: z.array(z.string()).optional().describe('Files of the export directory (metadata only)'),
});
export type Adapter = z.infer<typeof adapterSchema>;

export const checkpointSchema = z.strictObject({
  id: resourceId,
  object: z.literal('fine_tuning.job.checkpoint'),
  job_id: resourceId,
  step_number: z.number().int().min(0),
  created_at: unixSeconds,
  metrics: z.record(z.string(), z.number()).describe('Metrics at this step (train_loss, valid_loss, …)'),
});
export type Checkpoint = z.infer<typeof checkpointSchema>;

/**
 * An accelerator class this API queues jobs for (GET /v1/accelerators): its queue and what waits
 * in it, so a client can see where a job would wait and whether any worker serves the class.
 */
export const acceleratorClassSchema = z.strictObject({
  id: z.string().describe('The class, as jobs request it (e.g. cpu, cuda-h100)'),
  object: z.literal('accelerator'),
  queue: z.string().describe('The BullMQ queue of the class'),
  queued: z.number().int().min(0).describe('Jobs of the class waiting for a worker'),
  running: z.number().int().min(0).describe('Jobs of the class a worker is training'),
  workers: z
    .number()
    .int()
    .min(0)
    .nullable()
    .describe('Workers connected to the queue now; null when Redis is unreachable'),
});
export type Accelerator = z.infer<typeof acceleratorClassSchema>;
