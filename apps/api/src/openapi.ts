import { Router } from 'express';
import {
  batchCreateRequestSchema,
  batchIdParams,
  batchListSchema,
  batchSchema,
  costsPageSchema,
  costsQuery,
  editHeaders,
  editJsonSchema,
  editMultipartSchema,
  editStreamEventSchemas,
  errorSchema,
  fileDeletedSchema,
  fileIdParams,
  fileListSchema,
  fileSchema,
  fileUploadSchema,
  getJobQuery,
  healthSchema,
  idempotencyHeaders,
  imagesResponseSchema,
  jobDeletedSchema,
  jobEventSchemas,
  jobEventsHeaders,
  jobEventsQuery,
  jobIdParams,
  jobListSchema,
  jobSchema,
  listBatchesQuery,
  listFilesQuery,
  listJobsQuery,
  modelIdParams,
  modelListSchema,
  modelSchema,
  type OperationSpec,
  openApiDocument,
  readinessSchema,
  REQUEST_COMPONENTS,
  RESPONSE_COMPONENTS,
  type ResponseSpec,
  usageImagesPageSchema,
  usageImagesQuery,
  webhookDeliveryListSchema,
  webhookDeliveryParams,
  webhookDeliverySchema,
  webhookEndpointBodySchema,
  webhookEndpointCreatedSchema,
  webhookEndpointDeletedSchema,
  webhookEndpointIdParams,
  webhookEndpointListSchema,
  webhookEndpointSchema,
  webhookSecretSchema,
  z,
} from '@image-edits/core';
import { CONSOLE_ROUTES } from './console';

/**
 * The route table of the HTTP API: every operation the app mounts, with the zod schemas its route
 * checks the request with (packages/core/src/api-schemas.ts) and the answers it can give. The
 * OpenAPI 3.1 document is generated from it once, at start-up, and served at `GET /openapi.json`
 * (no key needed). tests/openapi.int.test.ts holds it to the routes Express really mounts and to
 * the service's real answers. A new route goes here too.
 */

const error = (description: string): ResponseSpec => ({ description, content: { 'application/json': errorSchema } });
const json = (description: string, schema: z.ZodType, headers?: ResponseSpec['headers']): ResponseSpec => ({ description, content: { 'application/json': schema }, ...(headers ? { headers } : {}) });

/** Every answer of /v1 may be one of these. */
const V1_ERRORS: Record<number, ResponseSpec> = {
  400: error('invalid request: `param` names the field, query parameter or header (invalid_value, missing_required_parameter, unknown_parameter, ...)'),
  401: error('missing or wrong API key (invalid_api_key)'),
  500: error('internal_error (the x-request-id header identifies the request)'),
  503: error('service_unavailable: a dependency of ours (Postgres, Redis, S3) is away; retry after Retry-After'),
};
const RATE_LIMITED = error('rate_limit_exceeded (type requests or images) with retry-after, or insufficient_quota: the monthly budget is spent');
const IDEMPOTENCY: Record<number, ResponseSpec> = {
  409: error('idempotency_key_in_use: a request with this Idempotency-Key is still being accepted'),
  422: error('idempotency_error: this Idempotency-Key was used with other parameters'),
};
const notFound = (what: string) => error(`${what}: unknown, another key's, or (files) expired`);

const ratelimitHeaders: ResponseSpec['headers'] = Object.fromEntries(
  ['requests', 'images'].flatMap((k) => [
    [`x-ratelimit-limit-${k}`, { description: `the key's ${k} per minute (when it has such a limit)` }],
    [`x-ratelimit-remaining-${k}`, { description: `${k} left in the current minute` }],
    [`x-ratelimit-reset-${k}`, { description: 'until the bucket is full again (e.g. 1s, 6m0s)' }],
  ]),
);
const jobHeaders: ResponseSpec['headers'] = {
  location: { description: '/v1/jobs/{id}: where the job can be read' },
  'x-job-id': { description: "the job's id" },
  'x-should-retry': { description: 'false: the job exists, a retry would not create another' },
  'idempotent-replayed': { description: 'true when the answer is a replay for an Idempotency-Key' },
  ...ratelimitHeaders,
};

