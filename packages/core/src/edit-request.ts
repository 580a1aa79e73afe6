import { z } from 'zod';
import { invalidRequest, type ServiceError, tooLarge } from './errors';
import type { ImageFormat, ModelCapabilities, ResponseFormat } from './models';

/**
 * The text fields of an edit request, as multipart sends them (everything is a string) or as JSON
 * (numbers may be numbers). Per-model rules come after, in checkEditParams.
 */
const intField = (name: string, min: number, max: number) =>
  z.union([z.number(), z.string().trim().regex(/^-?\d+$/, `${name} must be an integer`)])
    .transform((v) => Number(v))
    .refine((v) => Number.isInteger(v) && v >= min && v <= max, `${name} must be an integer from ${min} to ${max}`);

const oneOf = (name: string, values: readonly string[]) =>
  z.string().refine((v) => values.includes(v), `${name} must be one of ${values.map((v) => `'${v}'`).join(', ')}`);

export const editFieldsSchema = z.object({
  prompt: z.string({ error: 'prompt is required' }).refine((p) => p.trim().length > 0, 'prompt must not be empty'),
  model: z.string().trim().min(1, 'model must not be empty').optional(),
  n: intField('n', 1, 10).optional(),
  size: z.string().trim().optional(),
  response_format: oneOf('response_format', ['url', 'b64_json']).optional(),
  user: z.string().max(256, 'user must be at most 256 characters').optional(),
  background: oneOf('background', ['transparent', 'opaque', 'auto']).optional(),
  quality: oneOf('quality', ['standard', 'low', 'medium', 'high', 'xhigh', 'max', 'auto', 'hd']).optional(),
  // gif and svg are OpenAI's too: refused per model (unsupported_parameter), not as unknown values
  output_format: oneOf('output_format', ['png', 'jpeg', 'webp', 'gif', 'svg']).optional(),
  output_compression: intField('output_compression', 0, 100).optional(),
  input_fidelity: oneOf('input_fidelity', ['high', 'low']).optional(),
  moderation: oneOf('moderation', ['auto', 'low']).optional(),
  safety_identifier: z.string().max(256, 'safety_identifier must be at most 256 characters').optional(),
  // OpenAI's parameters that no model served here takes: known (never `unknown_parameter`), refused per model
  complexity: z.unknown().optional(),
  frame_count: z.unknown().optional(),
  frame_duration_ms: z.unknown().optional(),
  svg: z.unknown().optional(),
  markup: z.unknown().optional(),
  stream: z.union([z.boolean(), z.enum(['true', 'false'])]).optional(),
  partial_images: intField('partial_images', 0, 3).optional(),
  /** Stability search-and-replace: what to find in the image */
  search_prompt: z.string().max(10000, 'search_prompt must be at most 10000 characters').optional(),
  /** up to 16 string pairs; multipart sends `metadata[key]=value` or one JSON object */
  metadata: z.unknown().optional(),
  webhook_url: z.string().trim().max(2048, 'webhook_url must be at most 2048 characters').optional(),
  /** which events go to webhook_url: a list or a comma-separated string */
  webhook_events_filter: z.union([z.string(), z.array(z.string())]).optional(),
  /** how long the job may wait to start: `90s`, `5m`, `2h`, or seconds */
  cancel_after: z.string().trim().optional(),
});

export type EditFields = z.infer<typeof editFieldsSchema>;

/** Every field an edit request may name: OpenAI's (multipart and JSON form) and this service's own. */
const KNOWN_FIELDS = new Set<string>(Object.keys(editFieldsSchema.shape));
/** OpenAI's parameters no model here takes: a 400 naming the parameter and the model. */
const NOT_SERVED = ['complexity', 'frame_count', 'frame_duration_ms', 'svg', 'markup'] as const;

/** The validated parameters stored on the job and handed to the provider. */
export interface EditParams {
  prompt: string;
  n: number;
  size?: string;
  response_format: 'url' | 'b64_json';
  user?: string;
  background?: string;
  quality?: string;
  output_format?: ImageFormat;
  output_compression?: number;
  input_fidelity?: string;
  search_prompt?: string;
  /** GPT image models: content moderation strictness, passed upstream */
  moderation?: string;
  /** GPT image models: the end user's stable id for abuse monitoring, passed upstream */
  safety_identifier?: string;
  /** the client streams (SSE): the answer is OpenAI's image_edit events, with this many partial images (0 to 3) */
  stream?: true;
  partial_images?: number;
}

/**
 * Multipart repeats a field as an array; a text field must appear once. A field this endpoint does
 * not know is a 400 `unknown_parameter` naming it, as at OpenAI (never silently dropped). Images
 * come as files (multipart) or as `images`/`mask` (JSON form, taken off before this), never here.
 */
