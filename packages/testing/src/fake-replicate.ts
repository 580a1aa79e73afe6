import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import sharp from 'sharp';
import { closeServer, createHolds, createRequestWaiters, createScripts, listenOnLoopback } from './fake-kit';
import { generatedImage } from './fixtures';

/**
 * A real HTTP server speaking Replicate's documented HTTP API (the part the image-edit adapter
 * uses), for tests of the Replicate provider. Routes, all JSON, `Authorization: Bearer <token>`:
 *   POST /v1/models/{owner}/{name}/predictions   create a prediction of an official model
 *   POST /v1/predictions                         create a prediction of a model version (`version`)
 *   GET  /v1/predictions/{id}                    read a prediction (each read advances it, see below)
 *   POST /v1/predictions/{id}/cancel             cancel it
 *   GET  /files/{name}                           output images (no auth, like replicate.delivery)
 * Errors are RFC 7807 problem JSON `{title, detail, status}`, as Replicate's API answers them.
 *
 * File inputs are taken as data URIs (`data:image/png;base64,...`) and decoded into `inputFiles`;
 * other strings (URLs) are recorded as they are. The files API (`/v1/files`) is not implemented.
 *
 * A prediction is created `starting`; every GET moves it one step along its plan (default: straight
 * to `succeeded`), so a test can script `starting`/`processing` polls and the final outcome.
 * `Prefer: wait` on create runs the plan to its end before answering. Predictions outlive the calls
 * that created them (until `reset()`): a later client can read one another created, and an id the
 * fake never issued is a 404, as on Replicate.
 */

export type PredictionStatus = 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled' | 'aborted';

export interface ReplicateInputFile {
  /** the input field: `image`, `mask`, ... */
  field: string;
  contentType: string;
  data: Buffer;
}

export interface ReplicateRecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** lower-cased header names */
  headers: Record<string, string>;
  /** the parsed JSON body, or null */
  body: Record<string, unknown> | null;
  /** data-URI inputs of a create request, decoded */
  inputFiles: ReplicateInputFile[];
}

export interface ReplicateFakeResponse {
  status?: number;
  headers?: Record<string, string>;
  /** JSON-serialised; a Buffer or string is sent as is */
  body?: unknown;
  delayMs?: number;
}

export type ReplicateRoute = 'create' | 'get' | 'cancel';

export interface ReplicateFakeContext {
  route: ReplicateRoute;
  request: ReplicateRecordedRequest;
}

/** Returns the response to send, or undefined to handle the request normally. */
export type ReplicateFakeHandler = (ctx: ReplicateFakeContext) => ReplicateFakeResponse | undefined | Promise<ReplicateFakeResponse | undefined>;

export type PredictionOutcome =
  | { status: 'succeeded'; output?: unknown }
  | { status: 'failed'; error: string; logs?: string }
  | { status: 'canceled' }
  | { status: 'aborted' };

export interface PredictionPlan {
  /** statuses reported by successive GETs before the outcome, e.g. ['starting', 'processing'] */
  steps?: Array<'starting' | 'processing'>;
  /** default: `succeeded` with generated images (one URL string for flux-fill-pro, an array otherwise) */
  outcome?: PredictionOutcome;
  /** size of the generated output images; default: the input image's size */
  outputSize?: { width: number; height: number };
}

export interface FakePrediction {
  id: string;
  model: string;
  version: string;
  input: Record<string, unknown>;
  status: PredictionStatus;
  output: unknown;
  error: string | null;
  logs: string;
  created_at: string;
  started_at?: string;
  completed_at?: string;
  /** how many times it was canceled through the API */
  cancelRequests: number;
}

export interface ReplicateHoldOptions {
  /** only requests of this route; default every API request */
  route?: ReplicateRoute;
  /** only the routes of this prediction (get, cancel) */
  predictionId?: string;
  /** only the first `times` matching requests (later ones are answered); default every one */
  times?: number;
}

export interface FakeReplicateOptions {
  /** require `Authorization: Bearer <apiToken>` on API routes (401 problem JSON otherwise) */
  apiToken?: string;
}

