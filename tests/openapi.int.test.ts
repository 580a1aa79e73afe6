import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import Ajv2020, { type ValidateFunction } from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { createApp } from '@image-edits/api';
import { createApiKey } from '@image-edits/db';
import { makePng, startTestService, type TestService } from '@image-edits/testing';
import { type RunningWorker, startWorker } from '@image-edits/worker';

/**
 * GET /openapi.json against the running service: the document is valid OpenAPI 3.1, it lists
 * exactly the routes Express mounts, and the service's real answers (successes and errors of every
 * operation, JSON bodies and the data of each Server-Sent Event) validate against its schemas.
 * The first part runs without a worker, so jobs and batches stay queued (cancel, queue positions,
 * conflicts); then a worker runs the rest.
 */

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies and documents, checked by schemas
type Json = any;
type Method = 'get' | 'post' | 'delete';

let svc: TestService;
let worker: RunningWorker | undefined;
let doc: Json;
let ajv: Ajv2020;
let png: Buffer;
let receiver: http.Server;
let receiverUrl: string;
const validators = new Map<string, ValidateFunction>();
/** `GET /v1/jobs/{id} 200`: every answer validated against the document */
const answered = new Set<string>();

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200).end('ok'));
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  svc = await startTestService({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_DELAYS_MS: '0,100' }, { worker: false });
  png = await makePng(64, 64, { hole: { x: 16, y: 16, width: 16, height: 16 } });
  const res = await fetch(`${svc.url}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  doc = await res.json();
  ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addFormat('binary', true);
  ajv.addSchema(doc, 'openapi.json');
});

afterAll(async () => {
  await worker?.close();
  await svc?.stop();
  await new Promise((resolve) => receiver?.close(resolve));
});

const pointer = (...parts: string[]) => parts.map((p) => p.replaceAll('~', '~0').replaceAll('/', '~1')).join('/');

function validator(ref: string): ValidateFunction {
  let v = validators.get(ref);
  if (!v) {
    v = ajv.getSchema(`openapi.json#/${ref}`);
    if (!v) throw new Error(`no schema at ${ref}`);
    validators.set(ref, v);
  }
  return v;
}

function expectValid(ref: string, value: unknown, what: string): void {
  const v = validator(ref);
  if (!v(value)) throw new Error(`${what} does not match the document (${ref}):\n${JSON.stringify(v.errors, null, 1).slice(0, 3000)}\n${JSON.stringify(value).slice(0, 1500)}`);
}

/** Server-Sent Events as sent: name (default `message`) and data of each. */
function parseEvents(text: string): { event: string; data: string }[] {
  const out: { event: string; data: string }[] = [];
  for (const block of text.split('\n\n')) {
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
    }
    if (data.length) out.push({ event, data: data.join('\n') });
  }
  return out;
}

interface CallOptions {
  params?: Record<string, string>;
  query?: string;
  headers?: Record<string, string>;
  json?: unknown;
  form?: FormData;
  body?: string;
  /** null: no Authorization header */
  key?: string | null;
}

/**
 * One request to the service; its answer is checked against the document's operation for
 * `template`: the status is documented, so is the content type, and the body (JSON, or each
 * event's data) validates against the schema.
 */
