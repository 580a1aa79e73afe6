import { randomUUID } from 'node:crypto';
import http from 'node:http';
import sharp from 'sharp';
import { closeServer, createHolds, createRequestWaiters, createScripts, listenOnLoopback } from './fake-kit';
import { generatedImage } from './fixtures';

/**
 * A real HTTP server speaking fal.ai's documented queue wire format (docs.fal.ai, "Queue"), for
 * tests of the fal adapter. Every queue route needs `Authorization: Key <apiKey>`. Routes:
 *   POST /{model_id}                                  submit; the JSON body is the model input
 *   GET  /{owner}/{app}/requests/{id}/status          IN_QUEUE | IN_PROGRESS | COMPLETED
 *   GET  /{owner}/{app}/requests/{id}                 the model's output (or its error)
 *   PUT  /{owner}/{app}/requests/{id}/cancel          CANCELLATION_REQUESTED | ALREADY_COMPLETED
 *   GET  /files/{name}                                output images, like fal's CDN (no auth)
 * As on fal, the request routes use the app id (`fal-ai/flux-pro`), never the model id's sub-path
 * (`fal-ai/flux-pro/v1/fill`): a request route with the sub-path is a 404. A request that fails
 * upstream still ends COMPLETED; the result route then answers with the error's status and body.
 * The default output is a FLUX-fill-like `{images, seed, has_nsfw_concepts, prompt, timings}` with
 * `num_images` pictures of the input image's size in `output_format` (jpeg by default, as fal).
 * Queued requests outlive the calls that submitted them (until `reset()`): a later client can poll
 * and collect a request another one submitted, and a request id the fake never issued is a 404.
 */

export interface FalFakeResponse {
  status?: number;
  headers?: Record<string, string>;
  /** JSON-serialised; a Buffer or string is sent as is */
  body?: unknown;
}

export type FalQueueStatus = 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED';

export interface RecordedFalRequest {
  method: string;
  /** path without the query string */
  path: string;
  query: Record<string, string>;
  /** lower-cased header names */
  headers: Record<string, string>;
  /** the parsed JSON body, if any */
  body: unknown;
  kind: 'submit' | 'status' | 'result' | 'cancel' | 'file' | 'unknown';
  /** the queue request id the route names (status, result, cancel) or created (submit) */
  requestId?: string;
}

export interface FalSubmission {
  requestId: string;
  modelId: string;
  /** `owner/app`: what the request routes must use */
  appId: string;
  input: Record<string, unknown>;
  headers: Record<string, string>;
  /** statuses served so far */
  polls: number;
  cancelled: boolean;
}

export interface FalResultContext {
  submission: FalSubmission;
  /** the output the fake would answer with by default */
  defaultOutput(): Promise<Record<string, unknown>>;
  /** serves bytes at `/files/...` and returns the URL, for custom outputs */
  addFile(data: Buffer, contentType: string): string;
}

/** What the fake does with one submitted request. Everything is optional. */
export interface FalScript {
  /** answer the submit with this (an error, usually) and queue nothing */
  submit?: FalFakeResponse;
  /** statuses reported before COMPLETED, e.g. `['IN_QUEUE', 'IN_QUEUE', 'IN_PROGRESS']` */
  pending?: Array<'IN_QUEUE' | 'IN_PROGRESS'>;
  /** stay IN_PROGRESS until cancelled */
  neverComplete?: boolean;
  /** answers for the first status polls (e.g. a 503), before the normal statuses */
  statusResponses?: FalFakeResponse[];
  /** the result route's answer: a response, or a handler that may return undefined for the default */
  result?: FalFakeResponse | ((ctx: FalResultContext) => FalFakeResponse | undefined | Promise<FalFakeResponse | undefined>);
}

export interface FalHoldOptions {
  /** the route to hold; default `submit` */
  kind?: 'submit' | 'status' | 'result' | 'cancel';
  /** only the routes of this queued request */
  requestId?: string;
  /** only the first `times` matching requests (later ones are answered); default every one */
  times?: number;
}

export interface FakeFalOptions {
  /** the key every queue route requires (`Authorization: Key <apiKey>`); 401 otherwise */
  apiKey?: string;
}

