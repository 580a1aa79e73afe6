import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFalClient, type FalClient, type RequestMiddleware } from '@fal-ai/client';
import { connectionError, errorFromStatus, redact } from '../shared/http-errors';
import { maskHasEditRegion, whiteEditMask } from '../shared/masks';
import type { EditProvider, ImageFormat, InputImage, OutputImage, ProviderCallOptions, ProviderEditRequest, ProviderEditResult } from '../types';
import { parseExactSize, resizeToCover, type Size, sniffFormat } from '../shared/images';
import { OnSubmittedFailed, type RequestIds, requestIds } from '../shared/request-ids';
import { ProviderError } from '../types';

/**
 * FLUX fill (inpainting) on fal.ai through the official `@fal-ai/client` queue API: submit, poll the
 * status until COMPLETED, fetch the result, download the output images.
 *
 * - Inputs travel inline as base64 data URIs ("Models also accept base64-encoded data URIs",
 *   docs.fal.ai/documentation/model-apis/fal-cdn), so nothing of ours has to be publicly reachable
 *   and nothing is uploaded to fal's CDN.
 * - The mask is sent in FLUX fill's convention (white = inpaint, black = keep), canvas-sized.
 * - The SDK never retries: its fetch is wrapped so that any HTTP failure becomes our ProviderError,
 *   which the SDK does not consider retryable. The worker owns retries of a submit. Once a request
 *   is queued, though, a transient failure of a status/result poll is retried here (a few times,
 *   within the deadline): giving up would make the worker submit, and pay for, the work again.
 * - Our own deadline and the caller's signal bound everything, polling included. Only the caller's
 *   abort cancels the queued request (best effort); at the deadline it is left running, for the
 *   worker's retry to resume (see below) rather than pay for again.
 * - Paid work is not repeated: each request_id is reported to `onSubmitted` before it is polled,
 *   and a retry given them as `resume` polls them again instead of submitting (n > 4 takes one
 *   request per 4 images: only the ones missing are submitted). A resumed request fal no longer
 *   knows (404) or that failed (its result is an error) is replaced by a fresh submission.
 */

const PROVIDER = 'fal';
const FAL_QUEUE_ORIGIN = 'https://queue.fal.run';
const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
const DEFAULT_POLL_INTERVAL_MS = 1000;
/** consecutive transient failures of status/result polls tolerated for one queued request */
const MAX_POLL_FAILURES = 3;
/** how long a best-effort cancel may take once the caller aborted */
const CANCEL_TIMEOUT_MS = 2000;
const MAX_SEED = 2 ** 31 - 1;

export interface FalProviderConfig {
  apiKey: string;
  /** replaces `https://queue.fal.run` (a proxy, or a fake in tests) */
  baseURL?: string;
  /** bounds each edit call: submit, polling, result and downloads; default 10 minutes */
  timeoutMs?: number;
  /** pause between status polls; default 1 s */
  pollIntervalMs?: number;
}

interface FillModel {
  /** the upstream's `num_images` range is 1..this; more images take more calls */
  maxImagesPerCall: number;
  /** fixed inputs that make the model behave like FLUX fill (output keeps the canvas's size) */
  extraInput: Record<string, unknown>;
}

/** fal endpoints that take `image_url` + `mask_url` (white = inpaint) and keep the input's size. */
export const FAL_FILL_MODELS: Record<string, FillModel> = {
  // FLUX.1 [pro] Fill: num_images 1-4, output_format jpeg|png
  'fal-ai/flux-pro/v1/fill': { maxImagesPerCall: 4, extraInput: {} },
  // FLUX.1 [dev] Fill (with optional LoRAs): same fields; `resize_to_original` keeps the input's size
  'fal-ai/flux-lora-fill': { maxImagesPerCall: 4, extraInput: { resize_to_original: true } },
};