async function call(method: Method, template: string, opts: CallOptions = {}): Promise<{ status: number; headers: Headers; body: Json; text: string }> {
  const path = template.replace(/\{(\w+)\}/g, (_m, name: string) => {
    const v = opts.params?.[name];
    if (v === undefined) throw new Error(`no value for {${name}}`);
    return name === 'id' && template.startsWith('/v1/models/') ? v : encodeURIComponent(v);
  });
  const headers: Record<string, string> = { ...opts.headers };
  const key = opts.key === undefined ? svc.apiKey : opts.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  let body: BodyInit | undefined = opts.form ?? opts.body;
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(`${svc.url}${path}${opts.query ? `?${opts.query}` : ''}`, { method: method.toUpperCase(), headers, ...(body === undefined ? {} : { body }) });
  const text = await res.text();
  const what = `${method.toUpperCase()} ${path} → ${res.status}`;
  const op = doc.paths[template]?.[method];
  if (!op) throw new Error(`${method.toUpperCase()} ${template} is not in the document`);
  const response = op.responses[String(res.status)];
  if (!response) throw new Error(`${what}: status ${res.status} is not documented for ${template} (${text.slice(0, 300)})`);
  const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
  if (res.status !== 204) {
    if (!response.content?.[type]) throw new Error(`${what}: content type '${type}' is not documented (${Object.keys(response.content ?? {}).join(', ')})`);
    const media = pointer('paths', template, method, 'responses', String(res.status), 'content', type);
    if (type === 'application/json') expectValid(`${media}/schema`, JSON.parse(text), what);
    if (type === 'text/event-stream') {
      const events = parseEvents(text);
      expect(events.length).toBeGreaterThan(0);
      for (const e of events) {
        if (!response.content[type]['x-events']?.[e.event]) throw new Error(`${what}: event '${e.event}' is not documented`);
        expectValid(`${media}/x-events/${pointer(e.event)}`, JSON.parse(e.data), `${what} event ${e.event}`);
      }
    }
  }
  answered.add(`${method.toUpperCase()} ${template} ${res.status}`);
  let parsed: Json = text;
  if (type === 'application/json') parsed = JSON.parse(text);
  return { status: res.status, headers: res.headers, body: parsed, text };
}

const form = (fields: Record<string, string>, files: [string, Buffer, string, string?][] = [['image', png, 'in.png']]) => {
  const f = new FormData();
  for (const [k, v] of Object.entries(fields)) f.append(k, v);
  for (const [field, data, name, type] of files) f.append(field, new Blob([new Uint8Array(data)], { type: type ?? 'image/png' }), name);
  return f;
};
const edit = (fields: Record<string, string> = {}) => form({ model: 'local-inpaint', prompt: 'fill', ...fields });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, read: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  for (const end = Date.now() + timeoutMs; ; await sleep(100)) {
    const v = await read();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
}

const operations = () =>
  Object.entries(doc.paths as Record<string, Record<string, Json>>).flatMap(([path, item]) => Object.keys(item).map((method) => ({ method: method as Method, path })));

describe('GET /openapi.json', () => {
  it('is a valid OpenAPI 3.1 document, served without a key', async () => {
    expect(doc.openapi).toBe('3.1.0');
    // @seriousme/openapi-schema-validator is an ES module: it runs in a node of its own
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(__dirname, 'clients/validate-openapi.mjs'), `${svc.url}/openapi.json`], { cwd: path.join(__dirname, '..') });
    const result = JSON.parse(stdout);
    expect(result.errors ?? []).toEqual([]);
    expect(result).toEqual(expect.objectContaining({ valid: true, version: '3.1' }));
    // the contract's names (design.md §3) and the shapes clients rely on
    for (const name of ['Job', 'ImagesResponse', 'Error', 'Batch', 'File', 'Model', 'WebhookEndpoint', 'WebhookDelivery', 'UsageImagesPage', 'CostsPage']) expect(doc.components.schemas[name]).toBeDefined();
    expect(doc.components.schemas.Job.properties.status.enum).toEqual(['queued', 'in_progress', 'succeeded', 'failed', 'canceled', 'expired']);
    expect(doc.components.schemas.Error.properties.error.required).toEqual(['message', 'type', 'param', 'code']);
    const editOp = doc.paths['/v1/images/edits'].post;
    expect(Object.keys(editOp.requestBody.content).sort()).toEqual(['application/json', 'multipart/form-data']);
    expect(editOp.parameters.map((p: Json) => p.name)).toEqual(expect.arrayContaining(['Prefer', 'Idempotency-Key', 'Cancel-After']));
    expect(Object.keys(editOp.responses)).toEqual(expect.arrayContaining(['200', '202', '400', '401', '404', '409', '410', '413', '415', '422', '429', '503', '504']));
    expect(editOp.responses['200'].content['text/event-stream']['x-events']).toBeDefined();
    expect(doc.paths['/v1/jobs/{id}/events'].get.parameters.map((p: Json) => p.name)).toContain('Last-Event-ID');
    expect(doc.paths['/v1/jobs'].get.security).toBeUndefined();
    expect(doc.paths['/openapi.json'].get.security).toEqual([]);
    expect(doc.components.securitySchemes.apiKey).toEqual(expect.objectContaining({ type: 'http', scheme: 'bearer' }));
    // generated from the request schemas the routes check with
    expect(doc.paths['/v1/jobs'].get.parameters.find((p: Json) => p.name === 'limit').schema).toEqual({ type: 'integer', minimum: 1, maximum: 100 });
  });

  it('lists every route the app mounts, and nothing else', () => {
    const app = createApp(svc.api.deps) as unknown as { router: { stack: Json[] } };
    const mounted = new Set<string>();
    const walk = (stack: Json[]) => {
      for (const layer of stack) {
        if (layer.route) {
          for (const method of Object.keys(layer.route.methods)) {
            if (method === '_all') continue;
            mounted.add(`${method} ${String(layer.route.path).replace(/[:*](\w+)/g, '{$1}')}`);
          }
        } else if (Array.isArray(layer.handle?.stack)) walk(layer.handle.stack);
      }
    };
    walk(app.router.stack);
    const documented = new Set(operations().map((o) => `${o.method} ${o.path}`));
    expect([...mounted].sort()).toEqual([...documented].sort());
  });
});

