import { ApiError, type GenerateContentConfig, type GenerateContentResponse, GoogleGenAI, type Part } from '@google/genai';
import sharp from 'sharp';
import { connectionError, errorFromStatus, redact } from '../shared/http-errors';
import { whiteEditMask } from '../shared/masks';
import { canonicalBase64 } from '../shared/images';
import type { EditProvider, ImageFormat, InputImage, OutputImage, ProviderEditRequest, ProviderEditResult, ProviderUsage } from '../types';
import { ProviderError } from '../types';

/**
 * Google Gemini image models ("Nano Banana": gemini-2.5-flash-image, gemini-3-pro-image-preview,
 * gemini-3.1-flash-image-preview) through the official `@google/genai` SDK and
 * `models.generateContent`. Gemini makes one image per call, so `n` means n calls.
 *
 * Masks: Gemini has no mask parameter. The canvas goes first, unchanged; right after it goes a
 * copy of the canvas with the edit region tinted magenta (solid magenta where the canvas is
 * transparent), and the prompt is prefixed with an instruction to change only the marked region
 * and keep every other pixel. An overlay on the picture itself is used rather than a bare
 * black/white mask because the model reads "the highlighted area of this picture" far more
 * reliably than a separate mask image. Without a mask, the canvas's own transparency is the mask;
 * a fully opaque canvas without a mask is a whole-image edit.
 */

export interface GeminiProviderConfig {
  apiKey: string;
  /** default `https://generativelanguage.googleapis.com` */
  baseURL?: string;
  /** bounds each edit (all n calls together); default 10 minutes */
  timeoutMs?: number;
}

const PROVIDER = 'gemini';
const DEFAULT_BASE_URL = 'https://generativelanguage.googleapis.com';
const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;

interface ModelInfo {
  /** input images the model takes per request (the mask overlay counts as one) */
  maxImages: number;
  /** takes `imageConfig.imageSize` (1K/2K/4K) */
  imageSizes: boolean;
}

/** From the Gemini API / Vertex AI model pages. Unknown models are sent as asked, unchecked. */
export const GEMINI_MODELS: Record<string, ModelInfo> = {
  'gemini-2.5-flash-image': { maxImages: 3, imageSizes: false },
  'gemini-3-pro-image-preview': { maxImages: 14, imageSizes: true },
  'gemini-3.1-flash-image-preview': { maxImages: 14, imageSizes: true },
};

/** `imageConfig.aspectRatio` values, as width/height. */
const ASPECT_RATIOS: Array<[string, number]> = [
  ['1:1', 1],
  ['2:3', 2 / 3],
  ['3:2', 3 / 2],
  ['3:4', 3 / 4],
  ['4:3', 4 / 3],
  ['4:5', 4 / 5],
  ['5:4', 5 / 4],
  ['9:16', 9 / 16],
  ['16:9', 16 / 9],
  ['21:9', 21 / 9],
];

export const MASK_INSTRUCTION =
  'Edit the first image. The second image is the same picture with the region to change highlighted in magenta. ' +
  'Change only the pixels inside that highlighted region and keep every other pixel of the first image exactly as it is. ' +
  'The result must not contain the magenta highlight. Apply this edit to the highlighted region:';

const MAGENTA = [255, 0, 255] as const;

const MIME: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };

/** Finish reasons (and any prompt block) that mean the content was refused: permanent. */
const REFUSALS = new Set(['SAFETY', 'PROHIBITED_CONTENT', 'IMAGE_SAFETY', 'IMAGE_PROHIBITED_CONTENT', 'BLOCKLIST', 'SPII', 'RECITATION', 'IMAGE_RECITATION']);

export function createGeminiProvider(cfg: GeminiProviderConfig): EditProvider {
  const timeoutMs = cfg.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  // Everything explicit, so GOOGLE_GENAI_USE_VERTEXAI / GOOGLE_GEMINI_BASE_URL / GOOGLE_GENAI_API_VERSION
  // in the environment cannot re-route us. The SDK does not retry unless `retryOptions` is set: the
  // worker owns retries. Our own deadline signal decides timeouts; the SDK's is a backstop.
  // Each call passes its own `fetch` (see editImages), so the SDK never looks up undici's global
  // dispatcher itself.
  const client = new GoogleGenAI({
    apiKey: cfg.apiKey,
    vertexai: false,
    apiVersion: 'v1beta',
    httpOptions: { baseUrl: cfg.baseURL ?? DEFAULT_BASE_URL, timeout: timeoutMs + 1000 },
  });
  return {
    id: PROVIDER,
    edit: (request, options) => editImages(client, cfg.apiKey, timeoutMs, request, options?.signal),
  };
}

