import http from 'node:http';
import sharp from 'sharp';
import { makePng } from './fixtures';
import { closeServer, createHolds, createRequestWaiters, createScripts, listenOnLoopback } from './fake-kit';

/**
 * A real HTTP server speaking the Gemini API's documented REST wire format for image generation
 * and editing (what the official `@google/genai` SDK sends), for tests of the Gemini adapter:
 *   POST /{v1beta|v1|v1alpha}/models/{model}:generateContent
 * Auth is the `x-goog-api-key` header (or `?key=`). The JSON body carries
 * `contents[].parts[]` (`text` | `inlineData: {mimeType, data}` base64) and `generationConfig`
 * (`responseModalities`, `imageConfig: {aspectRatio, imageSize}`). The answer is
 * `{candidates: [{content: {role, parts}, finishReason}], usageMetadata, modelVersion, responseId}`;
 * errors are `{error: {code, message, status, details?}}`.
 */

export interface RecordedPart {
  text?: string;
  /** decoded bytes of an `inlineData` part */
  inlineData?: { mimeType: string; data: Buffer };
}

export interface RecordedGeminiRequest {
  method: string;
  /** path without the query string */
  path: string;
  query: Record<string, string>;
  /** lower-cased header names */
  headers: Record<string, string>;
  /** `v1beta`, `v1`, ... (undefined for unknown routes) */
  apiVersion?: string;
  /** the `{model}` of `/models/{model}:generateContent` */
  model?: string;
  /** the parsed JSON body, exactly as received */
  body: Record<string, unknown> | undefined;
  /** the parts of every content, in order, with inline data decoded */
  parts: RecordedPart[];
  /** `body.generationConfig` (where the SDK puts responseModalities and imageConfig) */
  generationConfig: Record<string, unknown> | undefined;
}

export interface FakeGeminiResponse {
  status?: number;
  headers?: Record<string, string>;
  /** JSON-serialised; a Buffer or string is sent as is */
  body?: unknown;
  /** wait this long before answering */
  delayMs?: number;
}

export interface FakeGeminiContext {
  request: RecordedGeminiRequest;
  /** the successful body the fake would answer with by default */
  defaultBody(): Promise<Record<string, unknown>>;
}

export type FakeGeminiHandler = (ctx: FakeGeminiContext) => FakeGeminiResponse | undefined | Promise<FakeGeminiResponse | undefined>;

export interface FakeGemini {
  /** the SDK's `httpOptions.baseUrl`, e.g. `http://127.0.0.1:1234` */
  readonly url: string;
  readonly requests: RecordedGeminiRequest[];
  /** script the next `times` (default 1; `Infinity` for all) generateContent responses */
  respondWith(response: FakeGeminiResponse | FakeGeminiHandler, opts?: { times?: number }): void;
  /** hold every generateContent request (after recording it) until the returned function is called */
  hold(): () => void;
  waitForRequests(count: number): Promise<void>;
  reset(): void;
  close(): Promise<void>;
}

const GOOGLE_STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ABORTED',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

/** An error in Google's shape: `{error: {code, message, status, details?}}`. */
export function geminiError(
  code: number,
  message: string,
  opts: { status?: string; details?: unknown[]; headers?: Record<string, string> } = {},
): FakeGeminiResponse {
  const error: Record<string, unknown> = { code, message, status: opts.status ?? GOOGLE_STATUS[code] ?? 'UNKNOWN' };
  if (opts.details) error.details = opts.details;
  return { status: code, headers: opts.headers ?? {}, body: { error } };
}

/** Google's rate-limit answer: 429 RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail. */
export function geminiRateLimited(retryDelay: string, message = 'You exceeded your current quota, please check your plan and billing details.'): FakeGeminiResponse {
  return geminiError(429, message, {
    details: [
      { '@type': 'type.googleapis.com/google.rpc.QuotaFailure', violations: [{ quotaMetric: 'generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count' }] },
      { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay },
    ],
  });
}

/** A 200 answer whose prompt was blocked: `promptFeedback.blockReason`, no candidates. */
export function geminiPromptBlocked(blockReason: string, blockReasonMessage?: string): FakeGeminiResponse {
  return {
    body: {
      promptFeedback: { blockReason, ...(blockReasonMessage ? { blockReasonMessage } : {}) },
      usageMetadata: { promptTokenCount: 270, totalTokenCount: 270 },
      modelVersion: 'gemini-2.5-flash-image',
    },
  };
}

