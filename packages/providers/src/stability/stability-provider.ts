import { randomInt } from 'node:crypto';
import { connectionError, errorFromStatus, redact } from '../shared/http-errors';
import { whiteEditMask } from '../shared/masks';
import type { EditProvider, ImageFormat, InputImage, OutputImage, ProviderEditRequest, ProviderEditResult } from '../types';
import { parseExactSize, resizeToCover, type Size, sniffFormat } from '../shared/images';
import { ProviderError } from '../types';

/**
 * Stability AI's Stable Image edit endpoints, over the platform's fetch/FormData/Blob (Stability
 * publishes no official Node SDK): `POST {baseURL}/v2beta/stable-image/edit/{operation}`, multipart,
 * `Authorization: Bearer <key>`. `request.model` names the operation: `inpaint`, `erase` or
 * `search-and-replace`.
 *
 * We ask for `Accept: application/json`: the answer is `{image: <base64>, finish_reason, seed}`, so
 * the verdict of Stability's output filter (`finish_reason: CONTENT_FILTERED`, a blurred image that
 * is still billed as a success) arrives in the same parsed object as the image and becomes a
 * content-policy error instead of a blurred picture handed to the client. Raw image answers
 * (`image/*`, verdict in the `finish-reason` header) are read too, in case a proxy ignores Accept.
 *
 * One image per call: `n` images are `n` sequential calls with seeds seed0, seed0+1, ...
 */

export interface StabilityProviderConfig {
  apiKey: string;
  /** default `https://api.stability.ai` */
  baseURL?: string;
  /** bounds each edit call, all `n` upstream calls and the resizing included; default 10 minutes */
  timeoutMs?: number;
}

const PROVIDER = 'stability';
const DEFAULT_BASE_URL = 'https://api.stability.ai';
const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
/** Stability's seed range is 0..4294967294, where 0 means "pick one at random" */
const MAX_SEED = 4294967294;

type Operation = 'inpaint' | 'erase' | 'search-and-replace';
const OPERATIONS = new Set<string>(['inpaint', 'erase', 'search-and-replace']);

const MIME: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };

interface Context {
  apiKey: string;
  baseURL: string;
  timeoutMs: number;
}

export function createStabilityProvider(cfg: StabilityProviderConfig): EditProvider {
  const ctx: Context = {
    apiKey: cfg.apiKey,
    baseURL: (cfg.baseURL ?? DEFAULT_BASE_URL).replace(/\/+$/, ''),
    timeoutMs: cfg.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  };
  return { id: PROVIDER, edit: (request, options) => editImages(ctx, request, options?.signal) };
}

async function editImages(ctx: Context, request: ProviderEditRequest, callerSignal: AbortSignal | undefined): Promise<ProviderEditResult> {
  const deadline = AbortSignal.timeout(ctx.timeoutMs);
  const signal = callerSignal ? AbortSignal.any([callerSignal, deadline]) : deadline;
  try {
    const operation = checkRequest(request);
    const canvas = request.images[0] as InputImage; // checkRequest made sure there is exactly one
    const target = parseSize(request.size, request.model);
    // Stability would also derive the mask from the canvas's alpha, but sending it explicitly keeps
    // the convention (OpenAI's "alpha 0 = edit", turned into white = edit) ours.
    const mask = operation === 'search-and-replace' ? undefined : await editMask(canvas, request.mask);
    const outputFormat: ImageFormat = request.outputFormat ?? 'png';
    const n = Math.max(1, request.n || 1);
    const seed0 = randomInt(1, MAX_SEED - n + 2);

    const images: OutputImage[] = [];
    for (let i = 0; i < n; i++) {
      const form = buildForm(operation, request, canvas, mask, outputFormat, seed0 + i);
      const image = await callUpstream(ctx, operation, form, signal);
      images.push(target ? await resizeTo(image, target) : image);
    }
    return { images };
  } catch (err) {
    throw classifyError(ctx, err, callerSignal, deadline);
  }
}

