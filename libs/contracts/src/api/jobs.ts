/**
 * The fine-tuning job as the API takes and returns it. The hyperparameters are the training
 * config's own sections (train-config.ts), so a default or a range changes in one place and the
 * CLI, the API, the worker and the console agree.
 */
import { z } from 'zod';

import { dynmoleSchema } from '../methods/dynmole.js';
import { flyloraSchema } from '../methods/flylora.js';
import { loraSchema } from '../methods/lora.js';
import { loramoeSchema } from '../methods/loramoe.js';
import { molaSchema } from '../methods/mola.js';
import {
  ADAPTER_METHOD_NAMES,
  type AdapterMethodName,
  dataSchema,
  evalSchema,
  METHOD_SECTION_SCHEMAS,
  optimizerSchema,
  scheduleSchema,
  TRAIN_METHODS,
  trainConfigSchema,
  type TrainConfigInput,
  trainingSchema,
  type TrainMethod,
} from '../train-config.js';
import { apiErrorSchema, metadataSchema, pageQuerySchema, resourceId, unixSeconds } from './common.js';

export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
/** Statuses a job never leaves (DELETE accepts only these). */
export const FINISHED_JOB_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'cancelled'];

/** The input quoted in a message; never throws (a request body may nest deeper than JSON.stringify goes). */
function quote(input: unknown): string {
  try {
    const text = JSON.stringify(input) ?? String(input);
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
  } catch {
    return 'a value nested too deep to show';
  }
}

export const methodSchema = z.enum(TRAIN_METHODS, {
  error: (issue) => `unknown method ${quote(issue.input)}: use one of ${TRAIN_METHODS.join(', ')}`,
});

// The data section less its file paths: the API names files by dataset id (training_file, validation_file).
const dataShape = dataSchema.shape;
export const jobDataSchema = z
  .strictObject({
    validation_fraction: dataShape.validation_fraction,
    format: dataShape.format,
    columns: dataShape.columns,
    train_on_inputs: dataShape.train_on_inputs,
    packing: dataShape.packing,
    on_bad_rows: dataShape.on_bad_rows,
    max_seq_len: dataShape.max_seq_len,
    add_eos: dataShape.add_eos,
  })
  .prefault({})
  .describe('How rows become training sequences (the data section of the training config, less file paths)');

export const jobHyperparametersSchema = z
  .strictObject({
    // loraSchema prefaults to {} for the CLI; here a missing section must stay missing until the method is known.
    lora: loraSchema.unwrap().optional().describe('Plain LoRA (method: lora)'),
    mola: molaSchema.optional(),
    loramoe: loramoeSchema.optional(),
    dynmole: dynmoleSchema.optional(),
    flylora: flyloraSchema.optional(),
    data: jobDataSchema,
    training: trainingSchema,
    eval: evalSchema,
    optimizer: optimizerSchema,
    schedule: scheduleSchema,
  })
  .prefault({})
  .describe("The method's section plus the data, training, eval, optimizer and schedule sections");

/** Accelerator classes name BullMQ queues, so they stay short and plain. */
export const acceleratorSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'accelerators are lowercase letters, digits and "-", e.g. cpu or cuda-h100')
  .default('cpu')
  .describe('Worker class to run on (one queue each): cpu, or a GPU class such as cuda-h100');

export const jobCreateRequestSchema = z
  .strictObject({
    model: resourceId.describe('Base model id (POST /v1/models)'),
    training_file: resourceId.describe('Training dataset id (POST /v1/datasets)'),
    validation_file: resourceId.nullish().describe('Validation dataset id'),
    method: methodSchema.default('lora'),
    hyperparameters: jobHyperparametersSchema,
    seed: trainConfigSchema.shape.seed,
    suffix: z
      .string()
      .max(64)
      .regex(/^[A-Za-z0-9_-]*$/, 'suffixes are letters, digits, "_" and "-"')
      .nullish()
      .describe('Added to the adapter name'),
    metadata: metadataSchema.optional(),
    accelerator: acceleratorSchema,
  })
  .superRefine((request, ctx) => {
    // A section for another method is almost always a mistake (a copied config): refuse it rather than ignore it.
    for (const name of ADAPTER_METHOD_NAMES) {
      if (name !== request.method && request.hyperparameters[name] !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['hyperparameters', name],
          message: `the ${name} section does not apply to method ${request.method}; send hyperparameters.${request.method}`,
        });
    }
    if (request.validation_file != null && request.hyperparameters.data.validation_fraction !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['hyperparameters', 'data', 'validation_fraction'],
        message: 'give validation_file or data.validation_fraction, not both',
      });
  });
