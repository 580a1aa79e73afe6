import { z } from 'zod';
import { BATCH_STATUSES, batchCreateSchema } from './batch';
import { editFieldsSchema, WEBHOOK_EVENTS } from './edit-request';
import { invalidRequest } from './errors';
import { customIssue, inputError, MAX_UNIX_SECONDS, mergeBracketLists, queryInt, queryList, querySingle } from './http-input';
import { JOB_STATUSES } from './job';
import { priceSchema } from './registry';

/**
 * Every request and answer of the HTTP API as zod schemas, declared once: the routes check their
 * path ids, queries and bodies with the request schemas (`parseInput`), and the OpenAPI document
 * (`GET /openapi.json`, apps/api/src/openapi.ts) is generated from all of them. The answers'
 * schemas say what the presenters (job-view.ts, batch.ts, the routes' views) render; the tests
 * validate the service's real answers against the document, so the two cannot drift apart.
 */

// ---------------------------------------------------------------- shared pieces

const unix = z.number().int().min(0).meta({ description: 'unix seconds' });
const unixOrNull = unix.nullable();
const strings = z.array(z.string());
const metadata = z.record(z.string(), z.string()).meta({ description: 'up to 16 string pairs' });

/** OpenAI's error shape: every error the API answers. */
export const errorSchema = z
  .object({
    error: z.object({
      message: z.string().meta({ description: 'what went wrong and what to fix' }),
      type: z.string().meta({ description: "OpenAI's error type: invalid_request_error, authentication_error, not_found_error, rate_limit_error, server_error, ..." }),
      param: z.string().nullable().meta({ description: 'the field, parameter or header at fault' }),
      code: z.string().nullable().meta({ description: 'a stable code (never null for errors of this service)' }),
    }),
  })
  .meta({ description: "OpenAI's error shape" });

const deleted = (object: string) => z.object({ id: z.string(), object: z.literal(object), deleted: z.literal(true) });

const listOf = <T extends z.ZodType>(item: T) =>
  z.object({ object: z.literal('list'), data: z.array(item), first_id: z.string().nullable(), last_id: z.string().nullable(), has_more: z.boolean() });

// ---------------------------------------------------------------- edits and jobs (job-view.ts)

export const tokenUsageSchema = z
  .object({
    input_tokens: z.number().int(),
    input_tokens_details: z.object({ image_tokens: z.number().int(), text_tokens: z.number().int() }).optional(),
    output_tokens: z.number().int(),
    total_tokens: z.number().int(),
    output_tokens_details: z.record(z.string(), z.number()).optional(),
  })
  .meta({ description: "the provider's token usage in OpenAI's shape" });

const imageDatum = z.union([
  z.object({ url: z.string().meta({ description: 'presigned, valid SIGNED_URL_TTL_SECONDS' }), revised_prompt: z.string().optional() }),
  z.object({ b64_json: z.string(), revised_prompt: z.string().optional() }),
]);

/** OpenAI's image response (`editResponse`). */
export const imagesResponseSchema = z
  .object({
    created: unix,
    data: z.array(imageDatum),
    background: z.string().optional(),
    output_format: z.string().optional(),
    quality: z.string().optional(),
    size: z.string().optional(),
    usage: tokenUsageSchema.optional(),
  })
  .meta({ description: "OpenAI's image response; GPT image models add background, output_format, quality, size and usage" });

const jobError = z.object({ message: z.string(), type: z.string(), code: z.string(), param: z.string().nullable().optional() });

/** The job object of design.md §3 (`jobObject`). */
export const jobSchema = z
  .object({
    id: z.string(),
    object: z.literal('image.edit.job'),
    status: z.enum(JOB_STATUSES),
    model: z.string(),
    provider: z.string(),
    created_at: unix,
    started_at: unixOrNull,
    completed_at: unixOrNull,
    attempts: z.number().int(),
    queue_position: z.number().int().nullable().meta({ description: "jobs ahead of a queued one on its provider's queue" }),
    result: imagesResponseSchema.nullable(),
    expires_at: unixOrNull.meta({ description: 'when the result is deleted (retention)' }),
    result_expired: z.boolean(),
    error: jobError.nullable(),
    usage: z
      .object({
        images: z.number().int(),
        input_tokens: z.number().int().nullable(),
        input_tokens_details: z.object({ image_tokens: z.number().int(), text_tokens: z.number().int() }).nullable(),
        output_tokens: z.number().int().nullable(),
        output_tokens_details: z.record(z.string(), z.number()).optional(),
        total_tokens: z.number().int().nullable(),
        cost_usd: z.number(),
      })
      .nullable(),
    metadata,
    urls: z.object({ get: z.string() }),
  })
  .meta({ description: 'An edit job (design.md §3); fields may be added, never renamed' });

