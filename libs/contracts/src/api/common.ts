/**
 * Shapes every API answer shares: the error envelope, the list envelope and the ids. Keys are
 * snake_case and times are Unix seconds, as in the fine-tuning APIs users already script against
 * (OpenAI's `fine_tuning.job`, Together's jobs).
 */
import { z } from 'zod';

/** HTTP statuses the API answers errors with, and what each means to a client. */
export const API_ERROR_STATUSES = [400, 401, 403, 404, 409, 413, 422, 429, 500, 503] as const;
export type ApiErrorStatus = (typeof API_ERROR_STATUSES)[number];

export const apiErrorSchema = z.strictObject({
  code: z.string().describe('Stable machine-readable code, e.g. invalid_api_key, not_found, queue_unavailable'),
  message: z.string().describe('What went wrong, with the value and what was expected'),
  param: z.string().nullable().describe('Key path of the offending request field (e.g. hyperparameters.lora.rank)'),
});
export type ApiError = z.infer<typeof apiErrorSchema>;

export const errorEnvelopeSchema = z.strictObject({ error: apiErrorSchema });
export type ErrorEnvelope = z.infer<typeof errorEnvelopeSchema>;

export const unixSeconds = z.number().int().min(0).describe('Unix time in seconds');

/** Ids are opaque strings with a resource prefix (ftjob-, ds-, model-, adapter-, ckpt-). */
export const resourceId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, 'ids are letters, digits, "_" and "-"');

export const metadataSchema = z
  .record(z.string().max(64), z.string().max(512))
  .refine((m) => Object.keys(m).length <= 16, 'at most 16 metadata keys')
  .describe('Up to 16 string pairs of your own, echoed back');

/** `{object: 'list', data, has_more, next_cursor}`: pass `next_cursor` as `after` for the next page. */
export function listEnvelopeSchema<T extends z.ZodType>(item: T) {
  return z.strictObject({
    object: z.literal('list'),
    data: z.array(item),
    has_more: z.boolean(),
    next_cursor: z.string().nullable().describe('Pass as `after` to get the next page; null on the last page'),
  });
}
export interface ListEnvelope<T> {
  object: 'list';
  data: T[];
  has_more: boolean;
  next_cursor: string | null;
}

/** `?after=<cursor>&limit=<n>` of every list endpoint. */
export const pageQuerySchema = z.strictObject({
  after: z.string().min(1).optional().describe('Cursor from the previous page (its next_cursor)'),
  limit: z.coerce.number().int().min(1).max(100).default(20).describe('Items per page, 1-100'),
});
export type PageQuery = z.output<typeof pageQuerySchema>;