/**
 * The API validates parameters against the model's capabilities before a job is stored; this is
 * the last line of defence: anything Stability cannot honour fails loudly instead of being dropped.
 * `user` is the one parameter not sent: it is stored by this service for abuse tracking and has no
 * Stability counterpart, and it does not change the image.
 */
function checkRequest(request: ProviderEditRequest): Operation {
  const model = request.model;
  if (!OPERATIONS.has(model)) {
    throw unsupported(`model '${model}' is not a Stability edit operation (expected inpaint, erase or search-and-replace)`);
  }
  const operation = model as Operation;
  if (request.images.length === 0) throw new ProviderError(PROVIDER, 'no input image', { code: 'invalid_request', retryable: false });
  if (request.images.length > 1) throw unsupported(`image: model '${model}' takes exactly one image, got ${request.images.length}`);
  if (request.quality !== undefined && request.quality !== 'auto') throw unsupported(`quality '${request.quality}' is not supported by model '${model}'`);
  if (request.background !== undefined && request.background !== 'auto') {
    throw unsupported(`background '${request.background}' is not supported by model '${model}'`);
  }
  if (request.outputCompression !== undefined) throw unsupported(`output_compression is not supported by model '${model}'`);
  if (request.inputFidelity !== undefined) throw unsupported(`input_fidelity is not supported by model '${model}'`);
  if (operation === 'search-and-replace') {
    // search-and-replace finds the region itself: a mask would be silently ignored upstream
    if (request.mask) throw unsupported(`mask is not supported by model '${model}' (it finds the region from search_prompt)`);
    if (!request.searchPrompt) {
      throw new ProviderError(PROVIDER, `search_prompt is required by model '${model}'`, { code: 'invalid_request', retryable: false });
    }
  } else if (request.searchPrompt !== undefined) {
    throw unsupported(`search_prompt is not supported by model '${model}'`);
  }
  return operation;
}

function unsupported(message: string): ProviderError {
  return new ProviderError(PROVIDER, message, { code: 'unsupported_parameter', retryable: false });
}


/** `auto`/undefined keep the upstream's size; `WxH` is an exact size the output is resized to. */
function parseSize(size: string | undefined, model: string): Size | undefined {
  const parsed = parseExactSize(size);
  if (parsed === null) throw unsupported(`size '${size}' is not supported by model '${model}'`);
  return parsed;
}

async function editMask(canvas: InputImage, mask: InputImage | undefined): Promise<Buffer> {
  try {
    return await whiteEditMask(canvas, mask);
  } catch {
    // what the client can act on, not the decoder's words
    throw new ProviderError(PROVIDER, `the ${mask ? 'mask' : 'image'} could not be decoded: its pixel data is corrupt or truncated`, { code: 'invalid_image', retryable: false });
  }
}

function buildForm(operation: Operation, request: ProviderEditRequest, canvas: InputImage, mask: Buffer | undefined, outputFormat: ImageFormat, seed: number): FormData {
  const form = new FormData();
  form.append('image', new Blob([canvas.data], { type: MIME[canvas.format] }), canvas.filename || `image.${canvas.format}`);
  if (mask) form.append('mask', new Blob([mask], { type: 'image/png' }), 'mask.png');
  // erase takes no prompt: it fills the region from its surroundings
  if (operation !== 'erase') form.append('prompt', request.prompt);
  if (operation === 'search-and-replace' && request.searchPrompt) form.append('search_prompt', request.searchPrompt);
  form.append('output_format', outputFormat);
  form.append('seed', String(seed));
  return form;
}