export const jobListSchema = listOf(jobSchema);
export const jobDeletedSchema = deleted('image.edit.job.deleted');

/** The multipart form of POST /v1/images/edits: the text fields (`editFieldsSchema`) and the files. */
export const editMultipartSchema = editFieldsSchema
  .extend({
    image: z
      .union([z.file(), z.array(z.file())])
      .meta({ description: "the image(s) to edit (PNG, JPEG, WEBP as the model takes them); repeat `image` or send `image[]` for several; the first is the canvas" }),
    mask: z.file().optional().meta({ description: "transparent where the image is to be edited (OpenAI's convention)" }),
  })
  .meta({ description: "OpenAI's image-edit request (multipart/form-data); `metadata[key]=value` fields build metadata" });

/**
 * A reference to an image in the JSON form of edits and in batch lines: exactly one of `file_id`
 * (a vision or user_data file of the key) and `image_url` (`https://` or a `data:` URL). Its
 * messages follow the name of the reference (`images[1]`, `mask`): see `parseImageRef`.
 */
export const imageRefSchema = z
  .preprocess(
    (v, ctx) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) ctx.issues.push(customIssue('must be {"file_id": ...} or {"image_url": ...}', v));
      else if (((v as Record<string, unknown>).file_id === undefined) === ((v as Record<string, unknown>).image_url === undefined)) {
        ctx.issues.push(customIssue('must have exactly one of file_id and image_url', v));
      } else return v;
      return z.NEVER;
    },
    z.object({
      file_id: z.string({ error: 'must be a file id' }).min(1, 'must be a file id').optional(),
      image_url: z
        .string({ error: 'must be an https:// or data: URL' })
        .min(1, 'must be an https:// or data: URL')
        .optional()
        .meta({ description: 'https:// (fetched through the egress guard) or data:image/png|jpeg|webp;base64,...' }),
    }),
  )
  .meta({ description: 'exactly one of file_id and image_url', oneOf: [{ required: ['file_id'] }, { required: ['image_url'] }] });

/** A reference checked, or the 400 naming it (`images[0]`, `images[0].file_id`, `mask.image_url`). */
export function parseImageRef(entry: unknown, param: string): { fileId: string } | { imageUrl: string } {
  const r = imageRefSchema.safeParse(entry);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const name = [param, ...issue.path.map(String)].join('.');
    throw invalidRequest(`${name} ${issue.message}`, name, 'invalid_value');
  }
  return r.data.file_id !== undefined ? { fileId: r.data.file_id } : { imageUrl: r.data.image_url! };
}

/** The JSON form's images (1 to 16, the first is the canvas). */
export const MAX_JSON_IMAGES = 16;
const imagesMessage = `images must be a list of 1 to ${MAX_JSON_IMAGES} entries, each {"file_id": ...} or {"image_url": ...}`;

/**
 * The JSON form's `images`. Its own issues (absent, not a list, how many) are reported before any
 * entry's, which `parseImageRef` names one by one after the model's own limit was checked.
 */
export const jsonImagesSchema = z
  .array(imageRefSchema, { error: (iss) => (iss.input === undefined ? 'images is required: a list of {"file_id": ...} or {"image_url": ...}' : imagesMessage) })
  .min(1, imagesMessage)
  .max(MAX_JSON_IMAGES, imagesMessage);

/** The 400 of the images list itself (not of an entry), if any. */
export function imagesListError(images: unknown) {
  const issue = jsonImagesSchema.safeParse(images, { reportInput: true }).error?.issues.find((i) => i.path.length === 0);
  return issue ? inputError({ ...issue, path: ['images'] }) : undefined;
}

/** The JSON form of POST /v1/images/edits: the same fields, images by reference. */
export const editJsonSchema = editFieldsSchema
  .extend({
    images: jsonImagesSchema,
    mask: imageRefSchema.nullable().optional(),
  })
  .meta({ description: 'the JSON form of an edit: images by file_id or image_url, other fields as in the multipart form' });

export const jobIdParams = z.object({ id: z.string().meta({ description: 'a job id (job_...)' }) });

