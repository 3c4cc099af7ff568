/**
 * A small typed client of the REST API: the same types the server validates with. Errors come
 * back as `ExpertuneApiError` carrying the server's `{code, message, param}`.
 */
import type { ApiError, ListEnvelope } from './common.js';
import type {
  Job,
  JobCreateRequest,
  JobEvent,
  JobListQuery,
  JobResumeRequest,
  MetricQuery,
  MetricSeriesList,
} from './jobs.js';
import type { Accelerator, Adapter, Checkpoint, Dataset, Model, ModelRegisterRequest } from './resources.js';

export class ExpertuneApiError extends Error {
  constructor(
    readonly status: number,
    readonly error: ApiError,
  ) {
    super(`${status} ${error.code}: ${error.message}${error.param ? ` (param ${error.param})` : ''}`);
    this.name = 'ExpertuneApiError';
  }
}

export interface ExpertuneClientOptions {
  baseUrl: string;
  apiKey?: string;
  /** Defaults to the global fetch (tests and proxies pass their own). */
  fetch?: typeof fetch;
}

export interface HealthReport {
  status: 'ok' | 'unavailable';
  checks: Record<string, { ok: boolean; message?: string }>;
}

/** The optional text fields of a dataset upload (POST /v1/datasets). */
export interface DatasetUploadFields {
  model?: string;
  format?: string;
  name?: string;
}

type Query = Record<string, string | number | string[] | undefined>;

function queryString(query: Query | undefined): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    params.set(key, Array.isArray(value) ? value.join(',') : String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

export function createExpertuneClient(options: ExpertuneClientOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  const doFetch = options.fetch ?? fetch;

  async function send(method: string, path: string, body?: unknown, query?: Query): Promise<Response> {
    const headers: Record<string, string> = {};
    if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
    let payload: FormData | string | undefined;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const response = await doFetch(`${baseUrl}${path}${queryString(query)}`, { method, headers, body: payload });
    if (!response.ok) {
      const text = await response.text();
      let error: ApiError = { code: 'http_error', message: text.slice(0, 500) || response.statusText, param: null };
      try {
        const parsed = JSON.parse(text) as { error?: ApiError };
        if (parsed.error?.code) error = parsed.error;
      } catch {
        // not JSON (a proxy's page): keep the text
      }
      throw new ExpertuneApiError(response.status, error);
    }
    return response;
  }

  async function json<T>(method: string, path: string, body?: unknown, query?: Query): Promise<T> {
    return (await (await send(method, path, body, query)).json()) as T;
  }

  const id = encodeURIComponent;

  /** A text/event-stream response as it is (the caller reads `body`; a non-200 is not thrown). */
  const eventStream = (path: string, lastEventId?: string) =>
    doFetch(`${baseUrl}${path}`, {
      headers: {
        accept: 'text/event-stream',
        ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
        ...(lastEventId ? { 'last-event-id': lastEventId } : {}),
      },
    });

  return {
    health: async (): Promise<HealthReport> => {
      const response = await doFetch(`${baseUrl}/health`);
      return (await response.json()) as HealthReport;
    },
    jobs: {
      create: (request: JobCreateRequest) => json<Job>('POST', '/v1/jobs', request),
      list: (query?: JobListQuery) => json<ListEnvelope<Job>>('GET', '/v1/jobs', undefined, query as Query),
      get: (jobId: string) => json<Job>('GET', `/v1/jobs/${id(jobId)}`),
      cancel: (jobId: string) => json<Job>('POST', `/v1/jobs/${id(jobId)}/cancel`),
      resume: (jobId: string, request: JobResumeRequest = {}) =>
        json<Job>('POST', `/v1/jobs/${id(jobId)}/resume`, request),
      delete: (jobId: string) => json<{ id: string; object: string; deleted: true }>('DELETE', `/v1/jobs/${id(jobId)}`),
      events: (jobId: string, query?: { after?: string; limit?: number }) =>
        json<ListEnvelope<JobEvent>>('GET', `/v1/jobs/${id(jobId)}/events`, undefined, query),
      metrics: (jobId: string, query?: MetricQuery) =>
        json<MetricSeriesList>('GET', `/v1/jobs/${id(jobId)}/metrics`, undefined, query as Query),
      checkpoints: (jobId: string) => json<ListEnvelope<Checkpoint>>('GET', `/v1/jobs/${id(jobId)}/checkpoints`),
      /** The SSE stream's raw response (read `body` as text/event-stream). */
      stream: (jobId: string, lastEventId?: string) => eventStream(`/v1/jobs/${id(jobId)}/events/stream`, lastEventId),
      /** Changes of every job (`JobChange` messages: status events and progress), as a raw SSE response. */
      changes: () => eventStream('/v1/events/stream'),
    },
    datasets: {
      /**
       * `model` (a registered model id) adds token statistics; `format` overrides row detection;
       * `name` replaces the filename. The fields go before the file: the API reads the body in order.
       */
      upload: (content: Blob | string, filename: string, fields: DatasetUploadFields = {}) => {
        const form = new FormData();
        for (const [key, value] of Object.entries(fields)) if (value !== undefined) form.set(key, value);
        form.set('file', typeof content === 'string' ? new Blob([content]) : content, filename);
        return json<Dataset>('POST', '/v1/datasets', form);
      },
      list: (query?: { after?: string; limit?: number }) =>
        json<ListEnvelope<Dataset>>('GET', '/v1/datasets', undefined, query),
      get: (datasetId: string) => json<Dataset>('GET', `/v1/datasets/${id(datasetId)}`),
      delete: (datasetId: string) =>
        json<{ id: string; object: string; deleted: true }>('DELETE', `/v1/datasets/${id(datasetId)}`),
    },
    models: {
      register: (request: ModelRegisterRequest) => json<Model>('POST', '/v1/models', request),
      list: (query?: { after?: string; limit?: number }) =>
        json<ListEnvelope<Model>>('GET', '/v1/models', undefined, query),
      get: (modelId: string) => json<Model>('GET', `/v1/models/${id(modelId)}`),
    },
    /** The accelerator classes this API accepts, with their queues' lengths and connected workers. */
    accelerators: {
      list: () => json<ListEnvelope<Accelerator>>('GET', '/v1/accelerators'),
    },
    adapters: {
      list: (query?: { after?: string; limit?: number }) =>
        json<ListEnvelope<Adapter>>('GET', '/v1/adapters', undefined, query),
      get: (adapterId: string) => json<Adapter>('GET', `/v1/adapters/${id(adapterId)}`),
      /** The tar of the export directory, streamed: pipe `body` to a file or a tar extractor. */
      download: (adapterId: string) => send('GET', `/v1/adapters/${id(adapterId)}/download`),
    },
  };
}
export type ExpertuneClient = ReturnType<typeof createExpertuneClient>;
