/** The API's settings, read once from the environment and validated like any other input. */
import { acceleratorSchema, DEFAULT_QUEUE_PREFIX } from '@expertune/contracts';
import { z } from 'zod';

export const API_CONFIG = Symbol('API_CONFIG');

const bytes = z.coerce.number().int().positive();

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
  };
}