export type JobCreateRequest = z.input<typeof jobCreateRequestSchema>;

type ParsedJobCreateRequest = z.output<typeof jobCreateRequestSchema>;
export type ResolvedHyperparameters = z.output<typeof jobHyperparametersSchema>;

/** A job request with every default filled in, the selected method's section included. */
export interface ResolvedJobRequest extends Omit<ParsedJobCreateRequest, 'validation_file' | 'suffix' | 'metadata'> {
  validation_file: string | null;
  suffix: string | null;
  metadata: Record<string, string>;
}

function isAdapterMethod(method: TrainMethod): method is AdapterMethodName {
  return (ADAPTER_METHOD_NAMES as readonly string[]).includes(method);
}

/** Parses a job request and fills every default (the API echoes this back as `hyperparameters`). */
export function resolveJobRequest(
  input: unknown,
): { success: true; data: ResolvedJobRequest } | { success: false; error: z.ZodError } {
  const parsed = jobCreateRequestSchema.safeParse(input);
  if (!parsed.success) return { success: false, error: parsed.error };
  const request = parsed.data;
  const hyperparameters: ResolvedHyperparameters = { ...request.hyperparameters };
  if (isAdapterMethod(request.method) && hyperparameters[request.method] === undefined)
    Object.assign(hyperparameters, { [request.method]: METHOD_SECTION_SCHEMAS[request.method].parse({}) });
  return {
    success: true,
    data: {
      ...request,
      hyperparameters,
      validation_file: request.validation_file ?? null,
      suffix: request.suffix ?? null,
      metadata: request.metadata ?? {},
    },
  };
}

/** Where the worker finds a job's inputs on disk. */
export interface JobPaths {
  modelDir: string;
  trainFile: string;
  validationFile: string | null;
  outputDir: string;
}

/** The training config a worker runs for a job: its hyperparameters plus the files it resolved. */
export function jobTrainConfig(job: Pick<ResolvedJobRequest, 'method' | 'seed' | 'hyperparameters'>, paths: JobPaths) {
  const { data, ...sections } = job.hyperparameters;
  const config: TrainConfigInput = {
    ...sections,
    model: paths.modelDir,
    method: job.method,
    seed: job.seed,
    data: { ...data, train: paths.trainFile, ...(paths.validationFile ? { validation: paths.validationFile } : {}) },
    output_dir: paths.outputDir,
  };
  return config;
}

export const jobMetricsSnapshotSchema = z
  .record(z.string(), z.number())
  .describe('The latest value of each metric (train_loss, lr, grad_norm, valid_loss, …)');

export const jobSchema = z.strictObject({
  id: resourceId,
  object: z.literal('fine_tuning.job'),
  status: z.enum(JOB_STATUSES),
  cancel_requested: z.boolean().describe('A cancel was asked for and the worker has not stopped yet'),
  method: methodSchema,
  model: resourceId,
  training_file: resourceId,
  validation_file: resourceId.nullable(),
  hyperparameters: jobHyperparametersSchema,
  seed: z.number().int(),
  suffix: z.string().nullable(),
  metadata: z.record(z.string(), z.string()),
  accelerator: z.string(),
  attempt: z.number().int().min(1).describe('1 for the first run; each resume or pick-up after a crash adds one'),
  resumed_from: resourceId.nullable().describe('Checkpoint id this attempt started from'),
  steps_completed: z.number().int().min(0),
  total_steps: z.number().int().min(0).nullable(),
  tokens_processed: z.number().int().min(0),
  queue_position: z
    .number()
    .int()
    .min(0)
    .nullable()
    .describe('Jobs ahead of this one in its queue (0 = next); null unless queued or when the queue is unreachable'),
  created_at: unixSeconds,
  started_at: unixSeconds.nullable(),
  finished_at: unixSeconds.nullable(),
  error: apiErrorSchema.nullable(),
  result_adapter: resourceId.nullable().describe('Adapter id of the exported result'),
  latest_metrics: jobMetricsSnapshotSchema,
});
export type Job = z.infer<typeof jobSchema>;