export interface FakeFal {
  /** origin to use instead of `https://queue.fal.run`, e.g. `http://127.0.0.1:1234` */
  readonly url: string;
  /** every request received, in order (including rejected ones) */
  readonly requests: RecordedFalRequest[];
  /** every accepted submission, in order: its length is the number of paid requests */
  readonly submissions: FalSubmission[];
  /** script the next `times` (default 1; `Infinity` for all) submissions; scripts queue up in call order */
  respondWith(script: FalScript, opts?: { times?: number }): void;
  /**
   * Hold requests (after recording them) until the returned function is called: every submit, or
   * what `opts` picks; e.g. `{kind: 'status', times: 1}` leaves one poll unanswered, as a worker
   * that died mid-wait, while later polls of the same request are answered.
   */
  hold(opts?: FalHoldOptions): () => void;
  /** resolves once at least `count` requests have been recorded */
  waitForRequests(count: number): Promise<void>;
  /** forget requests, submissions, files and scripts; release holds */
  reset(): void;
  close(): Promise<void>;
}

/** A fal error: `{detail: "..."}`, or with `type` the model-error form `{detail: [{loc, msg, type, url}]}`. */
export function falError(status: number, detail: string, opts: { type?: string; loc?: Array<string | number>; headers?: Record<string, string> } = {}): FalFakeResponse {
  const body = opts.type
    ? { detail: [{ loc: opts.loc ?? ['body'], msg: detail, type: opts.type, url: `https://docs.fal.ai/errors/#${opts.type}` }] }
    : { detail };
  return { status, body, ...(opts.headers ? { headers: opts.headers } : {}) };
}

interface Job {
  submission: FalSubmission;
  script: FalScript;
  pending: Array<'IN_QUEUE' | 'IN_PROGRESS'>;
  statusResponses: FalFakeResponse[];
}


/** The size of an image given as a data URI; fal would download a URL, the fake assumes 1024². */
async function inputSize(imageUrl: unknown): Promise<{ width: number; height: number }> {
  const m = typeof imageUrl === 'string' ? /^data:[^;,]+;base64,(.*)$/s.exec(imageUrl) : null;
  if (m?.[1]) {
    const meta = await sharp(Buffer.from(m[1], 'base64')).metadata();
    if (meta.width && meta.height) return { width: meta.width, height: meta.height };
  }
  return { width: 1024, height: 1024 };
}