export function parseEditFields(raw: Record<string, unknown>): EditFields {
  for (const key of Object.keys(raw)) {
    if (key === 'image' || key === 'mask') throw invalidRequest(`${key} must be sent as a file, not a text field`, key, 'invalid_value');
    if (!KNOWN_FIELDS.has(key)) throw invalidRequest(`Unknown parameter: '${key}'.`, key, 'unknown_parameter');
  }
  const flat: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (Array.isArray(value) && key === 'webhook_events_filter') {
      flat[key] = value;
    } else if (Array.isArray(value)) {
      if (value.length !== 1) throw invalidRequest(`${key} must be given once`, key, 'invalid_value');
      flat[key] = value[0];
    } else {
      flat[key] = value;
    }
  }
  const result = editFieldsSchema.safeParse(flat);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const param = String(issue.path[0] ?? '') || null;
    const missing = issue.code === 'invalid_type' && issue.input === undefined;
    throw invalidRequest(missing ? `${param} is required` : issue.message, param, missing ? 'missing_required_parameter' : 'invalid_value');
  }
  return result.data;
}

/** Per-model rules for the text fields: every parameter the model cannot honour is a 400 naming it. */
export function checkEditParams(model: string, caps: ModelCapabilities, f: EditFields): EditParams {
  const unsupported = (param: string, value: unknown, allowed: readonly string[]): ServiceError =>
    invalidRequest(
      allowed.length === 0
        ? `${param} is not supported by model '${model}'`
        : `${param} '${String(value)}' is not supported by model '${model}'; supported: ${allowed.join(', ')}`,
      param,
      'unsupported_parameter',
    );

  const stream = f.stream === true || f.stream === 'true';
  if (stream && !caps.streams) throw invalidRequest(`stream is not supported by model '${model}'; use Prefer: respond-async and poll the job, or wait for the response`, 'stream', 'unsupported_parameter');
  if (f.partial_images !== undefined && f.partial_images > 0 && !stream) throw invalidRequest('partial_images needs stream: true', 'partial_images', 'invalid_value');
  if (f.prompt.length > caps.maxPromptChars) {
    throw invalidRequest(`prompt is ${f.prompt.length} characters; model '${model}' accepts at most ${caps.maxPromptChars}`, 'prompt', 'string_above_max_length');
  }
  if (f.size !== undefined && !caps.sizes.includes(f.size)) throw unsupported('size', f.size, caps.sizes);
  if (f.quality !== undefined && !caps.qualities.includes(f.quality)) throw unsupported('quality', f.quality, caps.qualities);
  if (f.background !== undefined && !caps.backgrounds.includes(f.background)) throw unsupported('background', f.background, caps.backgrounds);
  if (f.output_format !== undefined && !caps.outputFormats.includes(f.output_format as ImageFormat)) {
    throw unsupported('output_format', f.output_format, caps.outputFormats);
  }
  if (f.output_compression !== undefined) {
    if (!caps.supportsOutputCompression) throw unsupported('output_compression', f.output_compression, []);
    if ((f.output_format ?? 'png') === 'png') throw invalidRequest('output_compression applies only to output_format jpeg or webp', 'output_compression', 'unsupported_parameter');
  }
  if (f.input_fidelity !== undefined && !caps.inputFidelities.includes(f.input_fidelity)) {
    throw unsupported('input_fidelity', f.input_fidelity, caps.inputFidelities);
  }
  if (f.moderation !== undefined && !caps.moderations.includes(f.moderation)) throw unsupported('moderation', f.moderation, caps.moderations);
  if (f.safety_identifier !== undefined && !caps.acceptsSafetyIdentifier) throw unsupported('safety_identifier', f.safety_identifier, []);
  for (const param of NOT_SERVED) if (f[param] !== undefined) throw unsupported(param, f[param], []);
  if (caps.needsSearchPrompt && !f.search_prompt?.trim()) {
    throw invalidRequest(`search_prompt is required by model '${model}': it names what to find and replace`, 'search_prompt', 'missing_required_parameter');
  }
  if (!caps.needsSearchPrompt && f.search_prompt !== undefined) throw unsupported('search_prompt', f.search_prompt, []);
  if (f.background === 'transparent' && f.output_format === 'jpeg') {
    throw invalidRequest("background 'transparent' needs output_format png or webp", 'background', 'unsupported_parameter');
  }

  const params: EditParams = { prompt: f.prompt, n: f.n ?? 1, response_format: (f.response_format as ResponseFormat | undefined) ?? caps.defaultResponseFormat };
  if (f.size !== undefined) params.size = f.size;
  if (f.user !== undefined) params.user = f.user;
  if (f.background !== undefined) params.background = f.background;
  if (f.quality !== undefined) params.quality = f.quality;
  if (f.output_format !== undefined) params.output_format = f.output_format as ImageFormat;
  if (f.output_compression !== undefined) params.output_compression = f.output_compression;
  if (f.input_fidelity !== undefined) params.input_fidelity = f.input_fidelity;
  if (f.search_prompt !== undefined) params.search_prompt = f.search_prompt;
  if (f.moderation !== undefined) params.moderation = f.moderation;
  if (f.safety_identifier !== undefined) params.safety_identifier = f.safety_identifier;
  if (stream) {
    params.stream = true;
    params.partial_images = f.partial_images ?? 0;
  }
  return params;
}