export interface FakeReplicate {
  /** the API base URL, e.g. `http://127.0.0.1:1234/v1` (the SDK's `baseUrl`) */
  readonly url: string;
  readonly origin: string;
  /** every request received, in order (output downloads included) */
  readonly requests: ReplicateRecordedRequest[];
  /** every prediction created, in order: its length is the number of paid requests */
  readonly predictions: FakePrediction[];
  /**
   * Script the next `times` (default 1; `Infinity` for all) responses of API requests, of one
   * `route` or of any. A static response or a handler (which may return undefined to go on normally).
   */
  respondWith(response: ReplicateFakeResponse | ReplicateFakeHandler, opts?: { times?: number; route?: ReplicateRoute }): void;
  /** how the next `times` (default 1) created predictions progress; unplanned ones succeed at the first GET */
  planPredictions(plan: PredictionPlan, opts?: { times?: number }): void;
  /**
   * Hold API requests (after recording them) until the returned function is called: every one, or
   * what `opts` picks; e.g. `{route: 'get', times: 1}` leaves one poll unanswered, as a worker that
   * died mid-wait, while later reads of the same prediction are answered.
   */
  hold(opts?: ReplicateHoldOptions): () => void;
  /** resolves once at least `count` requests have been recorded */
  waitForRequests(count: number): Promise<void>;
  /** forget requests, predictions and scripts; release holds */
  reset(): void;
  close(): Promise<void>;
}

/** A Replicate API error: problem JSON `{title, detail, status}` (429 usually with `retry-after`). */
export function replicateProblem(status: number, title: string, detail: string, headers: Record<string, string> = {}): ReplicateFakeResponse {
  return { status, headers: { 'content-type': 'application/problem+json', ...headers }, body: { title, detail, status } };
}

const KNOWN_MODELS = new Set(['black-forest-labs/flux-fill-pro', 'black-forest-labs/flux-fill-dev']);
const OUTPUT_FORMATS: Record<string, string[]> = {
  'black-forest-labs/flux-fill-pro': ['jpg', 'png'],
  'black-forest-labs/flux-fill-dev': ['webp', 'jpg', 'png'],
};
const DEFAULT_OUTPUT_FORMAT: Record<string, string> = { 'black-forest-labs/flux-fill-pro': 'jpg', 'black-forest-labs/flux-fill-dev': 'webp' };

interface Script<T> {
  value: T;
  remaining: number;
  route?: ReplicateRoute;
}

interface State {
  prediction: FakePrediction;
  plan: PredictionPlan;
  step: number;
}

/** Replicate ids look like `tv3jnp73n1rmc0crb54b3srz94`: 26 lower-case base32 characters. */
function predictionId(): string {
  const alphabet = '0123456789abcdefghjkmnpqrstvwxyz';
  return [...randomBytes(26)].map((b) => alphabet[b % 32]).join('');
}

function decodeDataUri(value: string): { contentType: string; data: Buffer } | undefined {
  const m = /^data:([^;,]*)(;base64)?,(.*)$/s.exec(value);
  if (!m) return undefined;
  const payload = m[3] ?? '';
  return { contentType: m[1] || 'text/plain', data: m[2] ? Buffer.from(payload, 'base64') : Buffer.from(decodeURIComponent(payload)) };
}