export const listJobsQuery = z.object({
  limit: queryInt('limit', 1, 100).meta({ description: 'jobs per page (default 20)' }),
  after: z
    .string({ error: 'after must be a job id (the last_id of the previous page)' })
    .regex(/^job_[0-9a-z]+$/, 'after must be a job id (the last_id of the previous page)')
    .optional()
    .meta({ description: 'the last_id of the previous page' }),
  status: z.enum(JOB_STATUSES, { error: `status must be one of ${JOB_STATUSES.join(', ')}` }).optional(),
  // Unix seconds up to the end of year 9999: a larger one is no date Postgres (or a JS Date) can compare with
  created_after: queryInt('created_after', 0, MAX_UNIX_SECONDS).meta({ description: 'unix seconds' }),
  created_before: queryInt('created_before', 0, MAX_UNIX_SECONDS).meta({ description: 'unix seconds' }),
});

/** The longest a long-poll (`?wait=`) or `Prefer: wait=` may hold a request. */
export const MAX_WAIT_SECONDS = 60;

export const getJobQuery = z.object({
  wait: queryInt('wait', 0, MAX_WAIT_SECONDS).meta({ description: 'long-poll: answer as soon as the job is final, or after this many seconds' }),
});

// Redis stream ids (packages/queue's isStreamId): what the events' `id:` lines carry
const eventId = z
  .string()
  .regex(/^\d{1,15}-\d{1,10}$/, 'Last-Event-ID must be the id of an event this stream sent')
  .meta({ description: 'the id of the last event received: only what came after is sent' });

export const jobEventsQuery = z.object({ last_event_id: eventId.optional() });
export const jobEventsHeaders = z.object({ 'Last-Event-ID': eventId.optional() });

/** The data of GET /v1/jobs/{id}/events' events, by event name. */
export const jobEventSchemas = {
  status: z.object({ status: z.enum(JOB_STATUSES), queue_position: z.number().int().nullable().optional() }),
  partial_image: z
    .object({ partial_image_index: z.number().int(), b64_json: z.string(), size: z.string(), output_format: z.string() })
    ,
  job: jobSchema,
};

/** OpenAI's streamed edit (`stream: true`): its events' data, by event name. */
const streamedImage = {
  b64_json: z.string(),
  created_at: unix,
  size: z.string(),
  quality: z.string(),
  background: z.string(),
  output_format: z.string(),
};
export const editStreamEventSchemas = {
  'image_edit.partial_image': z
    .object({ type: z.literal('image_edit.partial_image'), ...streamedImage, partial_image_index: z.number().int() })
    ,
  'image_edit.completed': z
    .object({ type: z.literal('image_edit.completed'), ...streamedImage, usage: tokenUsageSchema.optional() })
    ,
  error: z.object({ type: z.literal('error'), error: errorSchema.shape.error }),
};

/** RFC 7240 preferences the edits honour: `respond-async` and `wait=N` (seconds). */
export interface Prefer {
  respondAsync: boolean;
  wait?: number;
}

const IDEMPOTENCY_KEY_MESSAGE = 'Idempotency-Key must be 1 to 255 characters';

/** Request headers of the creating endpoints and of edits. */
export const editHeaders = z.object({
  Prefer: z
    .string()
    .optional()
    .transform((prefer, ctx): Prefer => {
      const out: Prefer = { respondAsync: false };
      for (const part of (prefer ?? '').split(',')) {
        const [name, value] = part.trim().split(';')[0]!.split('=').map((x) => x?.trim().toLowerCase());
        if (name === 'respond-async') out.respondAsync = true;
        if (name === 'wait') {
          // plain decimal digits only: Number() would also take 0x10, 1e3, 0b1 and ' '
          if (!value || !/^\d{1,9}$/.test(value)) {
            ctx.issues.push(customIssue(`Prefer: wait must be a whole number of seconds; got '${value ?? ''}'`, prefer));
            return z.NEVER;
          }
          out.wait = Number(value);
        }
      }
      return out;
    })
    .meta({ description: '`respond-async`: 202 + Location + the job object at once; `wait=N` (seconds, at most 60): the job object once final (200) or after N s (202); none: wait and answer as OpenAI does' }),
  'Idempotency-Key': z
    .string()
    .min(1, IDEMPOTENCY_KEY_MESSAGE)
    .max(255, IDEMPOTENCY_KEY_MESSAGE)
    .refine((k) => k.trim() !== '', IDEMPOTENCY_KEY_MESSAGE)
    .optional()
    .meta({ description: 'retries with the same key and parameters answer like the first request (24 h)' }),
  'Cancel-After': z.string().optional().meta({ description: 'a deadline to start: `90s`, `5m`, `2h` or seconds; an unstarted job then expires unbilled' }),
});
export const idempotencyHeaders = editHeaders.pick({ 'Idempotency-Key': true });

