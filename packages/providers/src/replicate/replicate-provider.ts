import { randomInt } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import Replicate from 'replicate';
import sharp from 'sharp';
import { connectionError, errorFromStatus, redact } from '../shared/http-errors';
import { maskHasEditRegion, whiteEditMask } from '../shared/masks';
import type { EditProvider, ImageFormat, InputImage, OutputImage, ProviderCallOptions, ProviderEditRequest, ProviderEditResult } from '../types';
import { ProviderError } from '../types';
import { sniffFormat } from '../shared/images';
import { OnSubmittedFailed, type RequestIds, requestIds } from '../shared/request-ids';

/**
 * FLUX Fill on Replicate, through the official `replicate` SDK: a prediction is created with
 * `POST {baseURL}/models/{owner}/{name}/predictions` (official models need no version), then read
 * with `GET {baseURL}/predictions/{id}` every `pollIntervalMs` until it is `succeeded`, `failed`,
 * `canceled` or `aborted`. If the caller aborts or anything else goes wrong while a prediction
 * runs, it is cancelled (`POST /predictions/{id}/cancel`) so it stops costing; but at our own
 * deadline it is left running, for the worker's retry to resume (see below) rather than pay again.
 *
 * Inputs travel as data URIs (`data:image/png;base64,...`) in the JSON body: no files API round
 * trip, nothing left in the account's file storage, and the request is self-contained, so a retry
 * re-sends everything. The URIs are built here, as strings, which the SDK passes through untouched.
 * The SDK's own data-URI path is unusable in replicate@1.4.0: `fileEncodingStrategy: 'data-uri'`
 * calls its encoder with the client in place of the input, so the prediction's input becomes the
 * serialised client, API token included; and that encoder overflows the call stack on inputs above
 * ~120 kB (replicate-javascript#247). The SDK's inline limit (10 MB for all files together) is kept.
 *
 * The mask is converted to FLUX Fill's convention (white = inpaint) and always sent. Output images
 * are handed out as URLs (replicate.delivery, deleted after an hour); they are downloaded here,
 * without the API token, under the same deadline and abort signal.
 *
 * flux-fill-pro makes one image per prediction, so `n` images are `n` predictions run side by side
 * with seeds seed0, seed0+1, ...; flux-fill-dev makes up to 4 (`num_outputs`) per prediction.
 *
 * Paid work is not repeated: predictions are created one after another, each id reported to
 * `onSubmitted` before any is polled, and a retry given those ids as `resume` reads them again
 * instead of creating new ones (only the missing ones are created). A resumed prediction Replicate
 * does not know (404), that failed, was canceled or aborted, or whose output is gone, is replaced
 * by a new one.
 */

export interface ReplicateProviderConfig {
  /** a Replicate API token */
  apiKey: string;
  /** default `https://api.replicate.com/v1` */
  baseURL?: string;
  /** bounds each edit call: all predictions, polling and downloads; default 10 minutes */
  timeoutMs?: number;
  /** how often a running prediction is read; default 1 second */
  pollIntervalMs?: number;
}

const PROVIDER = 'replicate';
const DEFAULT_BASE_URL = 'https://api.replicate.com/v1';
const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
const DEFAULT_POLL_INTERVAL_MS = 1000;
/** a cancel is best effort and must not hold a failed job up for long */
const CANCEL_TIMEOUT_MS = 10_000;
/** the SDK's own limit for inline (data URI) files, all files of a prediction together */
const MAX_INLINE_BYTES = 10_000_000;
/** seeds stay inside a signed 32-bit integer, which every FLUX Fill deployment accepts */
const MAX_SEED = 2_147_483_647;
const LOSSY_QUALITY = 90;

interface ModelSpec {
  /** images one prediction makes at most */
  maxOutputs: number;
  /** our output formats and the model's names for them */
  outputFormats: Partial<Record<ImageFormat, string>>;
  /** whether the model takes `output_quality` (our `output_compression`) */
  takesQuality: boolean;
  /** the model-specific part of the input */
  extraInput(outputs: number): Record<string, unknown>;
}