/** What the API learned about one uploaded image from its real bytes (sharp), before decoding pixels. */
export interface ImageFacts {
  /** the form field it came in ("image", "image[]", "mask") */
  field: string;
  /** detected format; undefined when the bytes are not an image sharp understands */
  format: string | undefined;
  width: number;
  height: number;
  bytes: number;
  hasAlpha: boolean;
}

/** Generous default against decompression bombs: 48 megapixels per input image. */
export const DEFAULT_MAX_INPUT_PIXELS = 48_000_000;

/**
 * Rules that need only the header facts: count, real format, byte and pixel limits, squareness,
 * mask size. Transparency (which needs pixels) is checked by the caller with `needsTransparencyCheck`.
 */
export function checkImages(model: string, caps: ModelCapabilities, images: ImageFacts[], mask: ImageFacts | undefined, maxPixels = DEFAULT_MAX_INPUT_PIXELS): void {
  if (images.length === 0) throw invalidRequest('image is required: send one or more image files', 'image', 'missing_required_parameter');
  if (images.length > caps.maxImages) {
    throw invalidRequest(`model '${model}' accepts at most ${caps.maxImages} image${caps.maxImages === 1 ? '' : 's'}; got ${images.length}`, 'image', 'too_many_images');
  }
  const mb = (b: number) => `${Math.round((b / 1024 / 1024) * 10) / 10} MB`;
  for (const img of images) {
    const param = img.field;
    if (img.format === undefined || !(caps.imageFormats as string[]).includes(img.format)) {
      const got = img.format === undefined ? 'not a readable image' : `a ${img.format.toUpperCase()} image`;
      throw invalidRequest(`image must be ${caps.imageFormats.map((f) => f.toUpperCase()).join(', ')} for model '${model}'; the uploaded file is ${got}`, param, 'invalid_image_format');
    }
    if (img.bytes > caps.maxImageBytes) throw tooLarge(`image is ${mb(img.bytes)}; model '${model}' accepts at most ${mb(caps.maxImageBytes)} per image`, param);
    if (img.width * img.height > maxPixels) {
      throw invalidRequest(`image is ${img.width}x${img.height}; at most ${maxPixels} pixels are accepted`, param, 'image_too_many_pixels');
    }
    if (caps.requiresSquare && img.width !== img.height) {
      throw invalidRequest(`image must be square for model '${model}'; got ${img.width}x${img.height}`, param, 'invalid_image_dimensions');
    }
  }
  if (mask) {
    if (!caps.acceptsMask) throw invalidRequest(`mask is not supported by model '${model}'; send the image without a mask`, 'mask', 'unsupported_parameter');
    if (mask.format !== 'png') {
      throw invalidRequest(`mask must be a PNG image; the uploaded file is ${mask.format === undefined ? 'not a readable image' : `a ${mask.format.toUpperCase()} image`}`, 'mask', 'invalid_image_format');
    }
    if (mask.bytes > caps.maxMaskBytes) throw tooLarge(`mask is ${mb(mask.bytes)}; at most ${mb(caps.maxMaskBytes)} is accepted`, 'mask');
    const first = images[0]!;
    if (mask.width !== first.width || mask.height !== first.height) {
      throw invalidRequest(`mask must have the same dimensions as the image (${first.width}x${first.height}); got ${mask.width}x${mask.height}`, 'mask', 'invalid_mask_dimensions');
    }
    if (!mask.hasAlpha) throw invalidRequest('mask must have an alpha channel: fully transparent pixels mark where to edit', 'mask', 'invalid_mask');
  }
}

/** dall-e-2 and local-inpaint with no mask use the image's own transparency as the mask. */
export function needsTransparencyCheck(caps: ModelCapabilities, hasMask: boolean): boolean {
  return caps.needsTransparencyWithoutMask && !hasMask;
}

export function noTransparencyError(): ServiceError {
  return invalidRequest('image must have transparent pixels (alpha = 0) to mark where to edit, or send a mask', 'image', 'missing_transparency');
}