// ---------------------------------------------------------------- files

export const FILE_PURPOSE_VALUES = ['batch', 'vision', 'user_data'] as const;
/** OpenAI's bounds of `expires_after[seconds]`: one hour to 30 days. */
export const MIN_FILE_EXPIRES_SECONDS = 3600;
export const MAX_FILE_EXPIRES_SECONDS = 2_592_000;

export const fileSchema = z
  .object({
    id: z.string(),
    object: z.literal('file'),
    bytes: z.number().int(),
    created_at: unix,
    expires_at: unixOrNull,
    filename: z.string(),
    purpose: z.enum([...FILE_PURPOSE_VALUES, 'batch_output']),
    status: z.literal('processed'),
  })
  .meta({ description: "OpenAI's file object" });
export const fileListSchema = listOf(fileSchema);
export const fileDeletedSchema = deleted('file');

const purposeSchema = z.preprocess(
  (v) => (v === '' ? undefined : v),
  z.enum(FILE_PURPOSE_VALUES, {
    error: (iss) =>
      iss.input === undefined
        ? `purpose is required: one of ${FILE_PURPOSE_VALUES.join(', ')}`
        : `purpose must be one of ${FILE_PURPOSE_VALUES.map((p) => `'${p}'`).join(', ')}; got '${String(iss.input)}'`,
  }),
);

const expiresSecondsMessage = `expires_after.seconds must be an integer from ${MIN_FILE_EXPIRES_SECONDS} (1 hour) to ${MAX_FILE_EXPIRES_SECONDS} (30 days)`;
const expiresAfterSchema = z.preprocess(
  (v, ctx) => {
    if (v === '') return undefined;
    if (typeof v !== 'string') return v;
    try {
      return JSON.parse(v);
    } catch {
      ctx.issues.push(customIssue('expires_after must be sent as expires_after[anchor] and expires_after[seconds]', v));
      return z.NEVER;
    }
  },
  z
    .object(
      {
        anchor: z.literal('created_at', { error: "expires_after.anchor must be 'created_at'" }),
        seconds: z.preprocess(
          (s) => (typeof s === 'string' ? (/^\d+$/.test(s.trim()) ? Number(s) : Number.NaN) : s === undefined ? Number.NaN : s),
          z.number({ error: expiresSecondsMessage }).int({ error: expiresSecondsMessage }).min(MIN_FILE_EXPIRES_SECONDS, { error: expiresSecondsMessage }).max(MAX_FILE_EXPIRES_SECONDS, { error: expiresSecondsMessage }),
        ),
      },
      { error: 'expires_after must have anchor and seconds' },
    )
    .optional(),
);

/** The fields of POST /v1/files beside the file (multer builds `expires_after` from its bracketed fields). */
export const fileUploadFieldsSchema = z.object({
  purpose: purposeSchema.meta({ description: 'batch (JSONL), vision or user_data (PNG, JPEG or WEBP images)' }),
  expires_after: expiresAfterSchema.meta({ description: 'sent as expires_after[anchor]=created_at and expires_after[seconds]; batch files default to 30 days, others are kept' }),
});

export const fileUploadSchema = fileUploadFieldsSchema
  .extend({ file: z.file().meta({ description: 'the file (at most MAX_FILE_BYTES; images at most 50 MB)' }) })
  ;

export const fileIdParams = z.object({ id: z.string().regex(/^file-[0-9a-z]+$/).meta({ description: 'a file id (file-...)' }) });

const MAX_FILE_LIST_LIMIT = 10_000;
export const listFilesQuery = z.object({
  limit: queryInt('limit', 1, MAX_FILE_LIST_LIMIT, { emptyIsAbsent: false }).meta({ description: `files per page (default ${MAX_FILE_LIST_LIMIT})` }),
  order: z.enum(['asc', 'desc'], { error: "order must be 'asc' or 'desc'" }).optional().meta({ description: 'by creation (default desc)' }),
  after: z
    .string({ error: 'after must be a file id (the last_id of the previous page)' })
    .regex(/^file-[0-9a-z]+$/, 'after must be a file id (the last_id of the previous page)')
    .optional(),
  // a repeated purpose is one text, as it always was: it then matches no file
  purpose: z.preprocess((v) => (Array.isArray(v) ? String(v) : v), z.string().optional()),
});