const MODELS: Record<string, ModelSpec> = {
  'black-forest-labs/flux-fill-pro': {
    maxOutputs: 1,
    outputFormats: { jpeg: 'jpg', png: 'png' },
    takesQuality: false,
    extraInput: () => ({}),
  },
  'black-forest-labs/flux-fill-dev': {
    maxOutputs: 4,
    outputFormats: { jpeg: 'jpg', png: 'png', webp: 'webp' },
    takesQuality: true,
    // megapixels defaults to "1" (resizes to ~1 MP); match_input keeps the canvas's size (up to 1440²)
    extraInput: (outputs) => ({ num_outputs: outputs, megapixels: 'match_input' }),
  },
};

const MIME: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };
const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'aborted']);

type Prediction = Awaited<ReturnType<Replicate['predictions']['get']>>;

interface Context {
  client: Replicate;
  apiKey: string;
  timeoutMs: number;
  pollIntervalMs: number;
  /** error bodies by the Response the SDK saw (see singleShotFetch) */
  errorBodies: WeakMap<Response, string>;
}

export function createReplicateProvider(cfg: ReplicateProviderConfig): EditProvider {
  const errorBodies = new WeakMap<Response, string>();
  const client = new Replicate({
    auth: cfg.apiKey,
    baseUrl: (cfg.baseURL ?? DEFAULT_BASE_URL).replace(/\/+$/, ''),
    fetch: singleShotFetch(errorBodies),
    // Inputs are data-URI strings, which no strategy touches; 'upload' is named because it is the
    // one whose code path is sound (only Blob/Buffer values would be uploaded, and there are none).
    fileEncodingStrategy: 'upload',
    useFileOutput: false,
  });
  const ctx: Context = {
    client,
    apiKey: cfg.apiKey,
    timeoutMs: cfg.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    pollIntervalMs: cfg.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS,
    errorBodies,
  };
  return { id: PROVIDER, edit: (request, options) => editImages(ctx, request, options) };
}

/**
 * The SDK retries 429 (and 5xx of GETs) itself, up to 5 times and, as its backoff computes NaN,
 * without waiting: that hammers a rate-limited API and hides Retry-After from the worker, which owns
 * retries. So each request the SDK makes reaches the network once, and the SDK's retries of that
 * same request (same `init` object) get a copy of the first answer. Error bodies are kept because
 * the SDK reads them into its ApiError message, where the problem JSON is no longer parseable.
 */
function singleShotFetch(errorBodies: WeakMap<Response, string>): typeof fetch {
  type Answer = { ok: Response } | { status: number; statusText: string; headers: Headers; text: string };
  const answers = new WeakMap<object, Promise<Answer>>();
  return async (input, init) => {
    if (!init) return fetch(input);
    let answer = answers.get(init);
    if (!answer) {
      answer = fetch(input, init).then(async (res): Promise<Answer> => {
        if (res.ok) return { ok: res };
        return { status: res.status, statusText: res.statusText, headers: res.headers, text: await res.text() };
      });
      answers.set(init, answer);
    }
    const a = await answer;
    if ('ok' in a) return a.ok;
    const copy = new Response(a.text, { status: a.status, statusText: a.statusText, headers: a.headers });
    errorBodies.set(copy, a.text);
    return copy;
  };
}