const sse = (description: string, events: Record<string, z.ZodType>) => ({
  'text/event-stream': { schema: z.string().meta({ description: `Server-Sent Events: ${description}; each event's \`data\` is JSON, its schema under \`x-events\` by event name` }), events },
});

const jobParams = { params: jobIdParams };

const OPERATIONS: OperationSpec[] = [
  // ------------------------------------------------------------ probes and the document
  { method: 'get', path: '/healthz', operationId: 'health', summary: 'The process is up', tag: 'operations', security: 'none', responses: { 200: json('up', healthSchema) } },
  {
    method: 'get',
    path: '/readyz',
    operationId: 'readiness',
    summary: 'Postgres, Redis and S3 answer, and the process is not draining',
    tag: 'operations',
    security: 'none',
    responses: { 200: json('ready', readinessSchema), 503: json('a dependency does not answer, or the process is draining (SIGTERM)', readinessSchema) },
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics of this API process',
    description: 'Behind `Authorization: Bearer <METRICS_TOKEN>` when METRICS_TOKEN is set.',
    tag: 'operations',
    security: { optional: 'metricsToken' },
    responses: { 200: { description: 'the Prometheus text format', content: { 'text/plain': z.string() } }, 401: error('invalid_metrics_token: METRICS_TOKEN is set and was not sent') },
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'This document (OpenAPI 3.1)',
    tag: 'operations',
    security: 'none',
    responses: { 200: json('the OpenAPI document', z.record(z.string(), z.unknown())) },
  },
  ...CONSOLE_ROUTES.map(
    (route): OperationSpec => ({
      method: 'get',
      path: route.replace(/:(\w+)/g, '{$1}'),
      operationId: `console${route.replace(/[/:]+(\w)/g, (_m, c: string) => c.toUpperCase()) || 'Home'}`,
      summary: route === '/' ? 'The browser console' : `The browser console (its ${route} page)`,
      tag: 'console',
      security: 'none',
      ...(route.includes(':') ? { params: z.object({ id: z.string() }) } : {}),
      responses: { 200: { description: 'the console (a single-page app; its assets come from /assets/)', content: { 'text/html': z.string() } }, 404: { description: 'the console is not built', content: { 'text/html': z.string() } } },
    }),
  ),

  // ------------------------------------------------------------ edits and jobs
  {
    method: 'post',
    path: '/v1/images/edits',
    operationId: 'createImageEdit',
    summary: 'Edit an image (OpenAI-compatible), as a durable job',
    description:
      "Multipart as OpenAI takes it, or JSON with images by `file_id` or `image_url`. Without `Prefer` the request waits and answers in OpenAI's shape (`stream: true`: OpenAI's Server-Sent Events); `Prefer: respond-async` answers 202 with the job at once; `Prefer: wait=N` answers the job object once final or after N s.",
    tag: 'edits',
    headers: editHeaders,
    body: { required: true, content: { 'multipart/form-data': editMultipartSchema, 'application/json': editJsonSchema } },
    responses: {
      200: {
        description: "the edit's answer (OpenAI's image response), or with `Prefer: wait=N` the final job; `stream: true`: OpenAI's image_edit events",
        headers: jobHeaders,
        content: {
          'application/json': z.union([imagesResponseSchema, jobSchema]),
          ...sse("OpenAI's streamed edit: image_edit.partial_image events, then one image_edit.completed per image, or an error event", editStreamEventSchemas),
        },
      },
      202: json('the job, queued (`Prefer: respond-async`, or `Prefer: wait=N` ran out, or the queue is away and the job waits for the reconciler)', jobSchema, jobHeaders),
      404: error('model_not_found, or (JSON form) file_not_found'),
      408: error('job_expired: the job was not started before its Cancel-After deadline'),
      ...IDEMPOTENCY,
      410: error("result_expired: a replay of a job whose images are gone (retention, DELETE)"),
      413: error('file_too_large: an image over the model\'s limit; request_too_large: the JSON body'),
      415: error('unsupported_media_type: neither multipart/form-data nor application/json (also unsupported_charset, unsupported_content_encoding)'),
      429: RATE_LIMITED,
      502: error("the provider failed (its own error kept: message, code, param)"),
      504: error('sync_wait_timeout: the edit is still running as the job in Location'),
    },
  },
  {
    method: 'get',
    path: '/v1/jobs',
    operationId: 'listJobs',
    summary: "The key's jobs, newest first",
    description: 'A page links images by URL; GET /v1/jobs/{id} answers in the job\'s own response_format.',
    tag: 'jobs',
    query: listJobsQuery,
    responses: { 200: json('a page of jobs', jobListSchema) },
  },
  {
    method: 'get',
    path: '/v1/jobs/{id}',
    operationId: 'getJob',
    summary: 'A job (fresh presigned URLs on every read); `wait` long-polls',
    tag: 'jobs',
    ...jobParams,
    query: getJobQuery,
    responses: { 200: json('the job', jobSchema), 404: notFound('job_not_found') },
  },
  {
    method: 'get',
    path: '/v1/jobs/{id}/events',
    operationId: 'getJobEvents',
    summary: "A job's events: status, queue position, partial images, then the final job",
    description: 'Events with an `id` are kept an hour: reconnect with Last-Event-ID (or ?last_event_id=) and only what came after is sent.',
    tag: 'jobs',
    ...jobParams,
    query: jobEventsQuery,
    headers: jobEventsHeaders,
    responses: { 200: { description: 'the stream; it ends after the `job` event', content: sse('status, partial_image, then job', jobEventSchemas) }, 404: notFound('job_not_found') },
  },
  {
    method: 'post',
    path: '/v1/jobs/{id}/cancel',
    operationId: 'cancelJob',
    summary: 'Cancel a queued or running job (nothing is stored or billed)',
    tag: 'jobs',
    ...jobParams,
    responses: { 200: json('the job, canceled', jobSchema), 404: notFound('job_not_found'), 409: error('job_not_cancelable: the job is already final') },
  },
  {
    method: 'delete',
    path: '/v1/jobs/{id}',
    operationId: 'deleteJob',
    summary: "Erase a final job's images, prompt and metadata",
    tag: 'jobs',
    ...jobParams,
    responses: { 200: json("OpenAI's deleted shape", jobDeletedSchema), 404: notFound('job_not_found'), 409: error('job_not_final (cancel it first), batch_in_progress') },
  },
  {
    method: 'get',
    path: '/v1/jobs/{id}/webhook_deliveries',
    operationId: 'listJobWebhookDeliveries',
    summary: "A job's webhook deliveries, with every attempt",
    tag: 'webhooks',
    ...jobParams,
    responses: { 200: json('the deliveries', webhookDeliveryListSchema), 404: notFound('job_not_found') },
  },
  {
    method: 'post',
    path: '/v1/jobs/{id}/webhook_deliveries/{delivery_id}/retry',
    operationId: 'retryJobWebhookDelivery',
    summary: 'Send a finished delivery again (the same webhook-id)',
    tag: 'webhooks',
    params: webhookDeliveryParams,
    responses: { 202: json('the delivery, pending', webhookDeliverySchema), 404: notFound('webhook_delivery_not_found'), 409: error('webhook_delivery_pending: it is still being retried on its schedule') },
  },

  // ------------------------------------------------------------ models
  { method: 'get', path: '/v1/models', operationId: 'listModels', summary: 'The models served here', tag: 'models', responses: { 200: json('the models', modelListSchema) } },
  {
    method: 'get',
    path: '/v1/models/{id}',
    operationId: 'getModel',
    summary: 'One model (also `provider/model` ids, which may hold a slash)',
    tag: 'models',
    params: modelIdParams,
    responses: { 200: json('the model', modelSchema), 404: error('model_not_found') },
  },

  // ------------------------------------------------------------ files
  {
    method: 'post',
    path: '/v1/files',
    operationId: 'createFile',
    summary: "Upload a file (OpenAI's Files API)",
    tag: 'files',
    headers: idempotencyHeaders,
    body: { required: true, content: { 'multipart/form-data': fileUploadSchema } },
    responses: {
      200: json('the file', fileSchema, { 'idempotent-replayed': { description: 'true when the answer is a replay for an Idempotency-Key' } }),
      ...IDEMPOTENCY,
      413: error('file_too_large'),
      415: error('unsupported_media_type: not multipart/form-data'),
    },
  },
  { method: 'get', path: '/v1/files', operationId: 'listFiles', summary: "The key's files", tag: 'files', query: listFilesQuery, responses: { 200: json('a page of files', fileListSchema) } },
  {
    method: 'get',
    path: '/v1/files/{id}',
    operationId: 'getFile',
    summary: 'A file',
    tag: 'files',
    params: fileIdParams,
    responses: { 200: json('the file', fileSchema), 404: notFound('file_not_found') },
  },
  {
    method: 'get',
    path: '/v1/files/{id}/content',
    operationId: 'getFileContent',
    summary: "A file's bytes (streamed)",
    tag: 'files',
    params: fileIdParams,
    responses: {
      200: {
        description: 'the bytes, with the content type of the file (application/jsonl for batch files, image/png|jpeg|webp for images)',
        headers: { 'content-disposition': { description: 'attachment; filename*=...' } },
        content: Object.fromEntries(['application/jsonl', 'image/png', 'image/jpeg', 'image/webp'].map((type) => [type, z.string().meta({ contentMediaType: type })])),
      },
      404: notFound('file_not_found'),
    },
  },
  {
    method: 'delete',
    path: '/v1/files/{id}',
    operationId: 'deleteFile',
    summary: 'Delete a file',
    tag: 'files',
    params: fileIdParams,
    responses: { 200: json("OpenAI's deleted shape", fileDeletedSchema), 404: notFound('file_not_found') },
  },

  // ------------------------------------------------------------ batches
  {
    method: 'post',
    path: '/v1/batches',
    operationId: 'createBatch',
    summary: 'Create a batch of edits from a JSONL file; answers at once (validating)',
    tag: 'batches',
    headers: idempotencyHeaders,
    body: { required: true, content: { 'application/json': batchCreateRequestSchema } },
    responses: {
      200: json('the batch', batchSchema, ratelimitHeaders),
      404: error("file_not_found: input_file_id is no file of this key's"),
      ...IDEMPOTENCY,
      413: error('request_too_large: the JSON body is over 1 MB'),
      415: error('unsupported_charset, unsupported_content_encoding'),
      429: RATE_LIMITED,
    },
  },
  { method: 'get', path: '/v1/batches', operationId: 'listBatches', summary: "The key's batches, newest first", tag: 'batches', query: listBatchesQuery, responses: { 200: json('a page of batches', batchListSchema) } },
  {
    method: 'get',
    path: '/v1/batches/{id}',
    operationId: 'getBatch',
    summary: 'A batch',
    tag: 'batches',
    params: batchIdParams,
    responses: { 200: json('the batch', batchSchema), 404: notFound('batch_not_found') },
  },
  {
    method: 'post',
    path: '/v1/batches/{id}/cancel',
    operationId: 'cancelBatch',
    summary: 'Cancel a batch: running requests finish, the rest are cancelled',
    tag: 'batches',
    params: batchIdParams,
    responses: { 200: json('the batch, cancelling', batchSchema), 404: notFound('batch_not_found'), 409: error('batch_not_cancellable: the batch is already over') },
  },

  // ------------------------------------------------------------ webhooks
  {
    method: 'post',
    path: '/v1/webhook_endpoints',
    operationId: 'createWebhookEndpoint',
    summary: 'Add a webhook endpoint of the key (its secret is shown once)',
    tag: 'webhooks',
    headers: idempotencyHeaders,
    body: { required: true, content: { 'application/json': webhookEndpointBodySchema } },
    responses: { 201: json('the endpoint, with its secret', webhookEndpointCreatedSchema), ...IDEMPOTENCY, 413: error('request_too_large: the JSON body is over 1 MB') },
  },
  { method: 'get', path: '/v1/webhook_endpoints', operationId: 'listWebhookEndpoints', summary: "The key's webhook endpoints", tag: 'webhooks', responses: { 200: json('the endpoints', webhookEndpointListSchema) } },
  {
    method: 'get',
    path: '/v1/webhook_endpoints/{id}',
    operationId: 'getWebhookEndpoint',
    summary: 'A webhook endpoint',
    tag: 'webhooks',
    params: webhookEndpointIdParams,
    responses: { 200: json('the endpoint', webhookEndpointSchema), 404: notFound('webhook_endpoint_not_found') },
  },
  {
    method: 'delete',
    path: '/v1/webhook_endpoints/{id}',
    operationId: 'deleteWebhookEndpoint',
    summary: 'Delete a webhook endpoint',
    tag: 'webhooks',
    params: webhookEndpointIdParams,
    responses: { 200: json('the deleted shape', webhookEndpointDeletedSchema), 404: notFound('webhook_endpoint_not_found') },
  },
  {
    method: 'get',
    path: '/v1/webhooks/secret',
    operationId: 'getWebhookSecret',
    summary: "The key's default secret (signs deliveries to a submission's webhook_url)",
    tag: 'webhooks',
    responses: { 200: json('the secret', webhookSecretSchema) },
  },
  {
    method: 'post',
    path: '/v1/webhooks/secret/rotate',
    operationId: 'rotateWebhookSecret',
    summary: "Replace the key's default secret",
    tag: 'webhooks',
    responses: { 200: json('the new secret', webhookSecretSchema) },
  },

  // ------------------------------------------------------------ usage and costs
  {
    method: 'get',
    path: '/v1/organization/usage/images',
    operationId: 'usageImages',
    summary: "Images and model requests per bucket (OpenAI's usage API)",
    tag: 'usage',
    query: usageImagesQuery,
    responses: { 200: json('a page of buckets', usageImagesPageSchema), 403: error('forbidden: api_key_ids names another key and this key is not admin') },
  },
  {
    method: 'get',
    path: '/v1/organization/costs',
    operationId: 'costs',
    summary: "USD per bucket (OpenAI's costs API)",
    tag: 'usage',
    query: costsQuery,
    responses: { 200: json('a page of buckets', costsPageSchema), 403: error('forbidden: api_key_ids names another key and this key is not admin') },
  },
];