async function editImages(
  client: GoogleGenAI,
  apiKey: string,
  timeoutMs: number,
  request: ProviderEditRequest,
  callerSignal: AbortSignal | undefined,
): Promise<ProviderEditResult> {
  const deadline = AbortSignal.timeout(timeoutMs);
  const signal = callerSignal ? AbortSignal.any([callerSignal, deadline]) : deadline;
  // The SDK's ApiError keeps only status and body, so the last response's headers (Retry-After) are
  // recorded here. Passing our own fetch also keeps the SDK from looking up undici's global
  // dispatcher, which fails inside jest's vm context; the cost is undici's default 300 s
  // headers/body timeouts per call, which the SDK would otherwise switch off.
  let lastHeaders: Headers | undefined;
  const recordingFetch = async (...args: Parameters<typeof fetch>): Promise<Response> => {
    const response = await fetch(...args);
    lastHeaders = response.headers;
    return response;
  };
  try {
    checkParameters(request);
    const target = parseSize(request.size);
    const parts = await buildParts(request);
    const config: GenerateContentConfig = { responseModalities: ['TEXT', 'IMAGE'], abortSignal: signal, httpOptions: { fetch: recordingFetch } };
    const imageConfig = target ? imageConfigFor(request.model, target) : undefined;
    if (imageConfig) config.imageConfig = imageConfig;

    const images: OutputImage[] = [];
    const usage: ProviderUsage = {};
    for (let i = 0; i < request.n; i++) {
      const response = await client.models.generateContent({ model: request.model, contents: [{ role: 'user', parts }], config });
      addUsage(usage, response);
      const image = firstImage(response);
      images.push(await finish(image, target, request));
    }
    return Object.keys(usage).length > 0 ? { images, usage } : { images };
  } catch (err) {
    throw classifyError(err, apiKey, lastHeaders, { caller: callerSignal, deadline });
  }
}

function unsupported(parameter: string, value: unknown, model: string): ProviderError {
  return new ProviderError(PROVIDER, `${parameter}=${JSON.stringify(value)} is not supported by the Gemini model ${model}`, {
    code: 'unsupported_parameter',
    retryable: false,
  });
}

/**
 * Gemini has no quality, transparency, input fidelity or search prompt. `output_format` and
 * `output_compression` are honoured by re-encoding locally (the Gemini API has no output MIME
 * option). `user` is kept by the service for abuse tracking; the Gemini API has no field for it.
 */
function checkParameters(r: ProviderEditRequest): void {
  if (r.images.length === 0) throw new ProviderError(PROVIDER, 'no input image', { code: 'invalid_request', retryable: false });
  if (!Number.isInteger(r.n) || r.n < 1) throw unsupported('n', r.n, r.model);
  if (r.quality !== undefined && r.quality !== 'auto') throw unsupported('quality', r.quality, r.model);
  if (r.background !== undefined && r.background !== 'auto' && r.background !== 'opaque') throw unsupported('background', r.background, r.model);
  if (r.inputFidelity !== undefined) throw unsupported('input_fidelity', r.inputFidelity, r.model);
  if (r.searchPrompt !== undefined) throw unsupported('search_prompt', r.searchPrompt, r.model);
  if (r.outputCompression !== undefined && r.outputFormat !== 'jpeg' && r.outputFormat !== 'webp') {
    throw unsupported('output_compression', r.outputCompression, r.model);
  }
}

/** "WxH" -> target size; "auto"/undefined -> none (no aspect ratio sent, the output kept as is). */
function parseSize(size: string | undefined): { width: number; height: number } | undefined {
  if (size === undefined || size === 'auto') return undefined;
  const m = /^(\d+)x(\d+)$/.exec(size);
  const width = Number(m?.[1]);
  const height = Number(m?.[2]);
  if (!m || width < 1 || height < 1) {
    throw new ProviderError(PROVIDER, `size=${JSON.stringify(size)} is not a WIDTHxHEIGHT size`, { code: 'unsupported_parameter', retryable: false });
  }
  return { width, height };
}