// ---------------------------------------------------------------- batches (batch.ts)

export const batchSchema = z
  .object({
    id: z.string(),
    object: z.literal('batch'),
    endpoint: z.string(),
    errors: z
      .object({ object: z.literal('list'), data: z.array(z.object({ code: z.string(), message: z.string(), param: z.string().nullable(), line: z.number().int().nullable() })) })
      .nullable(),
    input_file_id: z.string(),
    completion_window: z.string(),
    status: z.enum(BATCH_STATUSES),
    output_file_id: z.string().nullable(),
    error_file_id: z.string().nullable(),
    created_at: unix,
    in_progress_at: unixOrNull,
    expires_at: unixOrNull,
    finalizing_at: unixOrNull,
    completed_at: unixOrNull,
    failed_at: unixOrNull,
    expired_at: unixOrNull,
    cancelling_at: unixOrNull,
    cancelled_at: unixOrNull,
    request_counts: z.object({ total: z.number().int(), completed: z.number().int(), failed: z.number().int() }),
    metadata: metadata.nullable(),
  })
  .meta({ description: "OpenAI's batch object" });
export const batchListSchema = listOf(batchSchema);
export const batchCreateRequestSchema = batchCreateSchema;

export const batchIdParams = z.object({ id: z.string().regex(/^batch_[0-9a-z]+$/).meta({ description: 'a batch id (batch_...)' }) });

export const listBatchesQuery = z.object({
  limit: queryInt('limit', 1, 100, { emptyIsAbsent: false }).meta({ description: 'batches per page (default 20)' }),
  after: z
    .string({ error: 'after must be a batch id (the last_id of the previous page)' })
    .regex(/^batch_[0-9a-z]+$/, 'after must be a batch id (the last_id of the previous page)')
    .optional(),
});

// ---------------------------------------------------------------- models

export const modelSchema = z
  .object({
    id: z.string(),
    object: z.literal('model'),
    created: unix,
    owned_by: z.string(),
    providers: strings,
    capabilities: z.object({
      max_images: z.number().int(),
      image_formats: strings,
      max_image_bytes: z.number().int(),
      max_mask_bytes: z.number().int(),
      max_prompt_chars: z.number().int(),
      sizes: strings,
      default_size: z.string(),
      response_formats: strings,
      default_response_format: z.enum(['url', 'b64_json']),
      requires_square: z.boolean(),
      mask: z.boolean(),
      mask_or_transparency_required: z.boolean(),
      search_prompt_required: z.boolean(),
      qualities: strings,
      backgrounds: strings,
      output_formats: strings,
      output_compression: z.boolean(),
      input_fidelities: strings,
      moderations: strings,
      safety_identifier: z.boolean(),
      stream: z.boolean(),
    }),
    pricing: priceSchema,
  })
  .meta({ description: "OpenAI's model object, with what the model accepts and its price (USD)" });
export const modelListSchema = z.object({ object: z.literal('list'), data: z.array(modelSchema) });
export const modelIdParams = z.object({ id: z.string().meta({ description: 'a model id; `provider/model` (e.g. azure-openai/gpt-image-1) pins one provider' }) });

// ---------------------------------------------------------------- webhooks

const webhookEndpointFields = {
  id: z.string(),
  object: z.literal('webhook_endpoint'),
  url: z.string(),
  events: z.array(z.enum(WEBHOOK_EVENTS)),
  description: z.string().nullable(),
  status: z.enum(['enabled', 'disabled']),
  disabled_at: unixOrNull,
  created_at: unix,
};
export const webhookEndpointSchema = z.object(webhookEndpointFields);
export const webhookEndpointCreatedSchema = z
  .object({ ...webhookEndpointFields, secret: z.string().meta({ description: 'whsec_...: shown only here' }) })
  ;
export const webhookEndpointListSchema = z.object({ object: z.literal('list'), data: z.array(webhookEndpointSchema) });
export const webhookEndpointDeletedSchema = deleted('webhook_endpoint');
export const webhookSecretSchema = z.object({ secret: z.string() });

export const webhookDeliverySchema = z
  .object({
    id: z.string(),
    object: z.literal('webhook_delivery'),
    webhook_id: z.string().meta({ description: 'the webhook-id header: the same on every attempt' }),
    event: z.string(),
    job_id: z.string().nullable(),
    endpoint_id: z.string().nullable(),
    url: z.string(),
    status: z.enum(['pending', 'succeeded', 'failed']),
    attempts: z.array(
      z.object({ attempt: z.number().int(), status_code: z.number().int().nullable(), latency_ms: z.number().int().nullable(), error: z.string().nullable(), created_at: unix }),
    ),
    last_status_code: z.number().int().nullable(),
    last_error: z.string().nullable(),
    next_attempt_at: unixOrNull,
    created_at: unix,
    updated_at: unix,
  })
  ;
