import { randomUUID } from 'node:crypto';
import http from 'node:http';
import sharp from 'sharp';
import type { FakeResponse, RecordedRequest } from './fake-openai';
import { closeServer, createHolds, createRequestWaiters, createScripts, listenOnLoopback } from './fake-kit';
import { generatedImage } from './fixtures';

/**
 * A real HTTP server speaking Stability AI's documented wire format for the Stable Image edit
 * endpoints, for tests of the Stability adapter. Route:
 *   POST /v2beta/stable-image/edit/{inpaint | erase | search-and-replace}
 * Multipart request (`image`, `mask`, `prompt`, `search_prompt`, `output_format`, `seed`, ...),
 * `Authorization: Bearer <key>`. `Accept: application/json` answers `{image: <base64>,
 * finish_reason, seed}` (content-type `application/json; type=image/<format>`); `Accept: image/*`
 * answers the bytes with `finish-reason` and `seed` headers. Errors are `{id, name, errors: [...]}`.
 * The default answer is a picture with the input image's dimensions in the asked `output_format`.
 */

export type { FakeResponse, RecordedFile, RecordedRequest } from './fake-openai';

export interface StabilityFakeContext {
  request: RecordedRequest;
  /** the JSON body the fake would answer with by default: `{image, finish_reason, seed}` */
  defaultBody(): Promise<{ image: string; finish_reason: string; seed: number }>;
}

/** Returns the response to send, or undefined to send the default one. */
export type StabilityFakeHandler = (ctx: StabilityFakeContext) => FakeResponse | undefined | Promise<FakeResponse | undefined>;

export interface FakeStability {
  /** the base URL to hand the adapter, e.g. `http://127.0.0.1:1234` */
  readonly url: string;
  /** every request received, in order (including rejected ones) */
  readonly requests: RecordedRequest[];
  /** script the next `times` (default 1; `Infinity` for all) edit responses, in call order */
  respondWith(response: FakeResponse | StabilityFakeHandler, opts?: { times?: number }): void;
  /** hold every edit request (after recording it) until the returned function is called */
  hold(): () => void;
  /** resolves once at least `count` requests have been recorded */
  waitForRequests(count: number): Promise<void>;
  /** forget recorded requests and scripted responses; release holds */
  reset(): void;
  close(): Promise<void>;
}

/** An error in Stability's shape: `{id, name, errors}`. */
export function stabilityError(status: number, name: string, errors: string[], headers?: Record<string, string>): FakeResponse {
  return { status, ...(headers ? { headers } : {}), body: { id: randomUUID().replace(/-/g, ''), name, errors } };
}

const OPERATIONS = new Set(['inpaint', 'erase', 'search-and-replace']);
const FORMATS = new Set(['png', 'jpeg', 'webp']);
const MAX_SEED = 4294967294;


function field(request: RecordedRequest, name: string): string | undefined {
  const v = request.fields[name];
  return Array.isArray(v) ? v[0] : v;
}

async function parseRequest(req: http.IncomingMessage, url: URL): Promise<RecordedRequest> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
  const recorded: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, query: Object.fromEntries(url.searchParams), headers, fields: {}, files: [] };
  const contentType = headers['content-type'] ?? '';
  if (contentType.startsWith('multipart/form-data')) {
    const form = await new Request('http://fake.local/', { method: 'POST', headers: { 'content-type': contentType }, body }).formData();
    for (const [name, value] of form.entries()) {
      if (typeof value === 'string') {
        const prev = recorded.fields[name];
        recorded.fields[name] = prev === undefined ? value : [...(Array.isArray(prev) ? prev : [prev]), value];
      } else {
        recorded.files.push({ field: name, filename: value.name, contentType: value.type, data: Buffer.from(await value.arrayBuffer()) });
      }
    }
  }
  return recorded;
}