/** The supported aspect ratio nearest to width/height (compared as logarithms, so 2:1 and 1:2 are equally far from 1:1). */
export function nearestAspectRatio(width: number, height: number): string {
  const wanted = Math.log(width / height);
  let best = '1:1';
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const [name, ratio] of ASPECT_RATIOS) {
    const distance = Math.abs(Math.log(ratio) - wanted);
    if (distance < bestDistance) [best, bestDistance] = [name, distance];
  }
  return best;
}

/**
 * Models with 1K/2K/4K tiers get the smallest tier that covers the requested long edge, so a
 * 2048-pixel request is not an upscaled 1K image (1K is the default and is not sent).
 */
function imageConfigFor(model: string, target: { width: number; height: number }): { aspectRatio: string; imageSize?: string } {
  const aspectRatio = nearestAspectRatio(target.width, target.height);
  const longEdge = Math.max(target.width, target.height);
  if (!GEMINI_MODELS[model]?.imageSizes || longEdge <= 1024) return { aspectRatio };
  return { aspectRatio, imageSize: longEdge <= 2048 ? '2K' : '4K' };
}

function inlinePart(data: Buffer, format: ImageFormat): Part {
  return { inlineData: { mimeType: MIME[format], data: data.toString('base64') } };
}

async function buildParts(r: ProviderEditRequest): Promise<Part[]> {
  const canvas = r.images[0] as InputImage;
  const marked = await markedCanvas(canvas, r.mask);
  const count = r.images.length + (marked ? 1 : 0);
  const max = GEMINI_MODELS[r.model]?.maxImages;
  if (max !== undefined && count > max) {
    const why = marked ? ` (${r.images.length} images plus the mask overlay)` : '';
    throw new ProviderError(PROVIDER, `image: ${count} input images${why} exceed the ${max} the Gemini model ${r.model} accepts`, {
      code: 'unsupported_parameter',
      retryable: false,
    });
  }
  const parts: Part[] = [{ text: marked ? `${MASK_INSTRUCTION}\n\n${r.prompt}` : r.prompt }, inlinePart(canvas.data, canvas.format)];
  if (marked) parts.push(inlinePart(marked, 'png'));
  for (const img of r.images.slice(1)) parts.push(inlinePart(img.data, img.format));
  return parts;
}

/**
 * The canvas with the edit region tinted magenta, as PNG; undefined when there is nothing to mark
 * (no mask and an opaque canvas). A mask that marks nothing is still sent, as the client asked.
 */
async function markedCanvas(canvas: InputImage, mask: InputImage | undefined): Promise<Buffer | undefined> {
  if (!mask && !(await sharp(canvas.data).metadata()).hasAlpha) return undefined;
  const white = await sharp(await whiteEditMask(canvas, mask))
    .extractChannel(0)
    .raw()
    .toBuffer({ resolveWithObject: true });
  const edit = white.data;
  if (!mask && !edit.some((v) => v > 127)) return undefined;

  const { data, info } = await sharp(canvas.data).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.width !== white.info.width || info.height !== white.info.height) {
    throw new ProviderError(PROVIDER, 'the canvas dimensions do not match its declared width/height', { code: 'invalid_request', retryable: false });
  }
  for (let i = 0; i < edit.length; i++) {
    if ((edit[i] ?? 0) <= 127) continue;
    const o = i * 4;
    const opaque = (data[o + 3] ?? 0) >= 128;
    for (let c = 0; c < 3; c++) data[o + c] = opaque ? Math.round(((data[o + c] ?? 0) + MAGENTA[c]!) / 2) : MAGENTA[c]!;
    data[o + 3] = 255;
  }
  return sharp(data, { raw: { width: info.width, height: info.height, channels: 4 } }).png().toBuffer();
}