export async function startFakeFal(opts: FakeFalOptions = {}): Promise<FakeFal> {
  const requests: RecordedFalRequest[] = [];
  const submissions: FalSubmission[] = [];
  const jobs = new Map<string, Job>();
  const scripts = createScripts<FalScript>();
  const files = new Map<string, { data: Buffer; type: string }>();
  const holds = createHolds<RecordedFalRequest>();
  const waiters = createRequestWaiters(() => requests.length);
  let origin = '';

  const send = (res: http.ServerResponse, r: FalFakeResponse): void => {
    if (res.destroyed || res.writableEnded) return;
    const isRaw = Buffer.isBuffer(r.body) || typeof r.body === 'string';
    const payload = r.body === undefined ? '' : isRaw ? (r.body as Buffer | string) : JSON.stringify(r.body);
    res.writeHead(r.status ?? 200, { ...(isRaw || r.body === undefined ? {} : { 'content-type': 'application/json' }), ...r.headers });
    res.end(payload);
  };

  const addFile = (data: Buffer, contentType: string): string => {
    const ext = contentType.split('/')[1] ?? 'bin';
    const name = `${randomUUID()}.${ext}`;
    files.set(name, { data, type: contentType });
    return `${origin}/files/${name}`;
  };

  const urls = (appId: string, requestId: string) => {
    const base = `${origin}/${appId}/requests/${requestId}`;
    return { request_id: requestId, response_url: base, status_url: `${base}/status`, cancel_url: `${base}/cancel` };
  };

  const defaultOutput = async (submission: FalSubmission): Promise<Record<string, unknown>> => {
    const input = submission.input;
    const count = typeof input.num_images === 'number' ? input.num_images : 1;
    const format = input.output_format === 'png' ? 'png' : 'jpeg';
    const { width, height } = await inputSize(input.image_url);
    const img = await generatedImage(width, height, format);
    const images = Array.from({ length: count }, () => ({ url: addFile(img, `image/${format}`), width, height, content_type: `image/${format}` }));
    return {
      images,
      timings: { inference: 1.25 },
      seed: typeof input.seed === 'number' ? input.seed : 42,
      has_nsfw_concepts: images.map(() => false),
      prompt: input.prompt,
    };
  };

  const route = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', origin);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    const method = req.method ?? 'GET';
    const requestRoute = /^\/([^/]+\/[^/]+)\/requests\/([^/]+)(\/status|\/cancel)?$/.exec(url.pathname);
    const recorded: RecordedFalRequest = {
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers,
      body: raw ? safeJson(raw) : undefined,
      kind: 'unknown',
    };
    if (method === 'GET' && url.pathname.startsWith('/files/')) recorded.kind = 'file';
    else if (requestRoute) {
      recorded.kind = requestRoute[3] === '/status' ? 'status' : requestRoute[3] === '/cancel' ? 'cancel' : 'result';
      recorded.requestId = requestRoute[2];
    } else if (method === 'POST' && !url.pathname.includes('/requests/')) recorded.kind = 'submit';
    requests.push(recorded);
    waiters.check();

    if (recorded.kind === 'file') {
      const file = files.get(url.pathname.slice('/files/'.length));
      send(res, file ? { headers: { 'content-type': file.type }, body: file.data } : { status: 404, body: { detail: 'File not found' } });
      return;
    }
    if (recorded.kind === 'unknown') {
      send(res, { status: 404, body: { detail: `Not Found (${method} ${url.pathname})` } });
      return;
    }
    if (opts.apiKey !== undefined && headers.authorization !== `Key ${opts.apiKey}`) {
      send(res, { status: 401, body: { detail: 'No user found for Key ID and Secret' } });
      return;
    }

    await holds.pass(recorded);
    if (recorded.kind === 'submit') {
      const script = scripts.take() ?? {};
      if (script.submit) {
        send(res, script.submit);
        return;
      }
      const modelId = url.pathname.slice(1);
      const [owner, app] = modelId.split('/');
      const requestId = randomUUID();
      recorded.requestId = requestId;
      const input = recorded.body !== null && typeof recorded.body === 'object' ? (recorded.body as Record<string, unknown>) : {};
      const submission: FalSubmission = { requestId, modelId, appId: `${owner}/${app}`, input, headers, polls: 0, cancelled: false };
      submissions.push(submission);
      jobs.set(requestId, { submission, script, pending: [...(script.pending ?? [])], statusResponses: [...(script.statusResponses ?? [])] });
      send(res, { body: { status: 'IN_QUEUE', queue_position: 0, ...urls(submission.appId, requestId) } });
      return;
    }

    const job = jobs.get(recorded.requestId ?? '');
    if (!job || job.submission.appId !== requestRoute?.[1]) {
      send(res, { status: 404, body: { detail: `Request ${recorded.requestId} not found` } });
      return;
    }
    const sub = job.submission;
    const completed = (): boolean => job.pending.length === 0 && !(job.script.neverComplete && !sub.cancelled);

    if (recorded.kind === 'status') {
      const scripted = job.statusResponses.shift();
      if (scripted) {
        send(res, scripted);
        return;
      }
      sub.polls++;
      const status: FalQueueStatus = completed() ? 'COMPLETED' : (job.pending.shift() ?? 'IN_PROGRESS');
      const body: Record<string, unknown> = { status, ...urls(sub.appId, sub.requestId) };
      if (status === 'IN_QUEUE') body.queue_position = job.pending.filter((s) => s === 'IN_QUEUE').length;
      else body.logs = url.searchParams.get('logs') === '1' ? [] : null;
      if (status === 'COMPLETED') body.metrics = { inference_time: 1.25 };
      send(res, { body });
      return;
    }

    if (recorded.kind === 'cancel') {
      if (completed()) {
        send(res, { status: 400, body: { status: 'ALREADY_COMPLETED' } });
        return;
      }
      sub.cancelled = true;
      job.pending = [];
      send(res, { status: 202, body: { status: 'CANCELLATION_REQUESTED' } });
      return;
    }

    // result
    if (!completed()) {
      send(res, { status: 400, body: { detail: 'Request is still in progress' } });
      return;
    }
    if (sub.cancelled) {
      send(res, { status: 400, body: { detail: 'Request was cancelled', error_type: 'client_cancelled' } });
      return;
    }
    let response: FalFakeResponse | undefined;
    const result = job.script.result;
    if (typeof result === 'function') {
      response = await result({ submission: sub, defaultOutput: () => defaultOutput(sub), addFile });
    } else response = result;
    send(res, response ?? { headers: { 'x-fal-request-id': sub.requestId }, body: await defaultOutput(sub) });
  };

  const server = http.createServer((req, res) => {
    res.on('error', () => {});
    route(req, res).catch((err: unknown) => send(res, { status: 500, body: { detail: `fake server error: ${String(err)}` } }));
  });
  origin = await listenOnLoopback(server);

  return {
    url: origin,
    requests,
    submissions,
    respondWith(script, o = {}) {
      scripts.add(script, o.times);
    },
    hold: (o = {}) =>
      holds.hold({
        match: (r) => r.kind === (o.kind ?? 'submit') && (o.requestId === undefined || r.requestId === o.requestId),
        ...(o.times !== undefined ? { times: o.times } : {}),
      }),
    waitForRequests: waiters.waitFor,
    reset() {
      requests.length = 0;
      submissions.length = 0;
      jobs.clear();
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

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