/** A 200 answer whose candidate stopped for `finishReason` without an image. */
export function geminiCandidateBlocked(finishReason: string, finishMessage?: string): FakeGeminiResponse {
  return {
    body: {
      candidates: [{ content: { role: 'model', parts: [] }, finishReason, index: 0, ...(finishMessage ? { finishMessage } : {}) }],
      usageMetadata: { promptTokenCount: 270, totalTokenCount: 270 },
      modelVersion: 'gemini-2.5-flash-image',
    },
  };
}

/** gemini-2.5-flash-image's documented 1K output sizes per aspect ratio. */
const OUTPUT_1K: Record<string, [number, number]> = {
  '1:1': [1024, 1024],
  '2:3': [832, 1248],
  '3:2': [1248, 832],
  '3:4': [864, 1184],
  '4:3': [1184, 864],
  '4:5': [896, 1152],
  '5:4': [1152, 896],
  '9:16': [768, 1344],
  '16:9': [1344, 768],
  '21:9': [1536, 672],
};

function nearestRatio(width: number, height: number): string {
  let best = '1:1';
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const [ratio, [w, h]] of Object.entries(OUTPUT_1K)) {
    const d = Math.abs(Math.log(width / height) - Math.log(w / h));
    if (d < bestDistance) [best, bestDistance] = [ratio, d];
  }
  return best;
}

const imageCache = new Map<string, Promise<Buffer>>();

/** A picture of the given size, cached; 2K/4K ones are the 1K picture scaled up (drawing them is slow). */
function generatedPng(width: number, height: number, scale: number): Promise<Buffer> {
  const key = `${width}x${height}@${scale}`;
  let img = imageCache.get(key);
  if (!img) {
    img = makePng(width, height).then((png) => (scale === 1 ? png : sharp(png).resize(width * scale, height * scale).png().toBuffer()));
    imageCache.set(key, img);
  }
  return img;
}