function addUsage(total: ProviderUsage, response: GenerateContentResponse): void {
  const u = response.usageMetadata;
  if (!u) return;
  const add = (key: Exclude<keyof ProviderUsage, 'outputTokensDetails'>, v: number | undefined): void => {
    if (typeof v === 'number') total[key] = (total[key] ?? 0) + v;
  };
  add('inputTokens', u.promptTokenCount);
  add('outputTokens', u.candidatesTokenCount);
  add('totalTokens', u.totalTokenCount);
  for (const d of u.promptTokensDetails ?? []) {
    if (d.modality === 'IMAGE') add('imageTokens', d.tokenCount);
    if (d.modality === 'TEXT') add('textTokens', d.tokenCount);
  }
  // the output by modality, in OpenAI's output_tokens_details names
  for (const d of u.candidatesTokensDetails ?? []) {
    const key = d.modality === 'IMAGE' ? 'image_tokens' : d.modality === 'TEXT' ? 'text_tokens' : undefined;
    if (key && typeof d.tokenCount === 'number') {
      total.outputTokensDetails ??= {};
      total.outputTokensDetails[key] = (total.outputTokensDetails[key] ?? 0) + d.tokenCount;
    }
  }
}

/**
 * The first final image of the answer. Gemini 3 models may also return interim "thought" images
 * (`thought: true`), which are skipped. No image: a blocked prompt or a refusal is a permanent
 * content-policy failure; anything else (text only, NO_IMAGE, OTHER) may well succeed next time.
 */
function firstImage(response: GenerateContentResponse): { data: Buffer; mimeType: string | undefined; base64: string } {
  const feedback = response.promptFeedback;
  if (feedback?.blockReason) {
    const detail = feedback.blockReasonMessage ? `: ${feedback.blockReasonMessage}` : '';
    throw new ProviderError(PROVIDER, `the prompt was blocked (${feedback.blockReason})${detail}`, { code: 'content_policy_violation', retryable: false });
  }
  const candidate = response.candidates?.[0];
  const parts = candidate?.content?.parts ?? [];
  const image = parts.find((p) => !p.thought && p.inlineData?.data);
  if (image?.inlineData?.data) return { data: Buffer.from(image.inlineData.data, 'base64'), mimeType: image.inlineData.mimeType, base64: image.inlineData.data };

  const reason = candidate?.finishReason;
  const said = parts
    .filter((p) => !p.thought && p.text)
    .map((p) => p.text)
    .join(' ')
    .trim();
  const detail = candidate?.finishMessage || said;
  const message = `Gemini returned no image${reason ? ` (finish reason ${reason})` : ''}${detail ? `: ${detail.slice(0, 500)}` : ''}`;
  if (reason && REFUSALS.has(reason)) throw new ProviderError(PROVIDER, message, { code: 'content_policy_violation', retryable: false });
  throw new ProviderError(PROVIDER, message, { code: 'upstream_invalid_response', retryable: true });
}

function asImageFormat(mimeType: string | undefined, sharpFormat: string | undefined): ImageFormat | undefined {
  if (mimeType === 'image/png' || sharpFormat === 'png') return 'png';
  if (mimeType === 'image/jpeg' || sharpFormat === 'jpeg') return 'jpeg';
  if (mimeType === 'image/webp' || sharpFormat === 'webp') return 'webp';
  return undefined;
}

/**
 * Resizes to the requested WxH when the model's size differs (stretching, not cropping: the nearest
 * ratio is close, and cropping could cut the edited region off), and re-encodes when the client
 * asked for another output format or a compression. Untouched bytes are returned otherwise.
 */
async function finish(image: { data: Buffer; mimeType: string | undefined; base64?: string }, target: { width: number; height: number } | undefined, r: ProviderEditRequest): Promise<OutputImage> {
  let meta: sharp.Metadata;
  try {
    meta = await sharp(image.data).metadata();
  } catch {
    throw new ProviderError(PROVIDER, `Gemini returned image data that cannot be decoded (${image.mimeType ?? 'no MIME type'})`, {
      code: 'upstream_invalid_response',
      retryable: true,
    });
  }
  const returned = asImageFormat(undefined, meta.format) ?? asImageFormat(image.mimeType, undefined);
  const format = r.outputFormat ?? returned ?? 'png';
  const resize = target !== undefined && (meta.width !== target.width || meta.height !== target.height);
  if (!resize && format === returned && r.outputCompression === undefined) {
    // Gemini's own base64 goes to a waiting client as it came, when it is canonical
    const base64 = image.base64 !== undefined ? canonicalBase64(image.base64, image.data) : undefined;
    return { data: image.data, format, ...(base64 ? { base64 } : {}) };
  }

  let pipeline = sharp(image.data);
  if (resize) pipeline = pipeline.resize(target.width, target.height, { fit: 'fill' });
  const quality = r.outputCompression !== undefined ? { quality: Math.min(100, Math.max(1, r.outputCompression)) } : {};
  if (format === 'jpeg') pipeline = pipeline.jpeg(quality);
  else if (format === 'webp') pipeline = pipeline.webp(quality);
  else pipeline = pipeline.png();
  return { data: await pipeline.toBuffer(), format };
}