export const jobListQuerySchema = pageQuerySchema.extend({
  status: z.enum(JOB_STATUSES).optional(),
  method: methodSchema.optional(),
});
export type JobListQuery = z.input<typeof jobListQuerySchema>;

export const jobResumeRequestSchema = z
  .strictObject({
    checkpoint: resourceId.optional().describe('Checkpoint id to resume from; the latest one when left out'),
  })
  .prefault({});
export type JobResumeRequest = z.input<typeof jobResumeRequestSchema>;

/** Event types the API and the worker write; clients should accept others too. */
export const JOB_EVENT_TYPES = ['status', 'message', 'metrics', 'checkpoint'] as const;

export const jobEventSchema = z.strictObject({
  id: z.string().describe("The event's sequence number in its job; SSE Last-Event-ID takes it"),
  object: z.literal('fine_tuning.job.event'),
  job_id: resourceId,
  created_at: unixSeconds,
  level: z.enum(['info', 'warning', 'error']),
  type: z.string().describe(`One of ${JOB_EVENT_TYPES.join(', ')}, or a newer type`),
  message: z.string(),
  data: z.record(z.string(), z.unknown()).nullable(),
});
export type JobEvent = z.infer<typeof jobEventSchema>;

/**
 * One message of GET /v1/events/stream (SSE event `job`): something changed in a job, for lists
 * that follow every job: a status event, a checkpoint, or training progress (at most one a second
 * per job). Fetch the job for the rest.
 */
export const jobChangeSchema = z.strictObject({
  job_id: resourceId,
  kind: z.enum(['status', 'checkpoint', 'progress']),
  status: z.enum(JOB_STATUSES).nullable().describe('The new status (kind status)'),
  step: z.number().int().nullable().describe('The latest step with a metric (kind progress)'),
});
export type JobChange = z.infer<typeof jobChangeSchema>;

const commaList = z.string().transform((s) =>
  s
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name.length > 0),
);

export const metricQuerySchema = z.strictObject({
  names: commaList.optional().describe('Comma-separated metric names; all when left out'),
  from: z.coerce.number().int().min(0).optional().describe('First step (inclusive)'),
  to: z.coerce.number().int().min(0).optional().describe('Last step (inclusive)'),
  max_points: z.coerce
    .number()
    .int()
    .min(2)
    .max(10_000)
    .default(1000)
    .describe('Downsample each series to this many points'),
});
export type MetricQuery = z.input<typeof metricQuerySchema>;

export const metricSeriesSchema = z.strictObject({
  name: z.string(),
  steps: z.array(z.number().int()),
  values: z.array(z.number()),
  downsampled: z.boolean().describe('true when the series had more than max_points points'),
});
export type MetricSeries = z.infer<typeof metricSeriesSchema>;

export const metricSeriesListSchema = z.strictObject({
  object: z.literal('list'),
  job_id: resourceId,
  data: z.array(metricSeriesSchema),
});
export type MetricSeriesList = z.infer<typeof metricSeriesListSchema>;

/** The data of a queued BullMQ job (whose BullMQ id is the job id too), as the API enqueues it. */
export interface TrainJobData {
  jobId: string;
  /** Where the API's resume chose to restart this attempt; otherwise the latest checkpoint. */
  resumeFromCheckpointId?: string | null;
}

/** Key prefix of the BullMQ queues that the API and the workers share (tests use their own). */
export const DEFAULT_QUEUE_PREFIX = 'expertune';
/** Redis pub/sub channel on which the API publishes `{job_id}` to cancel a job wherever it runs. */
export const CANCEL_CHANNEL = 'expertune:cancel';
/** Redis pub/sub channel of a job's events and metric batches (the worker publishes, the SSE stream reads). */
export const jobEventChannel = (jobId: string): string => `expertune:job:${jobId}`;

/** The BullMQ queue of an accelerator class (BullMQ forbids ":" in queue names, hence "-"). */
export function trainQueueName(accelerator: string): string {
  return `train-${accelerator}`;
}
