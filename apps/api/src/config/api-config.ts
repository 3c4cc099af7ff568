/** The API's settings, read once from the environment and validated like any other input. */
import { acceleratorSchema, DEFAULT_QUEUE_PREFIX } from '@expertune/contracts';
import { z } from 'zod';

export const API_CONFIG = Symbol('API_CONFIG');

const bytes = z.coerce.number().int().positive();
const optionalBytes = z.coerce.number().int().min(0).optional();
const list = z
  .string()
  .default('')
  .transform((text) => [
    ...new Set(
      text
        .split(',')
        .map((item) => item.trim())
        .filter(Boolean),
    ),
  ]);

export const apiConfigSchema = z.object({
  DATABASE_URL: z.string().min(1).default('postgres://postgres@127.0.0.1:5432/expertune'),
  REDIS_URL: z.string().min(1).default('redis://127.0.0.1:6379'),
  EXPERTUNE_DATA_DIR: z.string().min(1).default('.expertune/data'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  /** JSON bodies are small (a job spec); uploads have their own, larger limit. */
  EXPERTUNE_JSON_LIMIT_BYTES: bytes.default(1024 * 1024),
  EXPERTUNE_UPLOAD_LIMIT_BYTES: bytes.default(512 * 1024 * 1024),
  /** Key prefix of the BullMQ queues; tests use their own so runs never see each other's jobs. */
  EXPERTUNE_QUEUE_PREFIX: z.string().min(1).default(DEFAULT_QUEUE_PREFIX),
  EXPERTUNE_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().min(0).default(600),
  /** Accelerator classes that have workers (one BullMQ queue each); a job for another is refused. */
  EXPERTUNE_ACCELERATORS: z
    .string()
    .default('cpu')
    .transform((list) => [
      ...new Set(
        list
          .split(',')
          .map((name) => name.trim())
          .filter(Boolean),
      ),
    ])
    .pipe(z.array(acceleratorSchema.unwrap()).min(1)),
  /** Directories models may be registered from (comma-separated); empty: anywhere (a warning at start). */
  EXPERTUNE_MODEL_ROOTS: list,
  /** Origins allowed to call the API from a browser (comma-separated); empty: none (no CORS headers). */
  EXPERTUNE_CORS_ORIGINS: list,
  /** Queued plus running jobs one API key may have (429 above); 0: no limit. */
  EXPERTUNE_MAX_ACTIVE_JOBS_PER_KEY: z.coerce.number().int().min(0).default(20),
  /** Dataset limits, checked at upload with the offending line named. */
  EXPERTUNE_MAX_DATASET_ROWS: z.coerce.number().int().positive().default(1_000_000),
  EXPERTUNE_MAX_ROW_BYTES: bytes.default(1024 * 1024),
  /** Resource guards at job creation (libs/trainer resources.ts): a worker's memory, its GPU's, and a simulated free disk. */
  EXPERTUNE_MEMORY_LIMIT_BYTES: optionalBytes,
  EXPERTUNE_GPU_MEMORY_BYTES: optionalBytes,
  EXPERTUNE_DISK_FREE_BYTES: optionalBytes,
  /** Postgres statement timeout (0: none): no request waits on a stuck query forever. */
  EXPERTUNE_DB_STATEMENT_TIMEOUT_MS: z.coerce.number().int().min(0).default(30_000),
});
export type ApiConfigInput = z.input<typeof apiConfigSchema>;

export interface ApiConfig {
  databaseUrl: string;
  redisUrl: string;
  dataDir: string;
  port: number;
  host: string;
  jsonLimitBytes: number;
  uploadLimitBytes: number;
  queuePrefix: string;
  rateLimitPerMinute: number;
  accelerators: string[];
  modelRoots: string[];
  corsOrigins: string[];
  maxActiveJobsPerKey: number;
  maxDatasetRows: number;
  maxRowBytes: number;
  /** Limits handed to the resource guards as their environment (unset: the guard's default). */
  resourceLimits: { memoryLimitBytes?: number; gpuMemoryBytes?: number; diskFreeBytes?: number };
  dbStatementTimeoutMs: number;
}

/** Reads the settings from `env` (process.env by default); a bad value stops the start with its name. */
export function loadApiConfig(env: Record<string, string | undefined> = process.env): ApiConfig {
  const result = apiConfigSchema.safeParse(env);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`).join('\n');
    throw new Error(`invalid API environment:\n${lines}`);
  }
  const e = result.data;
  return {
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    dataDir: e.EXPERTUNE_DATA_DIR,
    port: e.PORT,
    host: e.HOST,
    jsonLimitBytes: e.EXPERTUNE_JSON_LIMIT_BYTES,
    uploadLimitBytes: e.EXPERTUNE_UPLOAD_LIMIT_BYTES,
    queuePrefix: e.EXPERTUNE_QUEUE_PREFIX,
    rateLimitPerMinute: e.EXPERTUNE_RATE_LIMIT_PER_MINUTE,
    accelerators: e.EXPERTUNE_ACCELERATORS,
    modelRoots: e.EXPERTUNE_MODEL_ROOTS,
    corsOrigins: e.EXPERTUNE_CORS_ORIGINS,
    maxActiveJobsPerKey: e.EXPERTUNE_MAX_ACTIVE_JOBS_PER_KEY,
    maxDatasetRows: e.EXPERTUNE_MAX_DATASET_ROWS,
    maxRowBytes: e.EXPERTUNE_MAX_ROW_BYTES,
    resourceLimits: {
      memoryLimitBytes: e.EXPERTUNE_MEMORY_LIMIT_BYTES,
      gpuMemoryBytes: e.EXPERTUNE_GPU_MEMORY_BYTES,
      diskFreeBytes: e.EXPERTUNE_DISK_FREE_BYTES,
    },
    dbStatementTimeoutMs: e.EXPERTUNE_DB_STATEMENT_TIMEOUT_MS,
  };
}