describe('real answers validate against the document', () => {
  const ids: Record<string, string> = {};

  it('probes, the console and the models', async () => {
    expect((await call('get', '/healthz', { key: null })).status).toBe(200);
    expect((await call('get', '/readyz', { key: null })).status).toBe(200);
    expect((await call('get', '/metrics', { key: null })).status).toBe(200);
    expect((await call('get', '/openapi.json', { key: null })).status).toBe(200);
    for (const op of operations().filter((o) => !o.path.startsWith('/v1/') && !['/healthz', '/readyz', '/metrics', '/openapi.json'].includes(o.path))) {
      // 200 when the console is built, 404 (an HTML page saying how) when not
      await call(op.method, op.path, { key: null, params: { id: 'job_1' } });
    }
    const models = await call('get', '/v1/models');
    expect(models.body.data.map((m: Json) => m.id)).toContain('local-inpaint');
    expect((await call('get', '/v1/models/{id}', { params: { id: 'local-inpaint' } })).status).toBe(200);
    expect((await call('get', '/v1/models/{id}', { params: { id: 'local/local-inpaint' } })).status).toBe(200);
    expect((await call('get', '/v1/models/{id}', { params: { id: 'no-such-model' } })).status).toBe(404);
  });

  it('every /v1 operation answers 401 without a key, in the documented shape', async () => {
    for (const op of operations().filter((o) => o.path.startsWith('/v1/'))) {
      const res = await call(op.method, op.path, { key: null, params: { id: 'x', delivery_id: 'y' } });
      expect(res.status).toBe(401);
    }
  });

  it('while nothing runs: queued jobs, their events, cancel, conflicts, a validating batch', async () => {
    const queued = await call('post', '/v1/images/edits', { form: edit({ 'metadata[order]': '42' }), headers: { prefer: 'respond-async' } });
    expect(queued.status).toBe(202);
    ids.queued = queued.body.id;
    const other = await call('post', '/v1/images/edits', { form: edit(), headers: { prefer: 'respond-async', 'idempotency-key': 'k-1' } });
    expect(other.status).toBe(202);
    // the same Idempotency-Key with other parameters
    expect((await call('post', '/v1/images/edits', { form: edit({ prompt: 'other' }), headers: { prefer: 'respond-async', 'idempotency-key': 'k-1' } })).status).toBe(422);
    // a replay
    expect((await call('post', '/v1/images/edits', { form: edit(), headers: { prefer: 'respond-async', 'idempotency-key': 'k-1' } })).status).toBe(202);

    expect((await call('get', '/v1/jobs/{id}', { params: { id: ids.queued } })).body.status).toBe('queued');
    // the events of a queued job: status with its place in line, then the stream goes on; read its first event
    const ctrl = new AbortController();
    const events = await fetch(`${svc.url}/v1/jobs/${ids.queued}/events`, { headers: { authorization: `Bearer ${svc.apiKey}` }, signal: ctrl.signal });
    expect(events.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = events.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    ctrl.abort();
    const [status] = parseEvents(first);
    expectValid(`${pointer('paths', '/v1/jobs/{id}/events', 'get', 'responses', '200', 'content', 'text/event-stream')}/x-events/status`, JSON.parse(status!.data), 'a queued status event');

    expect((await call('delete', '/v1/jobs/{id}', { params: { id: ids.queued } })).status).toBe(409);
    const canceled = await call('post', '/v1/jobs/{id}/cancel', { params: { id: other.body.id } });
    expect(canceled.body.status).toBe('canceled');
    expect((await call('post', '/v1/jobs/{id}/cancel', { params: { id: other.body.id } })).status).toBe(409);
    expect((await call('post', '/v1/jobs/{id}/cancel', { params: { id: 'job_nope' } })).status).toBe(404);
    ids.canceled = other.body.id;

    // a batch stays validating: cancel it
    const input = [0, 1]
      .map((i) => JSON.stringify({ custom_id: `c${i}`, method: 'POST', url: '/v1/images/edits', body: { model: 'local-inpaint', prompt: 'x', images: [{ image_url: `data:image/png;base64,${png.toString('base64')}` }] } }))
      .join('\n');
    const file = await call('post', '/v1/files', { form: form({ purpose: 'batch' }, [['file', Buffer.from(input), 'in.jsonl', 'application/jsonl']]) });
    expect(file.status).toBe(200);
    ids.batchFile = file.body.id;
    const batch = await call('post', '/v1/batches', { json: { input_file_id: ids.batchFile, endpoint: '/v1/images/edits', completion_window: '24h' } });
    expect(batch.status).toBe(200);
    expect((await call('post', '/v1/batches/{id}/cancel', { params: { id: batch.body.id } })).body.status).toBe('cancelling');
  });

  it('edits: sync, async, Prefer: wait, JSON, streamed, and their errors', async () => {
    worker = await startWorker(svc.config);
    // a key endpoint for webhook deliveries
    const endpoint = await call('post', '/v1/webhook_endpoints', { json: { url: receiverUrl, events: ['job.succeeded'], description: 'test' } });
    expect(endpoint.status).toBe(201);
    ids.endpoint = endpoint.body.id;

    const sync = await call('post', '/v1/images/edits', { form: edit({ n: '2' }) });
    expect(sync.status).toBe(200);
    expect(sync.body.data).toHaveLength(2);
    const urls = await call('post', '/v1/images/edits', { form: edit({ response_format: 'url' }) });
    expect(urls.body.data[0].url).toBeDefined();
    const waited = await call('post', '/v1/images/edits', { form: edit(), headers: { prefer: 'wait=30' } });
    expect(waited.status).toBe(200);
    expect(waited.body.status).toBe('succeeded');
    ids.done = waited.body.id;
    const json = await call('post', '/v1/images/edits', { json: { model: 'local-inpaint', prompt: 'fill', images: [{ image_url: `data:image/png;base64,${png.toString('base64')}` }], metadata: { a: 'b' } } });
    expect(json.status).toBe(200);
    const streamed = await call('post', '/v1/images/edits', { form: edit({ stream: 'true' }) });
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(parseEvents(streamed.text).map((e) => e.event)).toContain('image_edit.completed');

    expect((await call('post', '/v1/images/edits', { form: edit({ colour: 'red' }) })).body.error.code).toBe('unknown_parameter');
    expect((await call('post', '/v1/images/edits', { form: edit({ n: '99' }) })).status).toBe(400);
    expect((await call('post', '/v1/images/edits', { form: edit({ model: 'no-such-model' }) })).status).toBe(404);
    expect((await call('post', '/v1/images/edits', { body: 'hello', headers: { 'content-type': 'text/plain' } })).status).toBe(415);
    expect((await call('post', '/v1/images/edits', { json: { model: 'local-inpaint', prompt: 'x', images: [] } })).body.error.param).toBe('images');
    expect((await call('post', '/v1/images/edits', { form: edit(), headers: { prefer: 'wait=soon' } })).body.error.param).toBe('Prefer');
    const limited = (await createApiKey(svc.db, 'one-a-minute', { requestsPerMinute: 1 })).key;
    expect((await call('post', '/v1/images/edits', { form: edit(), headers: { prefer: 'respond-async' }, key: limited })).status).toBe(202);
    const over = await call('post', '/v1/images/edits', { form: edit(), headers: { prefer: 'respond-async' }, key: limited });
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe('rate_limit_exceeded');
  });

  it('jobs: read, long-poll, list, events, deliveries, delete', async () => {
    const queued = await call('get', '/v1/jobs/{id}', { params: { id: ids.queued }, query: 'wait=30' });
    expect(queued.body.status).toBe('succeeded');
    expect((await call('get', '/v1/jobs/{id}', { params: { id: 'job_nope' } })).status).toBe(404);
    expect((await call('get', '/v1/jobs/{id}', { params: { id: ids.queued }, query: 'wait=forever' })).body.error.param).toBe('wait');
    const list = await call('get', '/v1/jobs', { query: 'limit=3' });
    expect(list.body.data.length).toBe(3);
    await call('get', '/v1/jobs', { query: 'status=succeeded&created_after=1' });
    expect((await call('get', '/v1/jobs', { query: 'limit=0' })).body.error.param).toBe('limit');
    expect((await call('get', '/v1/jobs', { query: 'status=done' })).body.error.param).toBe('status');

    const events = await call('get', '/v1/jobs/{id}/events', { params: { id: ids.done } });
    expect(parseEvents(events.text).map((e) => e.event)).toEqual(expect.arrayContaining(['status', 'job']));
    await call('get', '/v1/jobs/{id}/events', { params: { id: ids.canceled } });
    expect((await call('get', '/v1/jobs/{id}/events', { params: { id: ids.done }, headers: { 'last-event-id': 'nope' } })).body.error.param).toBe('Last-Event-ID');
    expect((await call('get', '/v1/jobs/{id}/events', { params: { id: 'job_nope' } })).status).toBe(404);

    // the key's endpoint got job.succeeded of the jobs that ran: a delivery, sent again
    const deliveries = await until('a finished delivery', async () => {
      const d = await call('get', '/v1/jobs/{id}/webhook_deliveries', { params: { id: ids.done } });
      return d.body.data.find((x: Json) => x.status !== 'pending') ? d.body.data : undefined;
    });
    const delivery = deliveries[0];
    expect((await call('post', '/v1/jobs/{id}/webhook_deliveries/{delivery_id}/retry', { params: { id: ids.done, delivery_id: delivery.id } })).status).toBe(202);
    const pending = await call('post', '/v1/jobs/{id}/webhook_deliveries/{delivery_id}/retry', { params: { id: ids.done, delivery_id: delivery.id } });
    expect([202, 409]).toContain(pending.status);
    expect((await call('post', '/v1/jobs/{id}/webhook_deliveries/{delivery_id}/retry', { params: { id: ids.done, delivery_id: 'whd_nope' } })).status).toBe(404);
    expect((await call('get', '/v1/jobs/{id}/webhook_deliveries', { params: { id: 'job_nope' } })).status).toBe(404);

    expect((await call('delete', '/v1/jobs/{id}', { params: { id: ids.queued } })).body.deleted).toBe(true);
    expect((await call('delete', '/v1/jobs/{id}', { params: { id: ids.queued } })).status).toBe(404);
    // its tombstone stays in the list
    await call('get', '/v1/jobs', {});
  });

  it('files', async () => {
    const image = await call('post', '/v1/files', { form: form({ purpose: 'vision', 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '3600' }, [['file', png, 'in.png']]) });
    expect(image.status).toBe(200);
    expect(image.body.expires_at).not.toBeNull();
    expect((await call('post', '/v1/files', { form: form({ purpose: 'pictures' }, [['file', png, 'in.png']]) })).body.error.param).toBe('purpose');
    expect((await call('post', '/v1/files', { form: form({ purpose: 'vision', 'expires_after[anchor]': 'now', 'expires_after[seconds]': '3600' }, [['file', png, 'in.png']]) })).body.error.param).toBe(
      'expires_after.anchor',
    );
    expect((await call('post', '/v1/files', { form: form({ purpose: 'vision' }, []) })).body.error.code).toBe('missing_required_parameter');
    expect((await call('post', '/v1/files', { json: { purpose: 'vision' } })).status).toBeGreaterThanOrEqual(400);
    await call('post', '/v1/files', { form: form({ purpose: 'vision' }, [['file', png, 'a.png']]), headers: { 'idempotency-key': 'f-1' } });
    expect((await call('post', '/v1/files', { form: form({ purpose: 'user_data' }, [['file', png, 'a.png']]), headers: { 'idempotency-key': 'f-1' } })).status).toBe(422);

    const list = await call('get', '/v1/files', { query: 'limit=10&order=asc' });
    expect(list.body.data.length).toBeGreaterThan(0);
    await call('get', '/v1/files', { query: 'purpose=batch' });
    expect((await call('get', '/v1/files', { query: 'order=sideways' })).body.error.param).toBe('order');
    expect((await call('get', '/v1/files/{id}', { params: { id: image.body.id } })).body.id).toBe(image.body.id);
    expect((await call('get', '/v1/files/{id}', { params: { id: 'file-nope' } })).status).toBe(404);
    expect((await call('get', '/v1/files/{id}', { params: { id: 'not-a-file-id' } })).status).toBe(404);
    const content = await call('get', '/v1/files/{id}/content', { params: { id: image.body.id } });
    expect(content.headers.get('content-type')).toBe('image/png');
    await call('get', '/v1/files/{id}/content', { params: { id: ids.batchFile } });
    expect((await call('get', '/v1/files/{id}/content', { params: { id: 'file-nope' } })).status).toBe(404);
    expect((await call('delete', '/v1/files/{id}', { params: { id: image.body.id } })).body.deleted).toBe(true);
    expect((await call('delete', '/v1/files/{id}', { params: { id: image.body.id } })).status).toBe(404);
  });

  it('batches', async () => {
    const created = await call('post', '/v1/batches', { json: { input_file_id: ids.batchFile, endpoint: '/v1/images/edits', completion_window: '24h', metadata: { run: 'doc' } } });
    expect(created.status).toBe(200);
    const done = await until('a completed batch', async () => {
      const b = await call('get', '/v1/batches/{id}', { params: { id: created.body.id } });
      return ['completed', 'failed'].includes(b.body.status) ? b.body : undefined;
    });
    expect(done.status).toBe('completed');
    await call('get', '/v1/files/{id}/content', { params: { id: done.output_file_id } });
    expect((await call('post', '/v1/batches/{id}/cancel', { params: { id: created.body.id } })).status).toBe(409);
    expect((await call('post', '/v1/batches/{id}/cancel', { params: { id: 'batch_nope' } })).status).toBe(404);
    expect((await call('get', '/v1/batches/{id}', { params: { id: 'nope' } })).status).toBe(404);
    expect((await call('post', '/v1/batches', { json: { endpoint: '/v1/images/edits', completion_window: '24h' } })).body.error.param).toBe('input_file_id');
    expect((await call('post', '/v1/batches', { json: { input_file_id: 'file-nope', endpoint: '/v1/images/edits', completion_window: '24h' } })).status).toBe(404);
    expect((await call('post', '/v1/batches', { json: { input_file_id: ids.batchFile, endpoint: '/v1/images/generations', completion_window: '24h' } })).body.error.param).toBe('endpoint');
    const list = await call('get', '/v1/batches', { query: 'limit=1' });
    expect(list.body.has_more).toBe(true);
    expect((await call('get', '/v1/batches', { query: `after=${list.body.last_id}` })).body.data.length).toBeGreaterThan(0);
    expect((await call('get', '/v1/batches', { query: 'after=job_1' })).body.error.param).toBe('after');
  });

  it('webhook endpoints and the key secret', async () => {
    expect((await call('get', '/v1/webhook_endpoints')).body.data.length).toBe(1);
    expect((await call('get', '/v1/webhook_endpoints/{id}', { params: { id: ids.endpoint } })).body.id).toBe(ids.endpoint);
    expect((await call('get', '/v1/webhook_endpoints/{id}', { params: { id: 'we_nope' } })).status).toBe(404);
    expect((await call('post', '/v1/webhook_endpoints', { json: { url: receiverUrl, colour: 'red' } })).body.error).toEqual(expect.objectContaining({ param: 'colour', code: 'unknown_parameter' }));
    expect((await call('post', '/v1/webhook_endpoints', { json: { events: ['job.succeeded'] } })).body.error.code).toBe('missing_required_parameter');
    expect((await call('post', '/v1/webhook_endpoints', { json: { url: receiverUrl, events: ['job.done'] } })).body.error.param).toBe('events');
    expect((await call('post', '/v1/webhook_endpoints', { body: '[1]', headers: { 'content-type': 'application/json' } })).body.error.code).toBe('invalid_json');
    const plain = await call('post', '/v1/webhook_endpoints', { json: { url: receiverUrl } });
    expect(plain.status).toBe(201);
    expect((await call('delete', '/v1/webhook_endpoints/{id}', { params: { id: plain.body.id } })).body.deleted).toBe(true);
    expect((await call('delete', '/v1/webhook_endpoints/{id}', { params: { id: plain.body.id } })).status).toBe(404);
    const secret = await call('get', '/v1/webhooks/secret');
    expect((await call('post', '/v1/webhooks/secret/rotate')).body.secret).not.toBe(secret.body.secret);
  });

  it('usage and costs', async () => {
    const start = Math.floor(Date.now() / 1000) - 3600;
    const usage = await call('get', '/v1/organization/usage/images', { query: `start_time=${start}&bucket_width=1h&group_by=model&group_by[]=source` });
    expect(usage.body.data.flatMap((b: Json) => b.results).length).toBeGreaterThan(0);
    await call('get', '/v1/organization/usage/images', { query: `start_time=${start}&bucket_width=1m&limit=2&sources=image.edit,batch` });
    const costs = await call('get', '/v1/organization/costs', { query: `start_time=${start}&group_by=line_item,api_key_id` });
    expect(costs.body.object).toBe('page');
    expect((await call('get', '/v1/organization/usage/images', {})).body.error).toEqual(expect.objectContaining({ param: 'start_time', code: 'missing_required_parameter' }));
    expect((await call('get', '/v1/organization/usage/images', { query: `start_time=${start}&colour=red` })).body.error.code).toBe('unknown_parameter');
    expect((await call('get', '/v1/organization/costs', { query: `start_time=${start}&group_by=model` })).body.error.param).toBe('group_by');
    expect((await call('get', '/v1/organization/costs', { query: `start_time=${start}&limit=999` })).body.error.param).toBe('limit');
    expect((await call('get', '/v1/organization/costs', { query: `start_time=${start}&page=page_1` })).body.error.param).toBe('page');
    expect((await call('get', '/v1/organization/usage/images', { query: `start_time=${start}&api_key_ids=key_other` })).status).toBe(403);
    expect((await call('get', '/v1/organization/costs', { query: `start_time=${start}&api_key_ids=key_other` })).status).toBe(403);
  });

  it('covered every operation: a success of each, and an error of each /v1 one', () => {
    const missing: string[] = [];
    for (const { method, path } of operations()) {
      const seen = [...answered].filter((a) => a.startsWith(`${method.toUpperCase()} ${path} `)).map((a) => Number(a.split(' ')[2]));
      const console = !path.startsWith('/v1/') && !['/healthz', '/readyz', '/metrics', '/openapi.json'].includes(path);
      if (!console && !seen.some((s) => s < 300)) missing.push(`${method} ${path}: no success`);
      if (path.startsWith('/v1/') && !seen.some((s) => s >= 400)) missing.push(`${method} ${path}: no error`);
      if (seen.length === 0) missing.push(`${method} ${path}: never called`);
    }
    expect(missing).toEqual([]);
  });
});