export const webhookDeliveryListSchema = z.object({ object: z.literal('list'), data: z.array(webhookDeliverySchema) });

export const MAX_WEBHOOK_URL_CHARS = 2048;
const ENDPOINT_FIELDS = ['url', 'events', 'description'];
const absentIfNull = (v: unknown) => (v === null ? undefined : v);
const eventsMessage = `events must be a list of event types (${WEBHOOK_EVENTS.join(', ')})`;

/** The JSON body of POST /v1/webhook_endpoints; each mistake is a 400 naming its field. */
export const webhookEndpointBodySchema = z
  .preprocess(
    (v, ctx) => {
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v;
      ctx.issues.push(customIssue('the body must be a JSON object such as {"url": "https://..."} (Content-Type: application/json)', v, 'invalid_json', null));
      return z.NEVER;
    },
    z.strictObject(
      {
        url: z.preprocess(
          (v) => (v === null || v === '' ? undefined : v),
          z
            .string({ error: (iss) => (iss.input === undefined ? 'url is required' : 'url must be a string') })
            .max(MAX_WEBHOOK_URL_CHARS, `url must be at most ${MAX_WEBHOOK_URL_CHARS} characters`)
            .transform((u) => u.trim()),
        ),
        events: z.preprocess(
          absentIfNull,
          z
            .array(z.unknown(), { error: eventsMessage })
            .superRefine((list, ctx) => {
              const bad = list.find((e) => typeof e !== 'string' || !(WEBHOOK_EVENTS as readonly string[]).includes(e));
              if (bad !== undefined || list.some((e) => typeof e !== 'string')) {
                ctx.addIssue(customIssue(`events: unknown event ${JSON.stringify(bad)}; known: ${WEBHOOK_EVENTS.join(', ')}`, list));
              }
            })
            .transform((list) => [...new Set(list as (typeof WEBHOOK_EVENTS)[number][])])
            .optional()
            .meta({ items: { type: 'string', enum: [...WEBHOOK_EVENTS] }, description: 'events sent there; none: every final event (job.* and batch.*)' }),
        ),
        description: z.preprocess(absentIfNull, z.string({ error: 'description must be a string of at most 256 characters' }).max(256, 'description must be a string of at most 256 characters').optional()),
      },
      { error: (iss) => (iss.code === 'unrecognized_keys' ? `unknown parameter '${iss.keys[0]}'; known: ${ENDPOINT_FIELDS.join(', ')}` : undefined) },
    ),
  )
  ;

export const webhookEndpointIdParams = z.object({ id: z.string().meta({ description: 'a webhook endpoint id (we_...)' }) });
export const webhookDeliveryParams = z.object({ id: z.string().meta({ description: 'a job id' }), delivery_id: z.string().meta({ description: 'a webhook delivery id' }) });

// ---------------------------------------------------------------- usage and costs

export const BUCKET_WIDTHS = { '1m': 60, '1h': 3600, '1d': 86_400 } as const;
export type BucketWidth = keyof typeof BUCKET_WIDTHS;
/** OpenAI's defaults and maxima of `limit` (buckets per page) per bucket width */
export const USAGE_LIMITS: Record<BucketWidth, { def: number; max: number }> = { '1m': { def: 60, max: 1440 }, '1h': { def: 24, max: 168 }, '1d': { def: 7, max: 31 } };
export const COST_LIMITS: Record<BucketWidth, { def: number; max: number }> = { '1m': { def: 60, max: 1440 }, '1h': { def: 24, max: 168 }, '1d': { def: 7, max: 180 } };
export const USAGE_SOURCES = ['image.edit', 'batch'] as const;
export const USAGE_GROUP_BY = ['model', 'size', 'source', 'api_key_id'] as const;
export const COST_GROUP_BY = ['line_item', 'api_key_id'] as const;

const unixParam = (name: string, required: boolean) => {
  const message = `${name} must be a time in unix seconds (an integer from 0 to ${MAX_UNIX_SECONDS})`;
  const inner = z.preprocess(
    (v) => (v === '' ? undefined : typeof v === 'string' && /^\d{1,12}$/.test(v) ? Number(v) : v),
    z.number({ error: (iss) => (iss.input === undefined ? `${name} is required (unix seconds)` : message) }).int({ error: message }).min(0, { error: message }).max(MAX_UNIX_SECONDS, { error: message }),
  );
  return querySingle(name, required ? inner : inner.optional()).meta({ description: 'unix seconds' });
};

