import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { closeServer, createHolds, createRequestWaiters, createScripts, listenOnLoopback } from './fake-kit';
import { generatedImage } from './fixtures';

/**
 * A real HTTP server speaking OpenAI's (and Azure OpenAI's) documented wire format for image
 * edits, for tests of provider adapters and of anything relaying to them. Routes:
 *   POST /v1/images/edits                                           (OpenAI, `Authorization: Bearer`)
 *   POST /openai/deployments/{deployment}/images/edits?api-version= (Azure, `api-key`)
 *   POST /openai/v1/images/edits                                    (Azure v1 surface, `api-key`)
 *   GET  /files/{name}                                              (images handed out as `url`)
 * Multipart bodies are parsed with the platform's own `Request.formData()`, so no extra dependency.
 */

export interface RecordedFile {
  /** the multipart field name exactly as received: `image`, `image[]`, `mask`, ... */
  field: string;
  filename: string;
  contentType: string;
  data: Buffer;
}

export interface RecordedRequest {
  method: string;
  /** path without the query string */
  path: string;
  query: Record<string, string>;
  /** lower-cased header names; repeated headers joined with ", " */
  headers: Record<string, string>;
  /** text parts; a field sent more than once becomes an array */
  fields: Record<string, string | string[]>;
  files: RecordedFile[];
  /** set for `/openai/deployments/{deployment}/...` */
  deployment?: string;
}

export interface FakeResponse {
  status?: number;
  headers?: Record<string, string>;
  /** JSON-serialised; a Buffer or string is sent as is */
  body?: unknown;
  /** wait this long before answering */
  delayMs?: number;
  /** a streamed answer (`stream=true`): wait this long between two events */
  streamIntervalMs?: number;
  /** a streamed answer ends with this `error` event after its partial images, instead of the completed image */
  streamError?: { message: string; code: string; type?: string };
}

export interface FakeContext {
  request: RecordedRequest;
  /** the body the fake would answer with by default (optionally forcing `url` or `b64_json` data) */
  defaultBody(opts?: { responseFormat?: 'url' | 'b64_json' }): Promise<Record<string, unknown>>;
}

/** Returns the response to send, or undefined to send the default one. */
export type FakeHandler = (ctx: FakeContext) => FakeResponse | undefined | Promise<FakeResponse | undefined>;

export interface FakeOpenAIOptions {
  /** require `Authorization: Bearer <apiKey>` on OpenAI routes (401 in OpenAI's shape otherwise) */
  apiKey?: string;
  /** require `api-key: <apiKey>` on Azure routes (401 in Azure's shape otherwise) */
  azure?: { apiKey?: string };
}

export interface FakeOpenAI {
  /** OpenAI base URL, e.g. `http://127.0.0.1:1234/v1` */
  readonly url: string;
  /** server origin, e.g. `http://127.0.0.1:1234`: the Azure `endpoint` */
  readonly origin: string;
  /** every request received, in order (including rejected ones) */
  readonly requests: RecordedRequest[];
  /** the options it was started with; mutable (e.g. `fake.azure.apiKey = 'k'`) */
  readonly azure: { apiKey?: string };
  /**
   * Script the next `times` (default 1; `Infinity` for all) edit responses. Scripts queue up in
   * call order. A static FakeResponse or a handler (which may return undefined for the default).
   */
  respondWith(response: FakeResponse | FakeHandler, opts?: { times?: number }): void;
  /** hold every edit request (after recording it) until the returned function is called */
  hold(): () => void;
  /** resolves once at least `count` requests have been recorded */
  waitForRequests(count: number): Promise<void>;
  /** forget recorded requests and scripted responses; release holds */
  reset(): void;
  close(): Promise<void>;
}

/** An error response in OpenAI's shape: `{error: {message, type, param, code}}`. */
export function openAIError(
  status: number,
  message: string,
  opts: { code?: string | null; type?: string; param?: string | null; headers?: Record<string, string> } = {},
): FakeResponse {
  return {
    status,
    headers: { 'x-request-id': `req_${randomUUID().replace(/-/g, '')}`, ...opts.headers },
    body: { error: { message, type: opts.type ?? (status >= 500 ? 'server_error' : 'invalid_request_error'), param: opts.param ?? null, code: opts.code ?? null } },
  };
}


function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