/** The JSON error body the SDK puts into `ApiError.message`: `{"error": {code, message, status, details}}`. */
function parseApiError(err: ApiError): { message: string; details: Record<string, unknown>[] } {
  try {
    const body = JSON.parse(err.message) as { error?: { message?: unknown; details?: unknown } };
    const e = body.error ?? {};
    const details = Array.isArray(e.details) ? e.details.filter((d): d is Record<string, unknown> => !!d && typeof d === 'object') : [];
    return { message: typeof e.message === 'string' && e.message ? e.message : err.message, details };
  } catch {
    return { message: err.message, details: [] };
  }
}

/** `google.rpc.RetryInfo.retryDelay` ("39s", "1.5s"), Google's retry hint in a 429 body. */
function retryDelayMs(details: Record<string, unknown>[]): number | undefined {
  for (const d of details) {
    if (!String(d['@type'] ?? '').endsWith('google.rpc.RetryInfo')) continue;
    const m = /^(\d+(?:\.\d+)?)s$/.exec(String(d.retryDelay ?? ''));
    if (m) return Math.round(Number(m[1]) * 1000);
  }
  return undefined;
}

/** The error and its causes: the SDK wraps errors from another realm (jest's vm context) in a plain Error. */
function causes(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e = err; e !== undefined && e !== null && chain.length < 5; e = (e as { cause?: unknown }).cause) chain.push(e);
  return chain;
}

function named(err: unknown, ...names: string[]): { name: string; message: string; cause?: unknown } | undefined {
  const found = causes(err).find((e) => typeof e === 'object' && e !== null && names.includes(String((e as { name?: unknown }).name)));
  return found as { name: string; message: string; cause?: unknown } | undefined;
}

function classifyError(err: unknown, apiKey: string, headers: Headers | undefined, signals: { caller: AbortSignal | undefined; deadline: AbortSignal }): ProviderError {
  if (signals.caller?.aborted) return new ProviderError(PROVIDER, 'the upstream request was aborted', { code: 'aborted', retryable: false });
  if (err instanceof ProviderError) return err;
  if (signals.deadline.aborted) return connectionError(PROVIDER, err, true);

  if (err instanceof ApiError) {
    const { message, details } = parseApiError(err);
    const clean = redact(message, apiKey);
    // Gemini answers a bad key with 400 INVALID_ARGUMENT + ErrorInfo reason API_KEY_INVALID.
    if (details.some((d) => d.reason === 'API_KEY_INVALID')) {
      return new ProviderError(PROVIDER, clean, { status: err.status, code: 'provider_auth_failed', retryable: false });
    }
    // A Retry-After header wins; Google's own hint is `RetryInfo.retryDelay` in the body.
    const delay = retryDelayMs(details);
    const hinted = headers?.has('retry-after') || headers?.has('retry-after-ms');
    return errorFromStatus(PROVIDER, err.status, clean, { headers: hinted || delay === undefined ? headers : { 'retry-after-ms': String(delay) } });
  }
  // the SDK's own (backstop) timeout aborts the fetch without either of our signals firing
  if (named(err, 'AbortError', 'TimeoutError')) return connectionError(PROVIDER, err, true);
  const network = named(err, 'TypeError');
  if (network) {
    const e = connectionError(PROVIDER, network, false);
    return new ProviderError(PROVIDER, redact(e.message, apiKey), { code: e.code, retryable: e.retryable });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ProviderError(PROVIDER, redact(message, apiKey), { code: 'provider_error', retryable: false });
}