/** The usage and costs reports' query, checked: the buckets it asks for start at `at`. */
export interface ReportQuery {
  start: number;
  end: number;
  /** seconds */
  width: number;
  /** buckets per page */
  limit: number;
  /** the first bucket of this page */
  at: number;
  groupBy: string[];
  apiKeyIds: string[] | undefined;
  models: string[] | undefined;
  sizes: string[] | undefined;
  sources: string[] | undefined;
}

/**
 * The query of the usage and costs reports: each refusal a 400 naming the parameter. `limit` and
 * `page` are checked against the bucket width and the range they ask for.
 */
function reportQuery<S extends z.ZodRawShape>(spec: { extra: S; groups: readonly string[]; limits: Record<BucketWidth, { def: number; max: number }> }) {
  const shape = {
    start_time: unixParam('start_time', true),
    end_time: unixParam('end_time', false).meta({ description: 'unix seconds (default now)' }),
    bucket_width: querySingle('bucket_width', z.enum(['1m', '1h', '1d'], { error: `bucket_width must be one of ${Object.keys(BUCKET_WIDTHS).join(', ')}` }).optional()).meta({ description: 'default 1d; buckets are UTC multiples of it' }),
    group_by: queryList('group_by', { ok: (g) => spec.groups.includes(g), message: (g) => `group_by: '${g}' is not one of ${spec.groups.join(', ')}`, values: spec.groups }),
    api_key_ids: queryList('api_key_ids', { ok: (id) => /^key_[0-9a-z]+$/.test(id), message: (id) => `api_key_ids: '${id}' is not an API key id` }).meta({
      description: 'an admin key may read any key; another key only its own (403 otherwise)',
    }),
    ...spec.extra,
    limit: querySingle('limit', z.string().optional()).meta({
      description: `buckets per page: ${Object.entries(spec.limits)
        .map(([w, l]) => `${w} ${l.def} (at most ${l.max})`)
        .join(', ')}`,
      type: 'integer',
      minimum: 1,
    }),
    page: querySingle('page', z.string().optional()).meta({ description: 'the next_page of the previous answer' }),
  };
  const names = Object.keys(shape);
  const lists = ['group_by', 'api_key_ids', ...Object.keys(spec.extra)];
  return z.preprocess(
    (q) => (typeof q === 'object' && q !== null ? mergeBracketLists(q as Record<string, unknown>, names, lists) : q),
    z
      .strictObject(shape, { error: (iss) => (iss.code === 'unrecognized_keys' ? `Unknown parameter: '${iss.keys[0]}'. This endpoint takes ${names.join(', ')}` : undefined) })
      .transform((parsed, ctx): ReportQuery => {
        const q = parsed as Record<string, unknown>;
        const start = q.start_time as number;
        const end = (q.end_time as number | undefined) ?? Math.ceil(Date.now() / 1000);
        if (end <= start) {
          ctx.issues.push({ ...customIssue('end_time must be after start_time', q.end_time, 'invalid_value', 'end_time') });
          return z.NEVER;
        }
        const widthName = (q.bucket_width as BucketWidth | undefined) ?? '1d';
        const width = BUCKET_WIDTHS[widthName];
        const bounds = spec.limits[widthName];
        let limit = bounds.def;
        const limitText = q.limit as string | undefined;
        if (limitText !== undefined) {
          if (!/^\d{1,6}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > bounds.max) {
            ctx.issues.push(customIssue(`limit must be an integer from 1 to ${bounds.max} with bucket_width ${widthName}`, limitText, 'invalid_value', 'limit'));
            return z.NEVER;
          }
          limit = Number(limitText);
        }
        // buckets: multiples of the width, the first one holding start_time
        const first = Math.floor(start / width) * width;
        let at = first;
        const cursor = q.page as string | undefined;
        if (cursor !== undefined) {
          const m = /^page_(\d{1,15})$/.exec(cursor);
          const t = m ? Number(m[1]) : Number.NaN;
          if (!m || t < first || t >= end || (t - first) % width !== 0) {
            ctx.issues.push(customIssue('page must be the next_page of an earlier answer to the same query', cursor, 'invalid_value', 'page'));
            return z.NEVER;
          }
          at = t;
        }
        const list = (name: string) => q[name] as string[] | undefined;
        return { start, end, width, limit, at, groupBy: list('group_by') ?? [], apiKeyIds: list('api_key_ids'), models: list('models'), sizes: list('sizes'), sources: list('sources') };
      }),
  );
}