export async function startFakeReplicate(opts: FakeReplicateOptions = {}): Promise<FakeReplicate> {
  const requests: ReplicateRecordedRequest[] = [];
  const predictions: FakePrediction[] = [];
  const states = new Map<string, State>();
  const scripts: Script<ReplicateFakeResponse | ReplicateFakeHandler>[] = [];
  const plans = createScripts<PredictionPlan>();
  const files = new Map<string, { data: Buffer; type: string }>();
  const holds = createHolds<{ route: ReplicateRoute; predictionId: string | undefined }>();
  const waiters = createRequestWaiters(() => requests.length);
  let origin = '';

  const send = (res: http.ServerResponse, r: ReplicateFakeResponse): void => {
    if (res.destroyed || res.writableEnded) return;
    const isRaw = Buffer.isBuffer(r.body) || typeof r.body === 'string';
    const payload = r.body === undefined ? '' : isRaw ? (r.body as Buffer | string) : JSON.stringify(r.body);
    res.writeHead(r.status ?? 200, { ...(isRaw || r.body === undefined ? {} : { 'content-type': 'application/json' }), ...r.headers });
    res.end(payload);
  };

  const view = (p: FakePrediction): Record<string, unknown> => ({
    id: p.id,
    model: p.model,
    version: p.version,
    input: p.input,
    logs: p.logs,
    output: p.output,
    data_removed: false,
    error: p.error,
    status: p.status,
    source: 'api',
    created_at: p.created_at,
    ...(p.started_at ? { started_at: p.started_at } : {}),
    ...(p.completed_at ? { completed_at: p.completed_at } : {}),
    ...(p.status === 'succeeded' ? { metrics: { predict_time: 1.25, total_time: 1.5, image_count: Array.isArray(p.output) ? p.output.length : 1 } } : {}),
    urls: {
      get: `${origin}/v1/predictions/${p.id}`,
      cancel: `${origin}/v1/predictions/${p.id}/cancel`,
      web: `https://replicate.com/p/${p.id}`,
    },
  });

  /** The default output: images of the input's size (or the plan's) in the asked format, served from /files. */
  const defaultOutput = async (state: State): Promise<unknown> => {
    const { prediction, plan } = state;
    const format = String(prediction.input.output_format ?? DEFAULT_OUTPUT_FORMAT[prediction.model] ?? 'png');
    let size = plan.outputSize;
    if (!size) {
      const image = typeof prediction.input.image === 'string' ? decodeDataUri(prediction.input.image) : undefined;
      const meta = image ? await sharp(image.data).metadata().catch(() => undefined) : undefined;
      size = { width: meta?.width ?? 1024, height: meta?.height ?? 1024 };
    }
    // Replicate's outputs carry no alpha
    const img = await generatedImage(size.width, size.height, format === 'jpg' ? 'jpeg' : (format as 'png' | 'webp'), { opaque: true });
    const count = prediction.model === 'black-forest-labs/flux-fill-pro' ? 1 : Number(prediction.input.num_outputs ?? 1) || 1;
    const urls = Array.from({ length: count }, () => {
      const name = `${randomUUID()}.${format}`;
      files.set(name, { data: img, type: format === 'jpg' ? 'image/jpeg' : `image/${format}` });
      return `${origin}/files/${name}`;
    });
    return prediction.model === 'black-forest-labs/flux-fill-pro' ? urls[0] : urls;
  };

  /** Moves a prediction one step along its plan (a GET does this). Terminal predictions stay. */
  const advance = async (state: State): Promise<void> => {
    const p = state.prediction;
    if (p.status === 'succeeded' || p.status === 'failed' || p.status === 'canceled' || p.status === 'aborted') return;
    const steps = state.plan.steps ?? [];
    const next = steps[state.step];
    state.step++;
    const now = new Date().toISOString();
    if (next) {
      p.status = next;
      if (next === 'processing') {
        p.started_at ??= now;
        p.logs += `step ${state.step}\n`;
      }
      return;
    }
    const outcome = state.plan.outcome ?? { status: 'succeeded' };
    p.started_at ??= now;
    p.completed_at = now;
    if (outcome.status === 'succeeded') {
      p.output = outcome.output !== undefined ? outcome.output : await defaultOutput(state);
      p.logs += 'done\n';
    } else if (outcome.status === 'failed') {
      p.error = outcome.error;
      p.logs += outcome.logs ?? '';
    }
    p.status = outcome.status;
  };

  const readBody = async (req: http.IncomingMessage): Promise<Buffer> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };

  const create = async (request: ReplicateRecordedRequest, model: string, version: string): Promise<ReplicateFakeResponse> => {
    const body = request.body;
    const input = body?.input;
    if (!input || typeof input !== 'object' || Array.isArray(input)) {
      return replicateProblem(422, 'Input validation failed', '- input: input is required');
    }
    const fields = input as Record<string, unknown>;
    const invalid: string[] = [];
    if (typeof fields.prompt !== 'string') invalid.push('- input: prompt is required');
    if (typeof fields.image !== 'string') invalid.push('- input: image is required');
    const formats = OUTPUT_FORMATS[model];
    if (fields.output_format !== undefined && formats && !formats.includes(String(fields.output_format))) {
      invalid.push(`- input.output_format: output_format must be one of the following: ${formats.map((f) => `"${f}"`).join(', ')}`);
    }
    if (invalid.length > 0) return replicateProblem(422, 'Input validation failed', `${invalid.join('\n')}\n`);

    const plan = plans.take();
    const prediction: FakePrediction = {
      id: predictionId(),
      model,
      version,
      input: fields,
      status: 'starting',
      output: null,
      error: null,
      logs: '',
      created_at: new Date().toISOString(),
      cancelRequests: 0,
    };
    const state: State = { prediction, plan: plan ?? {}, step: 0 };
    predictions.push(prediction);
    states.set(prediction.id, state);
    if ((request.headers.prefer ?? '').startsWith('wait')) {
      while (prediction.status === 'starting' || prediction.status === 'processing') await advance(state);
    }
    return { status: 201, body: view(prediction) };
  };

  const route = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', origin);
    const raw = await readBody(req);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    let body: Record<string, unknown> | null = null;
    if (raw.length > 0 && (headers['content-type'] ?? '').includes('json')) {
      try {
        body = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
      } catch {
        body = null;
      }
    }
    const request: ReplicateRecordedRequest = { method: req.method ?? 'GET', path: url.pathname, query: Object.fromEntries(url.searchParams), headers, body, inputFiles: [] };
    const input = body?.input;
    if (input && typeof input === 'object') {
      for (const [field, value] of Object.entries(input as Record<string, unknown>)) {
        const file = typeof value === 'string' ? decodeDataUri(value) : undefined;
        if (file) request.inputFiles.push({ field, ...file });
      }
    }
    requests.push(request);
    waiters.check();

    if (request.method === 'GET' && url.pathname.startsWith('/files/')) {
      const file = files.get(url.pathname.slice('/files/'.length));
      send(res, file ? { headers: { 'content-type': file.type }, body: file.data } : replicateProblem(404, 'Not found', 'The requested file could not be found.'));
      return;
    }

    const modelMatch = /^\/v1\/models\/([^/]+)\/([^/]+)\/predictions$/.exec(url.pathname);
    const predictionMatch = /^\/v1\/predictions\/([^/]+)(\/cancel)?$/.exec(url.pathname);
    let kind: ReplicateRoute | undefined;
    if (request.method === 'POST' && (modelMatch || url.pathname === '/v1/predictions')) kind = 'create';
    else if (request.method === 'GET' && predictionMatch && !predictionMatch[2]) kind = 'get';
    else if (request.method === 'POST' && predictionMatch?.[2]) kind = 'cancel';
    if (!kind) {
      send(res, replicateProblem(404, 'Not found', `The requested resource could not be found (${request.method} ${url.pathname}).`));
      return;
    }
    if (opts.apiToken !== undefined && headers.authorization !== `Bearer ${opts.apiToken}`) {
      send(res, replicateProblem(401, 'Unauthenticated', 'You did not pass a valid authentication token'));
      return;
    }

    await holds.pass({ route: kind, predictionId: predictionMatch?.[1] });

    const index = scripts.findIndex((s) => s.route === undefined || s.route === kind);
    const script = scripts[index];
    let response: ReplicateFakeResponse | undefined;
    if (script) {
      if (--script.remaining <= 0) scripts.splice(index, 1);
      response = typeof script.value === 'function' ? await script.value({ route: kind, request }) : script.value;
    }
    if (response?.delayMs) await new Promise((r) => setTimeout(r, response.delayMs));
    if (response && (response.status !== undefined || response.body !== undefined || response.headers)) {
      send(res, response);
      return;
    }

    if (kind === 'create') {
      const model = modelMatch ? `${decodeURIComponent(modelMatch[1] ?? '')}/${decodeURIComponent(modelMatch[2] ?? '')}` : 'black-forest-labs/flux-fill-pro';
      if (!modelMatch && typeof body?.version !== 'string') {
        send(res, replicateProblem(422, 'Input validation failed', '- version: version is required'));
        return;
      }
      if (!KNOWN_MODELS.has(model)) {
        send(res, replicateProblem(404, 'Not found', `The requested model ${model} could not be found.`));
        return;
      }
      send(res, await create(request, model, modelMatch ? 'hidden' : String(body?.version)));
      return;
    }
    const state = states.get(predictionMatch?.[1] ?? '');
    if (!state) {
      send(res, replicateProblem(404, 'Not found', 'The requested prediction could not be found.'));
      return;
    }
    const p = state.prediction;
    if (kind === 'cancel') {
      p.cancelRequests++;
      if (p.status === 'starting' || p.status === 'processing') {
        p.status = 'canceled';
        p.completed_at = new Date().toISOString();
      }
    } else {
      await advance(state);
    }
    send(res, { body: view(p) });
  };

  const server = http.createServer((req, res) => {
    res.on('error', () => {});
    route(req, res).catch((err: unknown) => send(res, replicateProblem(500, 'Internal Server Error', `fake server error: ${String(err)}`)));
  });
  origin = await listenOnLoopback(server);

  return {
    url: `${origin}/v1`,
    origin,
    requests,
    predictions,
    respondWith(response, o = {}) {
      scripts.push({ value: response, remaining: o.times ?? 1, ...(o.route ? { route: o.route } : {}) });
    },
    planPredictions(plan, o = {}) {
      plans.add(plan, o.times);
    },
    hold: (o = {}) =>
      holds.hold({
        match: (r) => (o.route === undefined || r.route === o.route) && (o.predictionId === undefined || r.predictionId === o.predictionId),
        ...(o.times !== undefined ? { times: o.times } : {}),
      }),
    waitForRequests: waiters.waitFor,
    reset() {
      requests.length = 0;
      predictions.length = 0;
      states.clear();
      scripts.length = 0;
      plans.clear();
      files.clear();
      holds.releaseAll();
    },
    async close() {
      holds.releaseAll();
      await closeServer(server);
    },
  };
}