function asRecord(v: unknown): Record<string, unknown> | undefined {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function recordParts(body: Record<string, unknown> | undefined): RecordedPart[] {
  const parts: RecordedPart[] = [];
  const contents = Array.isArray(body?.contents) ? body.contents : [];
  for (const content of contents) {
    const list = asRecord(content)?.parts;
    for (const raw of Array.isArray(list) ? list : []) {
      const part = asRecord(raw) ?? {};
      const inline = asRecord(part.inlineData);
      const recorded: RecordedPart = {};
      if (typeof part.text === 'string') recorded.text = part.text;
      if (inline) recorded.inlineData = { mimeType: String(inline.mimeType), data: Buffer.from(String(inline.data ?? ''), 'base64') };
      parts.push(recorded);
    }
  }
  return parts;
}

export async function startFakeGemini(opts: { apiKey?: string } = {}): Promise<FakeGemini> {
  const requests: RecordedGeminiRequest[] = [];
  const scripts = createScripts<FakeGeminiResponse | FakeGeminiHandler>();
  const holds = createHolds();
  const waiters = createRequestWaiters(() => requests.length);
  let origin = '';

  const send = (res: http.ServerResponse, r: FakeGeminiResponse): void => {
    if (res.destroyed || res.writableEnded) return;
    const isRaw = Buffer.isBuffer(r.body) || typeof r.body === 'string';
    const payload = r.body === undefined ? '' : isRaw ? (r.body as Buffer | string) : JSON.stringify(r.body);
    res.writeHead(r.status ?? 200, { ...(isRaw || r.body === undefined ? {} : { 'content-type': 'application/json; charset=UTF-8' }), ...r.headers });
    res.end(payload);
  };

  const defaultBody = async (request: RecordedGeminiRequest): Promise<Record<string, unknown>> => {
    const imageConfig = asRecord(request.generationConfig?.imageConfig);
    const modalities = request.generationConfig?.responseModalities;
    const inputs = request.parts.filter((p) => p.inlineData);
    // no aspect ratio: like the real model, follow the first input image (or square)
    let ratio = typeof imageConfig?.aspectRatio === 'string' ? imageConfig.aspectRatio : undefined;
    if (!ratio && inputs[0]?.inlineData) {
      const meta = await sharp(inputs[0].inlineData.data).metadata();
      ratio = nearestRatio(meta.width ?? 1, meta.height ?? 1);
    }
    const [w, h] = OUTPUT_1K[ratio ?? '1:1'] ?? [1024, 1024];
    const scale = imageConfig?.imageSize === '4K' ? 4 : imageConfig?.imageSize === '2K' ? 2 : 1;
    const png = await generatedPng(w, h, scale);

    const parts: Record<string, unknown>[] = [];
    if (Array.isArray(modalities) && modalities.includes('TEXT')) parts.push({ text: 'Here is the edited image.' });
    parts.push({ inlineData: { mimeType: 'image/png', data: png.toString('base64') } });

    const promptText = request.parts.map((p) => p.text ?? '').join('');
    const textTokens = Math.ceil(promptText.length / 4);
    const imageTokens = inputs.length * 258;
    const outputTokens = 1290;
    return {
      candidates: [{ content: { role: 'model', parts }, finishReason: 'STOP', index: 0 }],
      usageMetadata: {
        promptTokenCount: textTokens + imageTokens,
        candidatesTokenCount: outputTokens,
        totalTokenCount: textTokens + imageTokens + outputTokens,
        promptTokensDetails: [
          { modality: 'TEXT', tokenCount: textTokens },
          { modality: 'IMAGE', tokenCount: imageTokens },
        ],
        candidatesTokensDetails: [{ modality: 'IMAGE', tokenCount: outputTokens }],
      },
      modelVersion: request.model ?? 'gemini-2.5-flash-image',
      responseId: `fake-${requests.length}`,
    };
  };

  const route = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', origin);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;

    let body: Record<string, unknown> | undefined;
    let malformed = false;
    if (raw.length > 0) {
      try {
        body = asRecord(JSON.parse(raw));
      } catch {
        malformed = true;
      }
    }
    const match = /^\/(v1beta|v1|v1alpha)\/models\/([^/:]+):generateContent$/.exec(url.pathname);
    const request: RecordedGeminiRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers,
      body,
      parts: recordParts(body),
      generationConfig: asRecord(body?.generationConfig),
    };
    if (match?.[1]) request.apiVersion = match[1];
    if (match?.[2]) request.model = decodeURIComponent(match[2]);
    requests.push(request);
    waiters.check();

    if (req.method !== 'POST' || !match) {
      send(res, geminiError(404, `Method not found: ${req.method} ${url.pathname}`));
      return;
    }
    const key = headers['x-goog-api-key'] ?? request.query.key;
    if (opts.apiKey !== undefined && key === undefined) {
      send(res, geminiError(403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."));
      return;
    }
    if (opts.apiKey !== undefined && key !== opts.apiKey) {
      send(res, geminiError(400, 'API key not valid. Please pass a valid API key.', {
        details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com' }],
      }));
      return;
    }
    if (malformed || !Array.isArray(body?.contents)) {
      send(res, geminiError(400, malformed ? 'Invalid JSON payload received.' : '* GenerateContentRequest.contents: contents is not specified'));
      return;
    }

    await holds.pass();

    let response: FakeGeminiResponse | undefined;
    const script = scripts.take();
    if (script) response = typeof script === 'function' ? await script({ request, defaultBody: () => defaultBody(request) }) : script;
    if (response?.delayMs) await new Promise((r) => setTimeout(r, response?.delayMs));
    if (!response || (response.status === undefined && response.body === undefined && !response.headers)) {
      response = { body: await defaultBody(request) };
    }
    send(res, response);
  };

  const server = http.createServer((req, res) => {
    res.on('error', () => {});
    route(req, res).catch((err: unknown) => send(res, geminiError(500, `fake server error: ${String(err)}`)));
  });
  origin = await listenOnLoopback(server);

  return {
    url: origin,
    requests,
    respondWith(response, o = {}) {
      scripts.add(response, o.times);
    },
    hold: holds.hold,
    waitForRequests: waiters.waitFor,
    reset() {
      requests.length = 0;
      scripts.clear();
      holds.releaseAll();
    },
    async close() {
      holds.releaseAll();
      await closeServer(server);
    },
  };
}