const OUTPUT_FORMATS = new Set<ImageFormat>(['png', 'jpeg']);
const PENDING = new Set(['IN_QUEUE', 'IN_PROGRESS']);
const MIME: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };

interface Context {
  client: FalClient;
  apiKey: string;
  timeoutMs: number;
  pollIntervalMs: number;
}

export function createFalProvider(cfg: FalProviderConfig): EditProvider {
  const client = createFalClient({
    credentials: cfg.apiKey,
    fetch: strictFetch(cfg.apiKey),
    ...(cfg.baseURL ? { requestMiddleware: rewriteQueueOrigin(cfg.baseURL) } : {}),
  });
  const ctx: Context = {
    client,
    apiKey: cfg.apiKey,
    timeoutMs: cfg.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    pollIntervalMs: cfg.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS,
  };
  return { id: PROVIDER, edit: (request, options) => editImages(ctx, request, options) };
}

/**
 * The client builds `https://queue.fal.run/...` URLs itself; its documented `requestMiddleware`
 * hook sees every request before it is sent (the `Authorization: Key` header is added after it).
 */
function rewriteQueueOrigin(baseURL: string): RequestMiddleware {
  const base = baseURL.replace(/\/+$/, '');
  return async (request) =>
    request.url.startsWith(`${FAL_QUEUE_ORIGIN}/`) ? { ...request, url: base + request.url.slice(FAL_QUEUE_ORIGIN.length) } : request;
}

/**
 * The client's `fetch`: a non-2xx answer becomes a classified ProviderError and a network failure
 * an `upstream_unreachable` one. The SDK retries only its own ApiError and raw network errors, so
 * this also turns its built-in retries (which ignore Retry-After) off. Aborts pass through as is.
 */
function strictFetch(apiKey: string): typeof fetch {
  return async (input, init) => {
    let res: Response;
    try {
      res = await fetch(input, init);
    } catch (err) {
      if (init?.signal?.aborted) throw err;
      throw redacted(connectionError(PROVIDER, err, false), apiKey);
    }
    if (!res.ok) throw await httpError(res, apiKey);
    return res;
  };
}

/**
 * fal's errors are `{detail: "..."}` (request errors, with `error_type`) or `{detail: [{loc, msg,
 * type}]}` (model errors, e.g. 422 validation or `content_policy_violation`).
 */
async function httpError(res: Response, apiKey: string): Promise<ProviderError> {
  const text = await res.text().catch(() => '');
  let message = `HTTP ${res.status}`;
  let upstreamCode: string | undefined;
  let param: string | null = null;
  try {
    const body = JSON.parse(text) as { detail?: unknown; error_type?: unknown; message?: unknown };
    if (typeof body.detail === 'string' && body.detail) message = body.detail;
    else if (Array.isArray(body.detail) && body.detail.length > 0) {
      const items = body.detail as Array<{ loc?: unknown; msg?: unknown; type?: unknown }>;
      message = items.map(describeDetail).join('; ');
      const type = items[0]?.type;
      if (typeof type === 'string' && type) upstreamCode = type;
      param = clientParam(items[0]?.loc);
    } else if (typeof body.message === 'string' && body.message) message = body.message;
    if (!upstreamCode && typeof body.error_type === 'string' && body.error_type) upstreamCode = body.error_type;
  } catch {
    if (text.trim()) message = `HTTP ${res.status}: ${text.trim().slice(0, 200)}`;
  }
  return errorFromStatus(PROVIDER, res.status, redact(message, apiKey), { headers: res.headers, upstreamCode, param });
}

/** fal's input fields that are the client's own parameters under another name (the rest are ours to fill). */
const CLIENT_PARAMS: Record<string, string> = { prompt: 'prompt', image_url: 'image', mask_url: 'mask', output_format: 'output_format' };

function clientParam(loc: unknown): string | null {
  const field = Array.isArray(loc) ? loc.find((p) => p !== 'body') : undefined;
  return typeof field === 'string' ? (CLIENT_PARAMS[field] ?? null) : null;
}