/** The documented request rules; returns Stability's 400 answer for the first one broken. */
async function validate(request: RecordedRequest, operation: string): Promise<FakeResponse | { width: number; height: number }> {
  const bad = (message: string): FakeResponse => stabilityError(400, 'bad_request', [message]);
  const image = request.files.find((f) => f.field === 'image');
  if (!image) return bad('image: required');
  let width = 0;
  let height = 0;
  try {
    const meta = await sharp(image.data).metadata();
    if (!FORMATS.has(String(meta.format))) return bad('image: unsupported format');
    width = meta.width ?? 0;
    height = meta.height ?? 0;
  } catch {
    return bad('image: could not be decoded');
  }
  if (width < 64 || height < 64) return bad('image: every side must be at least 64 pixels');
  if (width * height < 4096 || width * height > 9_437_184) return bad('image: total pixel count must be between 4,096 and 9,437,184');
  const prompt = field(request, 'prompt');
  if (operation !== 'erase' && !prompt) return bad('prompt: required');
  if (prompt && prompt.length > 10_000) return bad('prompt: must be at most 10000 characters');
  if (operation === 'search-and-replace' && !field(request, 'search_prompt')) return bad('search_prompt: required');
  const format = field(request, 'output_format');
  if (format !== undefined && !FORMATS.has(format)) return bad('output_format: must be one of png, jpeg, webp');
  const seed = field(request, 'seed');
  if (seed !== undefined && !(/^\d+$/.test(seed) && Number(seed) <= MAX_SEED)) return bad(`seed: must be an integer between 0 and ${MAX_SEED}`);
  return { width, height };
}

export async function startFakeStability(opts: { apiKey?: string } = {}): Promise<FakeStability> {
  const requests: RecordedRequest[] = [];
  const scripts = createScripts<FakeResponse | StabilityFakeHandler>();
  const holds = createHolds();
  const waiters = createRequestWaiters(() => requests.length);
  let origin = '';

  const send = (res: http.ServerResponse, r: FakeResponse): void => {
    if (res.destroyed || res.writableEnded) return;
    const isRaw = Buffer.isBuffer(r.body) || typeof r.body === 'string';
    const payload = r.body === undefined ? '' : isRaw ? (r.body as Buffer | string) : JSON.stringify(r.body);
    res.writeHead(r.status ?? 200, { ...(isRaw || r.body === undefined ? {} : { 'content-type': 'application/json' }), ...r.headers });
    res.end(payload);
  };

  const route = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', origin);
    const request = await parseRequest(req, url);
    requests.push(request);
    waiters.check();

    const operation = /^\/v2beta\/stable-image\/edit\/([^/]+)$/.exec(url.pathname)?.[1];
    if (req.method !== 'POST' || !operation || !OPERATIONS.has(operation)) {
      send(res, stabilityError(404, 'not_found', [`${req.method} ${url.pathname}: not found`]));
      return;
    }
    if (opts.apiKey !== undefined && request.headers.authorization !== `Bearer ${opts.apiKey}`) {
      send(res, stabilityError(401, 'unauthorized', ['authorization: invalid or missing API key']));
      return;
    }
    const accept = request.headers.accept ?? '';
    const wantsJson = accept.includes('application/json');
    if (!wantsJson && !accept.includes('image/')) {
      send(res, stabilityError(400, 'bad_request', ['accept: must be image/* or application/json']));
      return;
    }
    const checked = await validate(request, operation);
    if (!('width' in checked)) {
      send(res, checked);
      return;
    }

    await holds.pass();

    const format = field(request, 'output_format') ?? 'png';
    const seedField = Number(field(request, 'seed') ?? '0');
    const seed = seedField > 0 ? seedField : Math.floor(Math.random() * MAX_SEED) + 1;
    const defaultBody = async () => ({
      image: (await generatedImage(checked.width, checked.height, format as 'png' | 'jpeg' | 'webp')).toString('base64'),
      finish_reason: 'SUCCESS',
      seed,
    });

    let response: FakeResponse | undefined;
    const script = scripts.take();
    if (script) response = typeof script === 'function' ? await script({ request, defaultBody }) : script;
    if (response?.delayMs) await new Promise((r) => setTimeout(r, response?.delayMs));
    if (!response || (response.status === undefined && response.body === undefined && !response.headers)) {
      const body = await defaultBody();
      response = wantsJson
        ? { headers: { 'content-type': `application/json; type=image/${format}` }, body }
        : { headers: { 'content-type': `image/${format}`, 'finish-reason': body.finish_reason, seed: String(seed) }, body: Buffer.from(body.image, 'base64') };
    }
    send(res, response);
  };

  const server = http.createServer((req, res) => {
    res.on('error', () => {});
    route(req, res).catch((err: unknown) => send(res, stabilityError(500, 'internal_error', [`fake server error: ${String(err)}`])));
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
