/**
 * The OpenAPI document, generated from the same zod schemas that validate the requests
 * (libs/contracts), so the docs cannot drift from what the server accepts.
 */
import {
  acceleratorClassSchema,
  adapterSchema,
  checkpointSchema,
  datasetSchema,
  errorEnvelopeSchema,
  jobChangeSchema,
  jobCreateRequestSchema,
  jobEventSchema,
  jobResumeRequestSchema,
  jobSchema,
  listEnvelopeSchema,
  metricSeriesListSchema,
  modelRegisterRequestSchema,
  modelSchema,
} from '@expertune/contracts';
import type { OpenAPIObject } from '@nestjs/swagger';
import { z } from 'zod';

type JsonSchema = Record<string, unknown>;

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as JsonSchema;
  return rest;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: string) => ({ content: { 'application/json': { schema: ref(name) } } });

const errors = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((status) => [String(status), { description: 'Error', ...json('ErrorEnvelope') }]));

const idParam = (name: string) => ({ name, in: 'path', required: true, schema: { type: 'string' } });
const pageParams = [
  { name: 'after', in: 'query', schema: { type: 'string' } },
  { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 } },
];

export function buildOpenApiDocument(): OpenAPIObject {
  const schemas: Record<string, JsonSchema> = {
    ErrorEnvelope: jsonSchema(errorEnvelopeSchema, 'output'),
    JobCreateRequest: jsonSchema(jobCreateRequestSchema, 'input'),
    JobResumeRequest: jsonSchema(jobResumeRequestSchema, 'input'),
    Job: jsonSchema(jobSchema, 'output'),
    JobList: jsonSchema(listEnvelopeSchema(jobSchema), 'output'),
    JobEvent: jsonSchema(jobEventSchema, 'output'),
    JobChange: jsonSchema(jobChangeSchema, 'output'),
    AcceleratorList: jsonSchema(listEnvelopeSchema(acceleratorClassSchema), 'output'),
    JobEventList: jsonSchema(listEnvelopeSchema(jobEventSchema), 'output'),
    MetricSeriesList: jsonSchema(metricSeriesListSchema, 'output'),
    CheckpointList: jsonSchema(listEnvelopeSchema(checkpointSchema), 'output'),
    Dataset: jsonSchema(datasetSchema, 'output'),
    DatasetList: jsonSchema(listEnvelopeSchema(datasetSchema), 'output'),
    ModelRegisterRequest: jsonSchema(modelRegisterRequestSchema, 'input'),
    Model: jsonSchema(modelSchema, 'output'),
    ModelList: jsonSchema(listEnvelopeSchema(modelSchema), 'output'),
    Adapter: jsonSchema(adapterSchema, 'output'),
    AdapterList: jsonSchema(listEnvelopeSchema(adapterSchema), 'output'),
  };
  const jobId = idParam('id');
  return {
    openapi: '3.1.0',
    info: {
      title: 'expertune API',
      version: '0.1.0',
      description:
        'Fine-tuning jobs for LoRA and mixtures of LoRA experts. Authenticate with `Authorization: Bearer <key>` ' +
        '(created with `expertune keys create`). Errors answer `{error: {code, message, param}}`.',
    },
    components: {
      schemas,
      securitySchemes: { apiKey: { type: 'http', scheme: 'bearer' } },
    },
    security: [{ apiKey: [] }],
    paths: {
      '/health': {
        get: {
          summary: 'Postgres and Redis reachability',
          security: [],
          responses: { '200': { description: 'All reachable' }, '503': { description: 'A service is unreachable' } },
        },
      },
      '/v1/jobs': {
        post: {
          summary: 'Create a fine-tuning job (defaults filled in and echoed back)',
          requestBody: { required: true, ...json('JobCreateRequest') },
          responses: {
            '200': { description: 'The queued job', ...json('Job') },
            ...errors(401, 403, 404, 422, 429, 503),
          },
        },
        get: {
          summary: 'List jobs, newest first',
          parameters: [
            ...pageParams,
            { name: 'status', in: 'query', schema: { type: 'string' } },
            { name: 'method', in: 'query', schema: { type: 'string' } },
          ],
          responses: { '200': { description: 'A page of jobs', ...json('JobList') }, ...errors(401, 422) },
        },
      },
      '/v1/jobs/{id}': {
        get: {
          summary: 'A job with its progress and queue position',
          parameters: [jobId],
          responses: { '200': { description: 'The job', ...json('Job') }, ...errors(401, 404) },
        },
        delete: {
          summary: 'Delete a finished job',
          parameters: [jobId],
          responses: { '200': { description: 'Deleted' }, ...errors(401, 403, 404, 409) },
        },
      },
      '/v1/jobs/{id}/cancel': {
        post: {
          summary: 'Cancel a job (a queued one at once, a running one at its next step)',
          parameters: [jobId],
          responses: { '200': { description: 'The job', ...json('Job') }, ...errors(401, 403, 404, 409) },
        },
      },
      '/v1/jobs/{id}/resume': {
        post: {
          summary: 'Resume from the latest or a chosen checkpoint, as a new attempt',
          parameters: [jobId],
          requestBody: { required: false, ...json('JobResumeRequest') },
          responses: { '200': { description: 'The job', ...json('Job') }, ...errors(401, 403, 404, 409, 503) },
        },
      },
      '/v1/jobs/{id}/events': {
        get: {
          summary: 'Events of a job, oldest first',
          parameters: [jobId, ...pageParams],
          responses: { '200': { description: 'Events', ...json('JobEventList') }, ...errors(401, 404) },
        },
      },
      '/v1/jobs/{id}/events/stream': {
        get: {
          summary: 'Server-sent events: stored events after Last-Event-ID, then live ones',
          parameters: [jobId, { name: 'Last-Event-ID', in: 'header', schema: { type: 'string' } }],
          responses: { '200': { description: 'text/event-stream' }, ...errors(401, 404) },
        },
      },
      '/v1/accelerators': {
        get: {
          summary: 'The accelerator classes jobs can request, with queued and running jobs and connected workers',
          responses: { '200': { description: 'Accelerator classes', ...json('AcceleratorList') }, ...errors(401) },
        },
      },
      '/v1/events/stream': {
        get: {
          summary:
            'Server-sent events of every job: `event: job` with a JobChange (status, checkpoint, progress at most 1/s per job); no replay',
          responses: { '200': { description: 'text/event-stream of JobChange' }, ...errors(401) },
        },
      },
      '/v1/jobs/{id}/metrics': {
        get: {
          summary: 'Metric series, downsampled to max_points',
          parameters: [
            jobId,
            { name: 'names', in: 'query', schema: { type: 'string' }, description: 'Comma-separated' },
            { name: 'from', in: 'query', schema: { type: 'integer' } },
            { name: 'to', in: 'query', schema: { type: 'integer' } },
            { name: 'max_points', in: 'query', schema: { type: 'integer' } },
          ],
          responses: { '200': { description: 'Series', ...json('MetricSeriesList') }, ...errors(401, 404, 422) },
        },
      },
      '/v1/jobs/{id}/checkpoints': {
        get: {
          summary: 'Checkpoints of a job',
          parameters: [jobId],
          responses: { '200': { description: 'Checkpoints', ...json('CheckpointList') }, ...errors(401, 404) },
        },
      },
      '/v1/datasets': {
        post: {
          summary: 'Upload a JSONL dataset (multipart field "file"), validated row by row',
          requestBody: {
            required: true,
            content: {
              'multipart/form-data': {
                schema: { type: 'object', properties: { file: { type: 'string', format: 'binary' } } },
              },
            },
          },
          responses: { '200': { description: 'The dataset', ...json('Dataset') }, ...errors(400, 401, 403, 413, 422) },
        },
        get: {
          summary: 'List datasets',
          parameters: pageParams,
          responses: { '200': { description: 'Datasets', ...json('DatasetList') }, ...errors(401) },
        },
      },
      '/v1/datasets/{id}': {
        get: {
          summary: 'A dataset with token statistics and a preview',
          parameters: [idParam('id')],
          responses: { '200': { description: 'The dataset', ...json('Dataset') }, ...errors(401, 404) },
        },
        delete: {
          summary: 'Delete a dataset',
          parameters: [idParam('id')],
          responses: { '200': { description: 'Deleted' }, ...errors(401, 403, 404, 409) },
        },
      },
      '/v1/models': {
        post: {
          summary: 'Register a local Hugging Face model directory',
          requestBody: { required: true, ...json('ModelRegisterRequest') },
          responses: { '200': { description: 'The model', ...json('Model') }, ...errors(401, 403, 422) },
        },
        get: {
          summary: 'List models',
          parameters: pageParams,
          responses: { '200': { description: 'Models', ...json('ModelList') }, ...errors(401) },
        },
      },
      '/v1/models/{id}': {
        get: {
          summary: 'Inspect a model: config and parameter count',
          parameters: [idParam('id')],
          responses: { '200': { description: 'The model', ...json('Model') }, ...errors(401, 404) },
        },
      },
      '/v1/adapters': {
        get: {
          summary: 'List exported adapters',
          parameters: pageParams,
          responses: { '200': { description: 'Adapters', ...json('AdapterList') }, ...errors(401) },
        },
      },
      '/v1/adapters/{id}': {
        get: {
          summary: 'Adapter metadata',
          parameters: [idParam('id')],
          responses: { '200': { description: 'The adapter', ...json('Adapter') }, ...errors(401, 404) },
        },
      },
      '/v1/adapters/{id}/download': {
        get: {
          summary: 'The export directory as a streamed tar',
          parameters: [idParam('id')],
          responses: { '200': { description: 'application/x-tar' }, ...errors(401, 404) },
        },
      },
    },
  } as OpenAPIObject;
}
