import OpenAI, {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIError,
  APIUserAbortError,
  AzureOpenAI,
  toFile,
} from 'openai';
import type { ImageEditParamsNonStreaming, ImageEditStreamEvent, ImagesResponse } from 'openai/resources/images';
import type { EditProvider, ImageFormat, InputImage, OutputImage, PartialImage, ProviderEditRequest, ProviderEditResult, ProviderUsage } from '../types';
import { ProviderError } from '../types';
import { canonicalBase64, sniffFormat } from '../shared/images';
import { CONTENT_POLICY_CODES, retryAfterMs } from '../shared/http-errors';

/**
 * OpenAI and Azure OpenAI image edits through the official `openai` SDK. The SDK never retries
 * (`maxRetries: 0`): the worker owns retries and re-sends the full upload each attempt.
 *
 * `response_format`: GPT image models always answer `b64_json` and reject the parameter, so it is
 * sent (as `b64_json`) only to DALL·E models: a model name starting with `dall-e`, or (Azure, where
 * `model` is a deployment name) a deployment listed in `dallEDeployments`. If an upstream answers
 * with `url` anyway, the bytes are fetched from it, so a wrong guess costs a download, not a job.
 */

export interface OpenAIProviderConfig {
  apiKey: string;
  baseURL?: string;
  /** bounds each edit call, including downloading `url` outputs; default 10 minutes */
  timeoutMs?: number;
}

export interface AzureOpenAIProviderConfig {
  /** e.g. `https://my-resource.openai.azure.com` */
  endpoint: string;
  apiKey: string;
  apiVersion: string;
  timeoutMs?: number;
  /** deployment names that serve a DALL·E model (asked for `response_format: b64_json`) */
  dallEDeployments?: string[];
}

interface EditContext {
  providerId: string;
  client: OpenAI;
  apiKey: string;
  timeoutMs: number | undefined;
  isDallE(model: string): boolean;
}

const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;

export function createOpenAIProvider(cfg: OpenAIProviderConfig): EditProvider {
  const client = new OpenAI({
    apiKey: cfg.apiKey,
    maxRetries: 0,
    ...(cfg.baseURL ? { baseURL: cfg.baseURL } : {}),
    timeout: sdkTimeout(cfg.timeoutMs),
  });
  const ctx: EditContext = { providerId: 'openai', client, apiKey: cfg.apiKey, timeoutMs: cfg.timeoutMs, isDallE: isDallEModel };
  return { id: 'openai', edit: (request, options) => editImages(ctx, request, options?.signal, options?.onPartial) };
}

export function createAzureOpenAIProvider(cfg: AzureOpenAIProviderConfig): EditProvider {
  // No `deployment` on the client: the SDK puts `body.model` into `/openai/deployments/{model}/...`.
  const client = new AzureOpenAI({
    endpoint: cfg.endpoint,
    apiKey: cfg.apiKey,
    apiVersion: cfg.apiVersion,
    maxRetries: 0,
    timeout: sdkTimeout(cfg.timeoutMs),
  });
  const dallE = new Set(cfg.dallEDeployments ?? []);
  const ctx: EditContext = {
    providerId: 'azure-openai',
    client,
    apiKey: cfg.apiKey,
    timeoutMs: cfg.timeoutMs,
    isDallE: (model) => dallE.has(model) || isDallEModel(model),
  };
  return { id: 'azure-openai', edit: (request, options) => editImages(ctx, request, options?.signal, options?.onPartial) };
}

/**
 * The deadline is enforced with our own AbortSignal (see editImages), which tells a timeout from a
 * caller's abort reliably; the SDK's own timeout is only a backstop a little later.
 */
function sdkTimeout(timeoutMs: number | undefined): number {
  return (timeoutMs ?? DEFAULT_TIMEOUT_MS) + 1000;
}

function isDallEModel(model: string): boolean {
  return model.startsWith('dall-e');
}

const MIME: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };

function uploadFor(img: InputImage, fallbackName: string): Promise<File> {
  return toFile(img.data, img.filename || fallbackName, { type: MIME[img.format] });
}