function describeDetail(item: { loc?: unknown; msg?: unknown; type?: unknown }): string {
  const msg = typeof item.msg === 'string' ? item.msg : String(item.type ?? 'invalid input');
  // loc is ["body", "field", ...]: name the field, not the body
  const loc = Array.isArray(item.loc) ? item.loc.filter((p) => p !== 'body').join('.') : '';
  return loc ? `${loc}: ${msg}` : msg;
}

async function editImages(ctx: Context, request: ProviderEditRequest, options: ProviderCallOptions | undefined): Promise<ProviderEditResult> {
  const callerSignal = options?.signal;
  const deadline = AbortSignal.timeout(ctx.timeoutMs);
  const signal = callerSignal ? AbortSignal.any([callerSignal, deadline]) : deadline;
  try {
    const model = checkRequest(request);
    const canvas = request.images[0] as InputImage; // checkRequest made sure there is exactly one
    const target = parseSize(request.size, request.model);
    const mask = await whiteEditMask(canvas, request.mask);
    if (!(await maskHasEditRegion(mask))) {
      throw new ProviderError(PROVIDER, 'the mask marks no pixel for editing (no fully transparent pixel in the mask, or in the image without a mask)', {
        code: 'invalid_request',
        retryable: false,
      });
    }
    // OpenAI's default output is png; fal's would be jpeg
    const outputFormat = request.outputFormat ?? 'png';
    const n = Math.max(1, request.n || 1);
    const calls = Math.ceil(n / model.maxImagesPerCall);
    const ids = requestIds(calls, options);
    const seed0 = randomInt(0, MAX_SEED - calls);
    const baseInput = {
      prompt: request.prompt,
      image_url: dataUri(canvas.data, MIME[canvas.format]),
      mask_url: dataUri(mask, 'image/png'),
      output_format: outputFormat,
      sync_mode: false,
      ...model.extraInput,
    };

    const images: OutputImage[] = [];
    for (let call = 0; images.length < n; call++) {
      const count = Math.min(model.maxImagesPerCall, n - images.length);
      // one seed per call: a batch of num_images already varies within itself
      const output = await runQueued(ctx, request.model, { ...baseInput, num_images: count, seed: seed0 + call }, { signal, callerSignal }, ids, call);
      for (const image of await toImages(output, count, signal)) images.push(target ? await resizeToCover(image, target) : image);
    }
    return { images };
  } catch (err) {
    if (err instanceof OnSubmittedFailed) throw err.cause;
    throw classifyError(ctx, err, callerSignal, deadline);
  }
}

/**
 * The API validates parameters against the model's capabilities before a job is stored; this is
 * the last line of defence: anything FLUX fill cannot honour fails loudly instead of being dropped.
 * `user` is not sent: it is stored by this service for abuse tracking and has no fal counterpart.
 */
function checkRequest(request: ProviderEditRequest): FillModel {
  const name = request.model;
  const model = FAL_FILL_MODELS[name];
  if (!model) throw unsupported(`model '${name}' is not a fal fill model this service knows (${Object.keys(FAL_FILL_MODELS).join(', ')})`);
  if (request.images.length === 0) throw new ProviderError(PROVIDER, 'no input image', { code: 'invalid_request', retryable: false });
  if (request.images.length > 1) throw unsupported(`image: model '${name}' takes exactly one image, got ${request.images.length}`);
  if (request.outputFormat !== undefined && !OUTPUT_FORMATS.has(request.outputFormat)) {
    throw unsupported(`output_format '${request.outputFormat}' is not supported by model '${name}' (png or jpeg)`);
  }
  if (request.quality !== undefined && request.quality !== 'auto') throw unsupported(`quality '${request.quality}' is not supported by model '${name}'`);
  if (request.background !== undefined && request.background !== 'auto') {
    throw unsupported(`background '${request.background}' is not supported by model '${name}'`);
  }
  if (request.outputCompression !== undefined) throw unsupported(`output_compression is not supported by model '${name}'`);
  if (request.inputFidelity !== undefined) throw unsupported(`input_fidelity is not supported by model '${name}'`);
  if (request.searchPrompt !== undefined) throw unsupported(`search_prompt is not supported by model '${name}'`);
  return model;
}