/** Events of one job: what a submission's webhook_events_filter may name. */
export const JOB_WEBHOOK_EVENTS = ['job.started', 'job.succeeded', 'job.failed', 'job.canceled', 'job.expired'] as const;
/** Events of one batch (POST /v1/batches): the batch object as `data`; sent to the key's endpoints. */
export const BATCH_WEBHOOK_EVENTS = ['batch.completed', 'batch.failed', 'batch.cancelled', 'batch.expired'] as const;
export const WEBHOOK_EVENTS = [...JOB_WEBHOOK_EVENTS, ...BATCH_WEBHOOK_EVENTS] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];
export type JobWebhookEvent = (typeof JOB_WEBHOOK_EVENTS)[number];
export type BatchWebhookEvent = (typeof BATCH_WEBHOOK_EVENTS)[number];

/** What a submission asks of the job API: metadata, a webhook, a deadline. */
export interface JobOptions {
  metadata: Record<string, string>;
  webhookUrl?: string;
  webhookEvents: JobWebhookEvent[];
  /** ms from submission: a job not started by then expires */
  cancelAfterMs?: number;
}

const MAX_CANCEL_AFTER_MS = 7 * 24 * 3600 * 1000;

/** Metadata as OpenAI limits it: at most 16 pairs, keys up to 64 characters, values up to 512. */
export function parseMetadata(value: unknown, param = 'metadata'): Record<string, string> {
  if (value === undefined || value === null || value === '') return {};
  let obj: unknown = value;
  if (typeof value === 'string') {
    try {
      obj = JSON.parse(value);
    } catch {
      throw invalidRequest(`${param} must be a JSON object of string pairs, or sent as ${param}[key]=value fields`, param, 'invalid_value');
    }
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw invalidRequest(`${param} must be an object of string pairs`, param, 'invalid_value');
  const entries = Object.entries(obj as Record<string, unknown>);
  if (entries.length > 16) throw invalidRequest(`${param} may have at most 16 pairs; got ${entries.length}`, param, 'invalid_value');
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    if (k.length === 0 || k.length > 64) throw invalidRequest(`${param} keys must be 1 to 64 characters; '${k.slice(0, 70)}' is not`, param, 'invalid_value');
    if (typeof v !== 'string') throw invalidRequest(`${param}.${k} must be a string`, param, 'invalid_value');
    if (v.length > 512) throw invalidRequest(`${param}.${k} must be at most 512 characters`, param, 'invalid_value');
    out[k] = v;
  }
  return out;
}

/** `90s`, `5m`, `2h`, `1500ms` or a bare number of seconds. */
export function parseDuration(value: string, param: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/i.exec(value.trim());
  if (!m) throw invalidRequest(`${param} must be a duration such as '90s', '5m' or '2h'; got '${value}'`, param, 'invalid_value');
  const n = Number(m[1]);
  const unit = (m[2] ?? 's').toLowerCase();
  const ms = Math.round(n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000));
  if (ms <= 0 || ms > MAX_CANCEL_AFTER_MS) throw invalidRequest(`${param} must be more than 0 and at most 7 days`, param, 'invalid_value');
  return ms;
}

/** The job API fields of a submission; `cancelAfterHeader` is the `Cancel-After` header, which wins over the field. */
export function parseJobOptions(f: EditFields, cancelAfterHeader?: string): JobOptions {
  const options: JobOptions = { metadata: parseMetadata(f.metadata), webhookEvents: [] };
  if (f.webhook_url) {
    let url: URL;
    try {
      url = new URL(f.webhook_url);
    } catch {
      throw invalidRequest(`webhook_url must be an absolute http(s) URL; got '${f.webhook_url}'`, 'webhook_url', 'invalid_value');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw invalidRequest('webhook_url must use http or https', 'webhook_url', 'invalid_value');
    options.webhookUrl = url.toString();
  }
  if (f.webhook_events_filter !== undefined) {
    const list = (Array.isArray(f.webhook_events_filter) ? f.webhook_events_filter : f.webhook_events_filter.split(',')).map((e) => e.trim()).filter(Boolean);
    for (const e of list) {
      if (!(JOB_WEBHOOK_EVENTS as readonly string[]).includes(e)) {
        throw invalidRequest(`webhook_events_filter: unknown event '${e}'; known: ${JOB_WEBHOOK_EVENTS.join(', ')}`, 'webhook_events_filter', 'invalid_value');
      }
    }
    if (!options.webhookUrl) throw invalidRequest('webhook_events_filter needs a webhook_url', 'webhook_events_filter', 'invalid_value');
    options.webhookEvents = [...new Set(list)] as JobWebhookEvent[];
  }
  const cancelAfter = cancelAfterHeader ?? f.cancel_after;
  if (cancelAfter) options.cancelAfterMs = parseDuration(cancelAfter, cancelAfterHeader ? 'Cancel-After' : 'cancel_after');
  return options;
}