async function editImages(ctx: Context, request: ProviderEditRequest, options: ProviderCallOptions | undefined): Promise<ProviderEditResult> {
  const callerSignal = options?.signal;
  const deadline = AbortSignal.timeout(ctx.timeoutMs);
  const signal = callerSignal ? AbortSignal.any([callerSignal, deadline]) : deadline;
  try {
    const spec = checkRequest(request);
    const canvas = request.images[0] as InputImage; // checkRequest made sure there is exactly one
    const target = parseSize(request);
    if (canvas.data.length > MAX_INLINE_BYTES) throw tooLarge(canvas.data.length);
    const mask = await whiteEditMask(canvas, request.mask);
    if (!(await maskHasEditRegion(mask))) {
      throw new ProviderError(PROVIDER, 'nothing to edit: no fully transparent pixel in the mask (or, without a mask, in the image)', {
        status: 400,
        code: 'invalid_mask',
        retryable: false,
      });
    }
    if (canvas.data.length + mask.length > MAX_INLINE_BYTES) throw tooLarge(canvas.data.length + mask.length);

    const input: Record<string, unknown> = {
      prompt: request.prompt,
      image: `data:${MIME[canvas.format]};base64,${canvas.data.toString('base64')}`,
      mask: `data:image/png;base64,${mask.toString('base64')}`,
    };
    if (request.outputFormat !== undefined) input.output_format = spec.outputFormats[request.outputFormat];
    if (request.outputCompression !== undefined) input.output_quality = request.outputCompression;

    const n = Math.max(1, request.n || 1);
    const batches: number[] = [];
    for (let left = n; left > 0; left -= spec.maxOutputs) batches.push(Math.min(spec.maxOutputs, left));
    // seeds a batch apart: a multi-output prediction may count up from its seed for its later images
    const seed0 = randomInt(0, MAX_SEED - n + 1);

    // Our deadline cancels nothing: the predictions are paid for already and the worker's retry resumes them.
    const cancels = () => !deadline.aborted || callerSignal?.aborted === true;
    const started = await startPredictions(
      ctx,
      request.model,
      batches.map((outputs, i) => ({ ...input, ...spec.extraInput(outputs), seed: seed0 + i * spec.maxOutputs })),
      requestIds(batches.length, options),
      signal,
      cancels,
    );
    const urls = await allOrCancel(started, (prediction, batchSignal) => runPrediction(ctx, request.model, prediction, batchSignal, cancels), signal);
    const images = await Promise.all(urls.flat().map((url) => download(url, signal)));
    return { images: await Promise.all(images.map((img) => fitToSize(img, target, request.outputCompression))) };
  } catch (err) {
    if (err instanceof OnSubmittedFailed) throw err.cause;
    throw classifyError(ctx, err, callerSignal, deadline);
  }
}

function tooLarge(bytes: number): ProviderError {
  return new ProviderError(PROVIDER, `the image and mask are ${bytes} bytes together; Replicate takes at most ${MAX_INLINE_BYTES} bytes inline`, {
    status: 413,
    code: 'provider_rejected',
    retryable: false,
  });
}

function unsupported(parameter: string, value: unknown, model: string): ProviderError {
  return new ProviderError(PROVIDER, `${parameter} '${String(value)}' is not supported by ${model} on Replicate`, {
    status: 400,
    code: 'unsupported_parameter',
    retryable: false,
  });
}

/** The API validates against the model's capabilities first; this is the adapter's own defence. */
function checkRequest(request: ProviderEditRequest): ModelSpec {
  const model = request.model;
  const spec = MODELS[model];
  if (!spec) throw unsupported('model', model, 'the replicate provider');
  if (request.images.length !== 1) {
    throw new ProviderError(PROVIDER, `${model} edits exactly one image (got ${request.images.length})`, { status: 400, code: 'unsupported_parameter', retryable: false });
  }
  if (request.outputFormat !== undefined && !spec.outputFormats[request.outputFormat]) throw unsupported('output_format', request.outputFormat, model);
  if (request.outputCompression !== undefined && !spec.takesQuality) throw unsupported('output_compression', request.outputCompression, model);
  // FLUX Fill has no quality setting and always paints an opaque picture
  if (request.quality !== undefined && request.quality !== 'auto') throw unsupported('quality', request.quality, model);
  if (request.background !== undefined && request.background !== 'auto' && request.background !== 'opaque') throw unsupported('background', request.background, model);
  if (request.inputFidelity !== undefined) throw unsupported('input_fidelity', request.inputFidelity, model);
  if (request.searchPrompt !== undefined) throw unsupported('search_prompt', request.searchPrompt, model);
  return spec;
}