function unsupported(message: string): ProviderError {
  return new ProviderError(PROVIDER, message, { code: 'unsupported_parameter', retryable: false });
}


/** `auto`/undefined keep the canvas's size (FLUX fill's own); `WxH` is an exact size the output is resized to. */
function parseSize(size: string | undefined, model: string): Size | undefined {
  const parsed = parseExactSize(size);
  if (parsed === null) throw unsupported(`size '${size}' is not supported by model '${model}'`);
  return parsed;
}

function dataUri(data: Buffer, mime: string): string {
  return `data:${mime};base64,${data.toString('base64')}`;
}

interface Signals {
  /** the caller's signal and our deadline together: bounds every upstream call */
  signal: AbortSignal;
  /** the caller's alone: only its abort cancels a queued request */
  callerSignal: AbortSignal | undefined;
}

/**
 * The output of the call in `slot`: its resumed request's, or else (none, unknown to fal, failed)
 * a fresh submission's, whose request_id is recorded before it is polled.
 */
async function runQueued(ctx: Context, model: string, input: Record<string, unknown>, signals: Signals, ids: RequestIds, slot: number): Promise<unknown> {
  const { signal } = signals;
  const resumed = ids.resumed(slot);
  if (resumed) {
    const output = await collect(ctx, model, resumed, signals, true);
    if (output) return output.data;
  }
  const { request_id: requestId } = await ctx.client.queue.submit(model, { input, abortSignal: signal });
  if (typeof requestId !== 'string' || !requestId) throw invalidResponse('the queue submit answered without a request_id');
  // outside collect: a failure to record the id cancels nothing
  await ids.record(slot, requestId);
  const output = await collect(ctx, model, requestId, signals, false);
  return output?.data;
}

/**
 * Polls a queued request to its end and returns the model's output (the result's `data`). For a
 * resumed request, undefined when fal does not know it (404) or it failed (the result is an
 * error other than an auth failure or a 429): the caller submits afresh.
 */
async function collect(ctx: Context, model: string, requestId: string, signals: Signals, resumed: boolean): Promise<{ data: unknown } | undefined> {
  const { signal, callerSignal } = signals;
  try {
    // fal reports a failed request as COMPLETED too: the result call then answers with its error
    try {
      await poll(ctx, signal, async () => {
        const status = await ctx.client.queue.status(model, { requestId, abortSignal: signal });
        return PENDING.has(String(status.status));
      });
    } catch (err) {
      if (resumed && !signal.aborted && err instanceof ProviderError && err.status === 404) return undefined;
      throw err;
    }
    let data: unknown;
    try {
      await poll(ctx, signal, async () => {
        data = (await ctx.client.queue.result(model, { requestId, abortSignal: signal })).data;
        return false;
      });
    } catch (err) {
      if (resumed && !signal.aborted && err instanceof ProviderError && err.status !== null && ![401, 403, 429].includes(err.status)) return undefined;
      throw err;
    }
    return { data };
  } catch (err) {
    // A caller's abort means nobody will collect the work: stop paying for it (best effort). Not at
    // our deadline: the request is paid for already, and the worker's retry resumes it.
    if (callerSignal?.aborted) {
      await ctx.client.queue.cancel(model, { requestId, abortSignal: AbortSignal.timeout(CANCEL_TIMEOUT_MS) }).catch(() => undefined);
    }
    throw err;
  }
}

/**
 * Calls `step` until it returns false, pausing between calls; a retryable failure is tried again
 * (after its Retry-After, if longer) up to MAX_POLL_FAILURES times in a row. The signal ends it.
 */