async function parseRequest(req: http.IncomingMessage, url: URL): Promise<RecordedRequest> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
  const recorded: RecordedRequest = {
    method: req.method ?? 'GET',
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    headers,
    fields: {},
    files: [],
  };
  const contentType = headers['content-type'] ?? '';
  if (contentType.startsWith('multipart/form-data')) {
    const form = await new Request('http://fake.local/', { method: 'POST', headers: { 'content-type': contentType }, body }).formData();
    for (const [field, value] of form.entries()) {
      if (typeof value === 'string') {
        const prev = recorded.fields[field];
        recorded.fields[field] = prev === undefined ? value : [...(Array.isArray(prev) ? prev : [prev]), value];
      } else {
        recorded.files.push({ field, filename: value.name, contentType: value.type, data: Buffer.from(await value.arrayBuffer()) });
      }
    }
  } else if (contentType.startsWith('application/json') && body.length > 0) {
    const json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    for (const [k, v] of Object.entries(json)) recorded.fields[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return recorded;
}

export async function startFakeOpenAI(opts: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  const requests: RecordedRequest[] = [];
  const scripts = createScripts<FakeResponse | FakeHandler>();
  const files = new Map<string, { data: Buffer; type: string }>();
  const holds = createHolds();
  const waiters = createRequestWaiters(() => requests.length);
  const azure = { ...opts.azure };
  let origin = '';

  const send = (res: http.ServerResponse, r: FakeResponse): void => {
    if (res.destroyed || res.writableEnded) return;
    const isRaw = Buffer.isBuffer(r.body) || typeof r.body === 'string';
    const payload = r.body === undefined ? '' : isRaw ? (r.body as Buffer | string) : JSON.stringify(r.body);
    res.writeHead(r.status ?? 200, { ...(isRaw || r.body === undefined ? {} : { 'content-type': 'application/json' }), ...r.headers });
    res.end(payload);
  };

  const defaultBody = async (request: RecordedRequest, force?: 'url' | 'b64_json'): Promise<Record<string, unknown>> => {
    const model = first(request.fields.model) ?? request.deployment ?? 'gpt-image-1';
    const dallE = model.startsWith('dall-e');
    const n = Number.parseInt(first(request.fields.n) ?? '1', 10) || 1;
    const sizeField = first(request.fields.size);
    const m = /^(\d+)x(\d+)$/.exec(sizeField ?? '');
    const [width, height] = m ? [Number(m[1]), Number(m[2])] : [1024, 1024];
    const outputFormat = dallE ? 'png' : (first(request.fields.output_format) ?? 'png');
    const responseFormat = force ?? first(request.fields.response_format) ?? 'b64_json';
    const img = await generatedImage(width, height, outputFormat as 'png' | 'jpeg' | 'webp');
    const data = Array.from({ length: n }, () => {
      if (responseFormat !== 'url') return { b64_json: img.toString('base64') };
      const name = `${randomUUID()}.${outputFormat}`;
      files.set(name, { data: img, type: `image/${outputFormat}` });
      return { url: `${origin}/files/${name}` };
    });
    const body: Record<string, unknown> = { created: Math.floor(Date.now() / 1000), data };
    if (!dallE) {
      const prompt = first(request.fields.prompt) ?? '';
      const textTokens = Math.ceil(prompt.length / 4);
      const imageTokens = request.files.filter((f) => f.field !== 'mask').length * 323;
      const outputTokens = n * 1056;
      const background = first(request.fields.background);
      const quality = first(request.fields.quality);
      Object.assign(body, {
        background: background === 'transparent' ? 'transparent' : 'opaque',
        output_format: outputFormat,
        quality: quality && quality !== 'auto' ? quality : 'medium',
        size: m ? sizeField : '1024x1024',
        usage: {
          input_tokens: textTokens + imageTokens,
          input_tokens_details: { image_tokens: imageTokens, text_tokens: textTokens },
          output_tokens: outputTokens,
          total_tokens: textTokens + imageTokens + outputTokens,
        },
      });
    }
    return body;
  };

  /**
   * OpenAI's streamed edit: `partial_images` `image_edit.partial_image` events (smaller renderings),
   * then one `image_edit.completed` per image with the usage; or an `error` event.
   */
  const sendStream = async (res: http.ServerResponse, request: RecordedRequest, r: FakeResponse): Promise<void> => {
    const body = await defaultBody(request, 'b64_json');
    const partials = Number.parseInt(first(request.fields.partial_images) ?? '0', 10) || 0;
    const meta = { created_at: body.created, size: body.size, quality: body.quality, background: body.background, output_format: body.output_format ?? 'png' };
    const pause = () => new Promise((resolve) => setTimeout(resolve, r.streamIntervalMs ?? 0));
    const event = (name: string, data: unknown) => {
      if (!res.destroyed) res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    res.writeHead(200, { 'content-type': 'text/event-stream', 'x-request-id': `req_${randomUUID().replace(/-/g, '')}` });
    const partial = await generatedImage(64, 64, (meta.output_format as 'png' | 'jpeg' | 'webp') ?? 'png');
    for (let i = 0; i < partials; i++) {
      event('image_edit.partial_image', { type: 'image_edit.partial_image', b64_json: partial.toString('base64'), partial_image_index: i, ...meta });
      await pause();
    }
    if (r.streamError) {
      event('error', { type: 'error', error: { type: r.streamError.type ?? 'invalid_request_error', code: r.streamError.code, message: r.streamError.message, param: null } });
    } else {
      for (const d of body.data as { b64_json: string }[]) event('image_edit.completed', { type: 'image_edit.completed', b64_json: d.b64_json, ...meta, usage: body.usage });
    }
    res.end();
  };

  const route = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', origin);
    const deploymentMatch = /^\/openai\/deployments\/([^/]+)\/images\/edits$/.exec(url.pathname);
    const isAzure = !!deploymentMatch || url.pathname === '/openai/v1/images/edits';
    const isOpenAI = url.pathname === '/v1/images/edits';

    const request = await parseRequest(req, url);
    if (deploymentMatch?.[1]) request.deployment = decodeURIComponent(deploymentMatch[1]);
    requests.push(request);
    waiters.check();

    if (req.method === 'GET' && url.pathname.startsWith('/files/')) {
      const file = files.get(url.pathname.slice('/files/'.length));
      send(res, file ? { headers: { 'content-type': file.type }, body: file.data } : openAIError(404, 'File not found'));
      return;
    }
    if (req.method !== 'POST' || (!isAzure && !isOpenAI)) {
      send(res, openAIError(404, `Invalid URL (${req.method} ${url.pathname})`));
      return;
    }
    if (isOpenAI && opts.apiKey !== undefined && request.headers.authorization !== `Bearer ${opts.apiKey}`) {
      send(res, openAIError(401, 'Incorrect API key provided.', { code: 'invalid_api_key' }));
      return;
    }
    if (isAzure && azure.apiKey !== undefined && request.headers['api-key'] !== azure.apiKey) {
      send(res, {
        status: 401,
        body: { error: { code: '401', message: 'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.' } },
      });
      return;
    }
    if (deploymentMatch && !request.query['api-version']) {
      send(res, { status: 404, body: { error: { code: '404', message: 'Resource not found' } } });
      return;
    }

    await holds.pass();

    let response: FakeResponse | undefined;
    const script = scripts.take();
    if (script) {
      const ctx: FakeContext = { request, defaultBody: (o) => defaultBody(request, o?.responseFormat) };
      response = typeof script === 'function' ? await script(ctx) : script;
    }
    const delayMs = response?.delayMs;
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    if (first(request.fields.stream) === 'true' && (response?.status ?? 200) < 400) {
      await sendStream(res, request, response ?? {});
      return;
    }
    if (!response || (response.status === undefined && response.body === undefined && !response.headers)) {
      response = { headers: { 'x-request-id': `req_${randomUUID().replace(/-/g, '')}` }, body: await defaultBody(request) };
    }
    send(res, response);
  };

  const server = http.createServer((req, res) => {
    res.on('error', () => {});
    route(req, res).catch((err: unknown) => send(res, openAIError(500, `fake server error: ${String(err)}`)));
  });
  origin = await listenOnLoopback(server);

  return {
    url: `${origin}/v1`,
    origin,
    requests,
    azure,
    respondWith(response, o = {}) {
      scripts.add(response, o.times);
    },
    hold: holds.hold,
    waitForRequests: waiters.waitFor,
    reset() {
      requests.length = 0;
      scripts.clear();
      files.clear();
      holds.releaseAll();
    },
    async close() {
      holds.releaseAll();
      await closeServer(server);
    },
  };
}