/** FLUX Fill paints at the canvas's size; an explicit WxH that differs is reached by resizing. */
function parseSize(request: ProviderEditRequest): { width: number; height: number } | undefined {
  const size = request.size;
  if (size === undefined || size === 'auto') return undefined;
  const m = /^(\d{1,5})x(\d{1,5})$/.exec(size);
  const width = Number(m?.[1] ?? 0);
  const height = Number(m?.[2] ?? 0);
  if (width < 1 || height < 1) throw unsupported('size', size, request.model);
  return { width, height };
}

/**
 * Runs one job per input side by side. When one fails, the others are aborted (which cancels their
 * predictions, unless at the deadline) and, once every one has settled, the first failure is thrown:
 * never a sibling's "aborted", and no call of ours is still in flight when the edit call returns.
 */
async function allOrCancel<I, T>(inputs: I[], run: (input: I, signal: AbortSignal) => Promise<T>, signal: AbortSignal): Promise<T[]> {
  const siblings = new AbortController();
  const groupSignal = AbortSignal.any([signal, siblings.signal]);
  let failure: { err: unknown } | undefined;
  const settled = await Promise.allSettled(
    inputs.map((input) =>
      run(input, groupSignal).catch((err: unknown) => {
        failure ??= { err };
        siblings.abort();
        throw err;
      }),
    ),
  );
  if (failure) throw failure.err;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

/**
 * One prediction per input, in order: the resumed one of its slot if it can still give its output,
 * else a new one, whose id is recorded before the next is started. If anything fails, the ones
 * started are cancelled, unless it was recording an id or `cancels()` says no.
 */
async function startPredictions(
  ctx: Context,
  model: string,
  inputs: Record<string, unknown>[],
  ids: RequestIds,
  signal: AbortSignal,
  cancels: () => boolean,
): Promise<Prediction[]> {
  const started: Prediction[] = [];
  try {
    for (const [slot, input] of inputs.entries()) {
      const id = ids.resumed(slot);
      const resumed = id ? await resumePrediction(ctx, id, signal) : undefined;
      if (resumed) {
        started.push(resumed);
        continue;
      }
      const created = await ctx.client.predictions.create({ model, input, signal });
      started.push(created);
      await ids.record(slot, created.id);
    }
    return started;
  } catch (err) {
    if (!(err instanceof OnSubmittedFailed) && cancels()) await Promise.all(started.filter((p) => !TERMINAL.has(p.status)).map((p) => cancelQuietly(ctx, p.id)));
    throw err;
  }
}

/** A prediction an earlier attempt created, or undefined when it cannot give its output any more. */
async function resumePrediction(ctx: Context, id: string, signal: AbortSignal): Promise<Prediction | undefined> {
  let prediction: Prediction;
  try {
    prediction = await getPrediction(ctx, id, signal);
  } catch (err) {
    if (!signal.aborted && err instanceof ProviderError && err.status === 404) return undefined;
    throw err;
  }
  if (prediction.status === 'failed' || prediction.status === 'canceled' || prediction.status === 'aborted') return undefined;
  // outputs are deleted an hour after the prediction ends
  if (prediction.status === 'succeeded' && prediction.data_removed) return undefined;
  return prediction;
}

/** Polls a started prediction to its end; returns its output URLs. A failure cancels it if `cancels()`. */
async function runPrediction(ctx: Context, model: string, started: Prediction, signal: AbortSignal, cancels: () => boolean): Promise<string[]> {
  let prediction = started;
  try {
    while (!TERMINAL.has(prediction.status)) {
      await delay(ctx.pollIntervalMs, undefined, { signal });
      prediction = await getPrediction(ctx, prediction.id, signal);
    }
  } catch (err) {
    if (cancels()) await cancelQuietly(ctx, prediction.id);
    throw err;
  }
  return outputUrls(ctx, model, prediction);
}

/**
 * A prediction that is already running is paid for: a passing 429/5xx or network failure while
 * reading it is waited out (until the deadline) instead of failing the job, whose retry would pay
 * for a new prediction.
 */
async function getPrediction(ctx: Context, id: string, signal: AbortSignal): Promise<Prediction> {
  for (;;) {
    try {
      return await ctx.client.predictions.get(id, { signal });
    } catch (err) {
      if (signal.aborted) throw err;
      const e = classifyUpstream(ctx, err);
      if (!e.retryable) throw e;
      await delay(Math.max(ctx.pollIntervalMs, e.retryAfterMs ?? 0), undefined, { signal });
    }
  }
}

async function cancelQuietly(ctx: Context, id: string): Promise<void> {
  try {
    await ctx.client.predictions.cancel(id, { signal: AbortSignal.timeout(CANCEL_TIMEOUT_MS) });
  } catch {
    // best effort: the failure that led here is what the job reports
  }
}

/** NSFW / safety-checker refusals, as FLUX models on Replicate word them ("Flagged as sensitive. ... (E005)", "NSFW content detected"). */
const CONTENT_POLICY_TEXT = /\bnsfw\b|flagged|sensitive|moderat|content polic/i;
/** Errors about the input itself: the same input fails the same way again. */
const BAD_INPUT_TEXT = /cannot identify image|invalid (image|mask|input)|must (be|have)|do(es)? not match|not supported|unsupported/i;

function outputUrls(ctx: Context, model: string, prediction: Prediction): string[] {
  const id = prediction.id;
  if (prediction.status === 'succeeded') {
    const output: unknown = prediction.output;
    // flux-fill-pro answers one URL, flux-fill-dev a list of them
    const urls = typeof output === 'string' ? [output] : Array.isArray(output) ? output : [];
    if (urls.length === 0 || !urls.every((u): u is string => typeof u === 'string' && u !== '')) {
      throw invalidResponse(`prediction ${id} of ${model} succeeded without image URLs`);
    }
    return urls;
  }
  if (prediction.status === 'failed') {
    const error = typeof prediction.error === 'string' ? prediction.error : JSON.stringify(prediction.error ?? 'unknown error');
    const message = redact(error, ctx.apiKey);
    if (CONTENT_POLICY_TEXT.test(error)) return fail(message, 'content_policy_violation', false);
    if (BAD_INPUT_TEXT.test(error)) return fail(`prediction ${id} failed: ${message}`, 'provider_rejected', false);
    // Anything else (out of memory, interrupted, timed out, an unknown message) is most often a
    // passing fault of the machine that ran it; retrying costs one more prediction at worst.
    return fail(`prediction ${id} failed: ${message}`, 'upstream_error', true);
  }
  if (prediction.status === 'aborted') {
    // Replicate aborts a prediction that did not start before its deadline: capacity, not the input
    return fail(`prediction ${id} was aborted by Replicate before it started`, 'upstream_timeout', true);
  }
  // canceled, and not by us (our own cancels end in an abort or a failure thrown before this)
  return fail(`prediction ${id} was canceled upstream`, 'upstream_error', true);
}

function fail(message: string, code: string, retryable: boolean): never {
  throw new ProviderError(PROVIDER, message, { code, retryable });
}

function invalidResponse(message: string): ProviderError {
  return new ProviderError(PROVIDER, message, { code: 'upstream_invalid_response', retryable: true });
}

/** Fetches an output image (public CDN URL: the API token is not sent), under the call's signal. */
async function download(url: string, signal: AbortSignal): Promise<OutputImage> {
  const res = await fetch(url, { signal });
  if (!res.ok) {
    throw new ProviderError(PROVIDER, `downloading the output image failed with HTTP ${res.status}`, {
      status: res.status,
      code: 'upstream_error',
      retryable: res.status === 408 || res.status === 429 || res.status >= 500,
    });
  }
  const data = Buffer.from(await res.arrayBuffer());
  const format = sniffFormat(data);
  if (!format) throw invalidResponse('Replicate returned an output that is not a png, jpeg or webp image');
  return { data, format };
}


/** Resizes to exactly the asked WxH when the output differs, keeping its format. */
async function fitToSize(image: OutputImage, target: { width: number; height: number } | undefined, quality: number | undefined): Promise<OutputImage> {
  if (!target) return image;
  let meta: sharp.Metadata;
  try {
    meta = await sharp(image.data).metadata();
  } catch {
    throw invalidResponse('Replicate returned an output image that cannot be decoded');
  }
  if (meta.width === target.width && meta.height === target.height) return image;
  const resized = sharp(image.data).resize(target.width, target.height, { fit: 'fill' });
  // png takes no quality (in sharp it would switch to a palette)
  const data =
    image.format === 'png'
      ? await resized.png().toBuffer()
      : await resized.toFormat(image.format, { quality: quality ?? LOSSY_QUALITY }).toBuffer();
  return { data, format: image.format };
}

interface ApiErrorLike extends Error {
  response: Response;
}

function isApiError(err: unknown): err is ApiErrorLike {
  // the SDK does not export its ApiError class
  return err instanceof Error && err.name === 'ApiError' && (err as Partial<ApiErrorLike>).response instanceof Response;
}

/** An SDK/HTTP failure as a ProviderError; problem JSON `{title, detail, status}` gives the message. */
function classifyUpstream(ctx: Context, err: unknown): ProviderError {
  if (err instanceof ProviderError) return err;
  if (isApiError(err)) {
    const res = err.response;
    const text = ctx.errorBodies.get(res) ?? '';
    let problem: { title?: unknown; detail?: unknown } = {};
    try {
      problem = JSON.parse(text) as typeof problem;
    } catch {
      // not JSON (a proxy's HTML page): the status says enough
    }
    const detail = typeof problem.detail === 'string' && problem.detail.trim() ? problem.detail.trim() : undefined;
    const title = typeof problem.title === 'string' && problem.title.trim() ? problem.title.trim() : undefined;
    const message = redact(detail ?? title ?? `Replicate answered HTTP ${res.status}`, ctx.apiKey);
    const refused = res.status !== 429 && res.status < 500 && CONTENT_POLICY_TEXT.test(`${title ?? ''} ${detail ?? ''}`);
    return errorFromStatus(PROVIDER, res.status, message, { headers: res.headers, upstreamCode: refused ? 'content_policy_violation' : undefined });
  }
  // by name: fetch's errors may come from another realm (jest), where instanceof fails
  if (err instanceof Error ? err.name === 'TypeError' : (err as { name?: unknown } | null)?.name === 'TypeError') {
    return cleaned(ctx, connectionError(PROVIDER, err, false));
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ProviderError(PROVIDER, redact(message, ctx.apiKey), { code: 'provider_error', retryable: false });
}

function cleaned(ctx: Context, e: ProviderError): ProviderError {
  return new ProviderError(PROVIDER, redact(e.message, ctx.apiKey), { status: e.status, code: e.code, retryable: e.retryable, retryAfterMs: e.retryAfterMs });
}

function classifyError(ctx: Context, err: unknown, caller: AbortSignal | undefined, deadline: AbortSignal): ProviderError {
  if (caller?.aborted) return new ProviderError(PROVIDER, 'the upstream request was aborted', { code: 'aborted', retryable: false });
  if (err instanceof ProviderError) return err;
  if (deadline.aborted) return connectionError(PROVIDER, err, true);
  return classifyUpstream(ctx, err);
}