async function poll(ctx: Context, signal: AbortSignal, step: () => Promise<boolean>): Promise<void> {
  let failures = 0;
  for (;;) {
    let wait = ctx.pollIntervalMs;
    try {
      if (!(await step())) return;
      failures = 0;
    } catch (err) {
      if (signal.aborted || !(err instanceof ProviderError) || !err.retryable || ++failures > MAX_POLL_FAILURES) throw err;
      wait = Math.max(wait, err.retryAfterMs ?? 0);
    }
    await sleep(wait, undefined, { signal });
  }
}

interface FalImage {
  url: string;
}

/** Checks the model's output and downloads its images (real bytes, real format). */
async function toImages(output: unknown, expected: number, signal: AbortSignal): Promise<OutputImage[]> {
  const body = (output ?? {}) as { images?: unknown; has_nsfw_concepts?: unknown };
  if (!Array.isArray(body.images)) throw invalidResponse('the result has no images');
  const items = body.images as Array<Partial<FalImage> | null>;
  if (items.length < expected) throw invalidResponse(`the result has ${items.length} images, ${expected} were asked for`);
  // fal's safety checker answers with a black image and flags it here
  if (Array.isArray(body.has_nsfw_concepts) && body.has_nsfw_concepts.some((v) => v === true)) {
    throw new ProviderError(PROVIDER, 'the output was flagged by the fal safety checker (has_nsfw_concepts)', { code: 'content_policy_violation', retryable: false });
  }
  const images: OutputImage[] = [];
  for (const item of items.slice(0, expected)) {
    if (typeof item?.url !== 'string' || !item.url) throw invalidResponse('a result image has no url');
    const bytes = await download(item.url, signal);
    const format = sniffFormat(bytes);
    if (!format) throw invalidResponse('the upstream returned an image in an unknown format');
    images.push({ data: bytes, format });
  }
  return images;
}

/** Fetches an output (a fal CDN URL, or a data URI), under the call's deadline and abort signal. */
async function download(url: string, signal: AbortSignal): Promise<Buffer> {
  const res = await fetch(url, { signal });
  if (!res.ok) {
    throw new ProviderError(PROVIDER, `downloading the upstream image failed with HTTP ${res.status}`, {
      status: res.status,
      code: 'upstream_error',
      retryable: res.status === 408 || res.status === 429 || res.status >= 500,
    });
  }
  return Buffer.from(await res.arrayBuffer());
}



function invalidResponse(message: string): ProviderError {
  return new ProviderError(PROVIDER, message, { code: 'upstream_invalid_response', retryable: true });
}

function redacted(err: ProviderError, apiKey: string): ProviderError {
  const message = redact(err.message, apiKey);
  if (message === err.message) return err;
  return new ProviderError(err.provider, message, { status: err.status, code: err.code, retryable: err.retryable, retryAfterMs: err.retryAfterMs });
}

function classifyError(ctx: Context, err: unknown, caller: AbortSignal | undefined, deadline: AbortSignal): ProviderError {
  if (caller?.aborted) return new ProviderError(PROVIDER, 'the upstream request was aborted', { code: 'aborted', retryable: false });
  if (deadline.aborted) return connectionError(PROVIDER, err, true);
  if (err instanceof ProviderError) return redacted(err, ctx.apiKey);
  if (err instanceof Error && err.name === 'AbortError') return new ProviderError(PROVIDER, 'the upstream request was aborted', { code: 'aborted', retryable: false });
  if (err instanceof Error && err.name === 'TimeoutError') return connectionError(PROVIDER, err, true);
  // fetch() of an output URL failing at the network level
  if (err instanceof TypeError) return redacted(connectionError(PROVIDER, err, false), ctx.apiKey);
  const message = err instanceof Error ? err.message : String(err);
  return new ProviderError(PROVIDER, redact(message, ctx.apiKey), { code: 'provider_error', retryable: false });
}