/** Every operation the app mounts: those of /v1 answer the errors every /v1 route may. */
export const API_OPERATIONS: OperationSpec[] = OPERATIONS.map((op) => (op.path.startsWith('/v1/') ? { ...op, responses: { ...V1_ERRORS, ...op.responses } } : op));

/** Every answer carries x-request-id; the document says so once per response. */
function withRequestId(ops: OperationSpec[]): OperationSpec[] {
  return ops.map((op) => ({
    ...op,
    responses: Object.fromEntries(
      Object.entries(op.responses).map(([status, r]) => [status, { ...r, headers: { 'x-request-id': { description: 'identifies the request in our logs' }, ...r.headers } }]),
    ),
  }));
}

/** The OpenAPI 3.1 document of the whole API, generated from the route table and its zod schemas. */
export function buildOpenApiDocument(): Record<string, unknown> {
  return openApiDocument({
    info: {
      title: 'image-edits',
      version: '1',
      description:
        "An OpenAI-compatible image-edit service whose edits are durable jobs: POST /v1/images/edits answers as OpenAI does, or at once with a job to poll, stream or be told about by webhook. Errors are OpenAI's shape {error: {message, type, param, code}}.",
    },
    tags: [
      { name: 'edits', description: 'POST /v1/images/edits' },
      { name: 'jobs', description: 'the job resource' },
      { name: 'files', description: "OpenAI's Files API" },
      { name: 'batches', description: "OpenAI's Batch API for /v1/images/edits" },
      { name: 'models', description: 'the model registry as served here' },
      { name: 'webhooks', description: 'signed deliveries (Standard Webhooks)' },
      { name: 'usage', description: "OpenAI's usage and costs API" },
      { name: 'operations', description: 'probes, metrics and this document' },
      { name: 'console', description: 'the browser console (HTML)' },
    ],
    securitySchemes: {
      apiKey: { type: 'http', scheme: 'bearer', description: 'an API key (npm run keys -- create --name NAME)' },
      metricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, when it is set' },
    },
    requestComponents: REQUEST_COMPONENTS,
    responseComponents: RESPONSE_COMPONENTS,
    operations: withRequestId(API_OPERATIONS),
  });
}

/** GET /openapi.json: the document, built once. */
export function openApiRouter(): Router {
  const router = Router();
  const body = JSON.stringify(buildOpenApiDocument());
  router.get('/openapi.json', (_req, res) => {
    res.type('application/json').send(body);
  });
  return router;
}