export const usageImagesQuery = reportQuery({
  extra: {
    models: queryList('models'),
    sizes: queryList('sizes'),
    sources: queryList('sources', { ok: (s) => (USAGE_SOURCES as readonly string[]).includes(s), message: (s) => `sources: '${s}' is not one of ${USAGE_SOURCES.join(', ')}`, values: USAGE_SOURCES }),
  },
  groups: USAGE_GROUP_BY,
  limits: USAGE_LIMITS,
});
export const costsQuery = reportQuery({ extra: {}, groups: COST_GROUP_BY, limits: COST_LIMITS });

const bucketPage = <T extends z.ZodType>(result: T) =>
  z.object({
    object: z.literal('page'),
    data: z.array(z.object({ object: z.literal('bucket'), start_time: unix, end_time: unix, results: z.array(result) })),
    has_more: z.boolean(),
    next_page: z.string().nullable(),
  });

export const usageImagesPageSchema = bucketPage(
  z.object({
    object: z.literal('organization.usage.images.result'),
    images: z.number().int(),
    num_model_requests: z.number().int(),
    source: z.string().nullable(),
    size: z.string().nullable(),
    model: z.string().nullable(),
    api_key_id: z.string().nullable(),
    project_id: z.null(),
    user_id: z.null(),
  }),
).meta({ description: "OpenAI's page of usage buckets" });

export const costsPageSchema = bucketPage(
  z.object({
    object: z.literal('organization.costs.result'),
    amount: z.object({ value: z.number(), currency: z.literal('usd') }),
    line_item: z.string().nullable(),
    project_id: z.null(),
    api_key_id: z.string().nullable(),
  }),
).meta({ description: "OpenAI's page of cost buckets" });

// ---------------------------------------------------------------- probes

export const healthSchema = z.object({ status: z.literal('ok') });
export const readinessSchema = z
  .union([
    z.object({ status: z.enum(['ready', 'unavailable']), checks: z.record(z.string(), z.string()).meta({ description: "postgres, redis, s3: 'ok' or 'error: ...'" }) }),
    z.object({ status: z.literal('draining') }),
  ])
  .meta({ description: 'ready: Postgres, Redis and S3 answer; draining: the process is shutting down' });

/** The named request schemas of the document (`components.schemas`, read as a client sends them). */
export const REQUEST_COMPONENTS = {
  EditRequest: editMultipartSchema,
  JsonEditRequest: editJsonSchema,
  ImageRef: imageRefSchema,
  FileUploadRequest: fileUploadSchema,
  CreateBatchRequest: batchCreateRequestSchema,
  CreateWebhookEndpointRequest: webhookEndpointBodySchema,
};

/** The named answers of the document (`components.schemas`, as the service renders them). */
export const RESPONSE_COMPONENTS = {
  Error: errorSchema,
  TokenUsage: tokenUsageSchema,
  ImagesResponse: imagesResponseSchema,
  Job: jobSchema,
  JobList: jobListSchema,
  JobDeleted: jobDeletedSchema,
  JobStatusEvent: jobEventSchemas.status,
  JobPartialImageEvent: jobEventSchemas.partial_image,
  ImageEditPartialImageEvent: editStreamEventSchemas['image_edit.partial_image'],
  ImageEditCompletedEvent: editStreamEventSchemas['image_edit.completed'],
  ImageEditErrorEvent: editStreamEventSchemas.error,
  File: fileSchema,
  FileList: fileListSchema,
  FileDeleted: fileDeletedSchema,
  Batch: batchSchema,
  BatchList: batchListSchema,
  Model: modelSchema,
  ModelList: modelListSchema,
  WebhookEndpoint: webhookEndpointSchema,
  WebhookEndpointCreated: webhookEndpointCreatedSchema,
  WebhookEndpointList: webhookEndpointListSchema,
  WebhookEndpointDeleted: webhookEndpointDeletedSchema,
  WebhookSecret: webhookSecretSchema,
  WebhookDelivery: webhookDeliverySchema,
  WebhookDeliveryList: webhookDeliveryListSchema,
  UsageImagesPage: usageImagesPageSchema,
  CostsPage: costsPageSchema,
  Health: healthSchema,
  Readiness: readinessSchema,
};