async function editImages(ctx: EditContext, request: ProviderEditRequest, callerSignal: AbortSignal | undefined, onPartial?: (p: PartialImage) => void): Promise<ProviderEditResult> {
  const deadline = AbortSignal.timeout(ctx.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const signal = callerSignal ? AbortSignal.any([callerSignal, deadline]) : deadline;
  try {
    const images = await Promise.all(request.images.map((img, i) => uploadFor(img, `image-${i}.${img.format}`)));
    const first = images[0];
    if (!first) throw new ProviderError(ctx.providerId, 'no input image', { code: 'invalid_request', retryable: false });

    // The SDK types narrow these to its current literal unions; validation upstream already decided
    // what the model accepts, so values are passed through unchanged.
    const body: ImageEditParamsNonStreaming = {
      // one file goes as `image`, several as `image[]`
      image: images.length === 1 ? first : images,
      prompt: request.prompt,
      model: request.model,
      n: request.n,
    };
    if (request.mask) body.mask = await uploadFor(request.mask, 'mask.png');
    if (request.size !== undefined) body.size = request.size;
    if (request.user !== undefined) body.user = request.user;
    if (request.quality !== undefined) body.quality = request.quality as ImageEditParamsNonStreaming['quality'];
    if (request.background !== undefined) body.background = request.background as ImageEditParamsNonStreaming['background'];
    if (request.outputFormat !== undefined) body.output_format = request.outputFormat;
    if (request.outputCompression !== undefined) body.output_compression = request.outputCompression;
    if (request.inputFidelity !== undefined) body.input_fidelity = request.inputFidelity as ImageEditParamsNonStreaming['input_fidelity'];
    if (request.safetyIdentifier !== undefined) body.safety_identifier = request.safetyIdentifier;
    // `moderation` is OpenAI's (GPT image models) though the SDK's edit type does not list it; the SDK sends every body field
    if (request.moderation !== undefined) (body as ImageEditParamsNonStreaming & { moderation?: string }).moderation = request.moderation;
    if (ctx.isDallE(request.model)) body.response_format = 'b64_json';

    if (request.partialImages !== undefined && onPartial && !ctx.isDallE(request.model)) {
      // the client streams: partial images are relayed as the upstream sends them
      const stream = await ctx.client.images.edit({ ...body, stream: true, partial_images: request.partialImages }, { signal });
      return await fromStream(ctx, stream, onPartial);
    }
    const response = await ctx.client.images.edit(body, { signal });
    return await toResult(ctx, response, signal);
  } catch (err) {
    throw classifyError(ctx, err, { caller: callerSignal, deadline });
  }
}

async function toResult(ctx: EditContext, response: ImagesResponse, signal: AbortSignal): Promise<ProviderEditResult> {
  const data = response.data ?? [];
  if (data.length === 0) throw invalidResponse(ctx, 'upstream returned no images');
  const declared = asImageFormat(response.output_format);
  const images: OutputImage[] = [];
  for (const item of data) {
    let bytes: Buffer;
    if (item.b64_json) bytes = Buffer.from(item.b64_json, 'base64');
    else if (item.url) bytes = await download(ctx, item.url, signal);
    else throw invalidResponse(ctx, 'upstream image has neither b64_json nor url');
    const format = declared ?? sniffFormat(bytes);
    if (!format) throw invalidResponse(ctx, 'upstream returned an image in an unknown format');
    const base64 = item.b64_json ? canonicalBase64(item.b64_json, bytes) : undefined;
    images.push({ data: bytes, format, ...(base64 ? { base64 } : {}), ...(item.revised_prompt ? { revisedPrompt: item.revised_prompt } : {}) });
  }
  const usage = toUsage(response.usage);
  return usage ? { images, usage } : { images };
}

/** The images of a streamed edit: each `image_edit.completed` is one image; partials go to `onPartial` as they come. */
async function fromStream(ctx: EditContext, stream: AsyncIterable<ImageEditStreamEvent>, onPartial: (p: PartialImage) => void): Promise<ProviderEditResult> {
  const images: OutputImage[] = [];
  let usage: ProviderUsage | undefined;
  for await (const event of stream) {
    const bytes = Buffer.from(event.b64_json ?? '', 'base64');
    const format = asImageFormat(event.output_format) ?? sniffFormat(bytes);
    if (event.type === 'image_edit.partial_image') {
      if (format && bytes.length > 0) onPartial({ index: event.partial_image_index, data: bytes, format });
      continue;
    }
    if (event.type !== 'image_edit.completed') continue;
    if (!format || bytes.length === 0) throw invalidResponse(ctx, 'upstream streamed a completed image in an unknown format');
    const base64 = canonicalBase64(event.b64_json ?? '', bytes);
    images.push({ data: bytes, format, ...(base64 ? { base64 } : {}) });
    usage = toUsage(event.usage) ?? usage;
  }
  if (images.length === 0) throw invalidResponse(ctx, 'the upstream stream ended without a completed image');
  return usage ? { images, usage } : { images };
}

function toUsage(u: ImagesResponse['usage']): ProviderUsage | undefined {
  if (!u) return undefined;
  const usage: ProviderUsage = {};
  if (typeof u.input_tokens === 'number') usage.inputTokens = u.input_tokens;
  if (typeof u.output_tokens === 'number') usage.outputTokens = u.output_tokens;
  if (typeof u.total_tokens === 'number') usage.totalTokens = u.total_tokens;
  const details = u.input_tokens_details as Partial<typeof u.input_tokens_details> | undefined;
  if (typeof details?.image_tokens === 'number') usage.imageTokens = details.image_tokens;
  if (typeof details?.text_tokens === 'number') usage.textTokens = details.text_tokens;
  // whatever output details the upstream reports (image_tokens, text_tokens, ...), kept as given
  const out = (u as { output_tokens_details?: unknown }).output_tokens_details;
  if (out && typeof out === 'object') {
    const counts = Object.entries(out).filter((e): e is [string, number] => typeof e[1] === 'number');
    if (counts.length > 0) usage.outputTokensDetails = Object.fromEntries(counts);
  }
  return usage;
}

/** Fetches an output handed out as a URL, under the call's deadline and abort signal. */
async function download(ctx: EditContext, url: string, signal: AbortSignal): Promise<Buffer> {
  const res = await fetch(url, { signal });
  if (!res.ok) {
    throw new ProviderError(ctx.providerId, `downloading the upstream image failed with HTTP ${res.status}`, {
      status: res.status,
      code: 'upstream_error',
      retryable: res.status === 408 || res.status === 429 || res.status >= 500,
    });
  }
  return Buffer.from(await res.arrayBuffer());
}

function asImageFormat(v: unknown): ImageFormat | undefined {
  return v === 'png' || v === 'jpeg' || v === 'webp' ? v : undefined;
}


function invalidResponse(ctx: EditContext, message: string): ProviderError {
  return new ProviderError(ctx.providerId, message, { code: 'upstream_invalid_response', retryable: true });
}

function classifyError(ctx: EditContext, err: unknown, signals: { caller: AbortSignal | undefined; deadline: AbortSignal }): ProviderError {
  const p = ctx.providerId;
  if (signals.caller?.aborted) {
    return new ProviderError(p, 'the upstream request was aborted', { code: 'aborted', retryable: false });
  }
  if (err instanceof ProviderError) return err;
  const clean = (m: string): string => (ctx.apiKey ? m.split(ctx.apiKey).join('***') : m);

  if (signals.deadline.aborted || err instanceof APIConnectionTimeoutError) {
    return new ProviderError(p, 'the upstream request timed out', { code: 'upstream_timeout', retryable: true });
  }
  if (err instanceof APIUserAbortError) {
    return new ProviderError(p, 'the upstream request was aborted', { code: 'aborted', retryable: false });
  }
  if (err instanceof Error && err.name === 'TimeoutError') {
    return new ProviderError(p, 'the upstream request timed out', { code: 'upstream_timeout', retryable: true });
  }
  if (err instanceof APIConnectionError) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return new ProviderError(p, clean(`${err.message}${cause}`), { code: 'upstream_unreachable', retryable: true });
  }
  if (err instanceof APIError && typeof err.status === 'number') {
    const status = err.status;
    const body = (err.error ?? {}) as { message?: unknown; code?: unknown; param?: unknown; innererror?: { code?: unknown } };
    const message = clean(typeof body.message === 'string' && body.message ? body.message : err.message);
    const upstreamCode = typeof err.code === 'string' && err.code ? err.code : undefined;
    const innerCode = typeof body.innererror?.code === 'string' ? body.innererror.code : undefined;
    // the parameter the upstream blamed (`prompt`, `image`, ...): the client's request has the same names
    const param = typeof err.param === 'string' && err.param ? err.param : typeof body.param === 'string' && body.param ? body.param : null;
    const opts = { status, param };

    if (status === 429) {
      return new ProviderError(p, message, { ...opts, code: 'rate_limited', retryable: true, retryAfterMs: retryAfterMs(err.headers) });
    }
    if (status === 408 || status === 409 || status >= 500) {
      return new ProviderError(p, message, { ...opts, code: 'upstream_error', retryable: true, retryAfterMs: retryAfterMs(err.headers) });
    }
    if ((upstreamCode && CONTENT_POLICY_CODES.has(upstreamCode)) || (innerCode && CONTENT_POLICY_CODES.has(innerCode))) {
      return new ProviderError(p, message, { ...opts, code: 'content_policy_violation', retryable: false });
    }
    if (status === 401 || status === 403) {
      return new ProviderError(p, message, { ...opts, code: 'provider_auth_failed', retryable: false });
    }
    return new ProviderError(p, message, { ...opts, code: upstreamCode ?? 'provider_rejected', retryable: false });
  }
  if (err instanceof APIError && err.status === undefined) {
    // an `error` event in the middle of a stream: no HTTP status, the upstream's code and message
    const code = typeof err.code === 'string' && err.code ? err.code : 'provider_rejected';
    return new ProviderError(p, clean(err.message), { code: CONTENT_POLICY_CODES.has(code) ? 'content_policy_violation' : code, retryable: false });
  }
  if (err instanceof Error && err.name === 'AbortError') {
    return new ProviderError(p, 'the upstream request was aborted', { code: 'aborted', retryable: false });
  }
  if (err instanceof TypeError) {
    // fetch() of an output URL failing at the network level
    return new ProviderError(p, clean(err.message), { code: 'upstream_unreachable', retryable: true });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ProviderError(p, clean(message), { code: 'provider_error', retryable: false });
}