async function callUpstream(ctx: Context, operation: Operation, form: FormData, signal: AbortSignal): Promise<OutputImage> {
  let res: Response;
  try {
    res = await fetch(`${ctx.baseURL}/v2beta/stable-image/edit/${operation}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ctx.apiKey}`, accept: 'application/json' },
      body: form,
      signal,
    });
  } catch (err) {
    if (signal.aborted) throw err; // timeout or caller's abort: classifyError tells them apart
    // refused, reset, DNS: worth another attempt
    const e = connectionError(PROVIDER, err, false);
    throw new ProviderError(PROVIDER, redact(e.message, ctx.apiKey), { code: e.code, retryable: e.retryable });
  }
  if (!res.ok) throw await httpError(ctx, res);

  const contentType = res.headers.get('content-type') ?? '';
  let bytes: Buffer;
  let finishReason: string | null;
  if (contentType.startsWith('image/')) {
    bytes = Buffer.from(await res.arrayBuffer());
    finishReason = res.headers.get('finish-reason');
  } else {
    let body: { image?: unknown; finish_reason?: unknown };
    try {
      body = (await res.json()) as typeof body;
    } catch {
      throw invalidResponse('upstream answered with a body that is not JSON');
    }
    if (typeof body?.image !== 'string' || body.image === '') throw invalidResponse('upstream answer has no image');
    bytes = Buffer.from(body.image, 'base64');
    finishReason = typeof body.finish_reason === 'string' ? body.finish_reason : null;
  }
  if (finishReason === 'CONTENT_FILTERED') {
    throw new ProviderError(PROVIDER, 'the output was flagged by Stability content moderation (finish_reason CONTENT_FILTERED)', {
      code: 'content_policy_violation',
      retryable: false,
    });
  }
  const format = sniffFormat(bytes);
  if (!format) throw invalidResponse('upstream returned an image in an unknown format');
  return { data: bytes, format };
}

/**
 * Stability's error body is `{id, name, errors: [...]}`; `name` tells errors of one status apart.
 * 403 `content_moderation` is its refusal of the prompt or input image.
 */
async function httpError(ctx: Context, res: Response): Promise<ProviderError> {
  const text = await res.text();
  let name: string | undefined;
  let message = `HTTP ${res.status}`;
  try {
    const body = JSON.parse(text) as { name?: unknown; errors?: unknown; message?: unknown };
    if (typeof body.name === 'string' && body.name) name = body.name;
    if (Array.isArray(body.errors) && body.errors.length > 0) message = body.errors.map(String).join('; ');
    else if (typeof body.message === 'string' && body.message) message = body.message;
    else if (name) message = name;
  } catch {
    if (text.trim()) message = `HTTP ${res.status}: ${text.trim().slice(0, 200)}`;
  }
  const upstreamCode = name === 'content_moderation' ? 'content_policy_violation' : name;
  return errorFromStatus(PROVIDER, res.status, redact(message, ctx.apiKey), { headers: res.headers, upstreamCode });
}

/**
 * Stability's edit endpoints have no size parameter and keep the input's dimensions, so an exact
 * `WxH` the client asked for is honoured here: stretched when only the scale differs (same aspect
 * ratio), otherwise scaled to cover and centre-cropped so nothing is distorted.
 */
async function resizeTo(image: OutputImage, target: Size): Promise<OutputImage> {
  try {
    return await resizeToCover(image, target);
  } catch (err) {
    throw invalidResponse(`the upstream image could not be decoded: ${err instanceof Error ? err.message : String(err)}`);
  }
}



function invalidResponse(message: string): ProviderError {
  return new ProviderError(PROVIDER, message, { code: 'upstream_invalid_response', retryable: true });
}

function classifyError(ctx: Context, err: unknown, caller: AbortSignal | undefined, deadline: AbortSignal): ProviderError {
  if (caller?.aborted) return new ProviderError(PROVIDER, 'the upstream request was aborted', { code: 'aborted', retryable: false });
  if (err instanceof ProviderError) return err;
  if (deadline.aborted) return connectionError(PROVIDER, err, true);
  if (err instanceof Error && err.name === 'TypeError') {
    // undici's "terminated": the connection dropped while the body was read (its TypeError may come
    // from another realm, hence the name check)
    const e = connectionError(PROVIDER, err, false);
    return new ProviderError(PROVIDER, redact(e.message, ctx.apiKey), { code: e.code, retryable: e.retryable });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ProviderError(PROVIDER, redact(message, ctx.apiKey), { code: 'provider_error', retryable: false });
}
