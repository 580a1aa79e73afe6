import { readdirSync } from 'node:fs';
import net from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type RunningApi, startApi } from '@image-edits/api';
import { processMemoryBudget } from '@image-edits/api/src/upload-storage';
import { parseConfig } from '@image-edits/core';
import { createApiKey, createDb } from '@image-edits/db';
import { createTestEnv, makeMask, makePng, startTestService, type TestEnv, type TestService } from '@image-edits/testing';
import pino from 'pino';
import sharp from 'sharp';
import { editForm, get, pollJob, post } from './helpers';

/**
 * Regressions of issue 12: hostile input is a clear 4xx in OpenAI's shape, never a 500, a stuck
 * batch, a key stuck pending or a held socket. (The property-based side is tests/fuzz.int.test.ts.)
 */

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field
type Json = any;

const NUL = '\u0000';
const LONE = '\ud800';
const hole = { x: 8, y: 8, width: 16, height: 16 };

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService({ METRICS_TOKEN: 'metrics-secret' });
});
afterAll(async () => {
  await svc?.stop();
});

const auth = () => ({ authorization: `Bearer ${svc.apiKey}` });
const url = (p: string) => `${svc.url}${p}`;

async function call(method: string, path: string, opts: { json?: unknown; body?: BodyInit; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Headers; body: Json }> {
  const headers: Record<string, string> = { ...auth(), ...(opts.json !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers };
  const res = await fetch(url(path), { method, headers, body: opts.json !== undefined ? JSON.stringify(opts.json) : opts.body });
  const text = await res.text();
  let body: Json = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, body };
}

/** OpenAI's error shape with a code that says what went wrong. */
function expectError(res: { status: number; body: Json }, status: number, code: string, param?: string | null): void {
  expect({ status: res.status, code: res.body?.error?.code }).toEqual({ status, code });
  expect(res.body.error).toEqual({ message: expect.any(String), type: expect.any(String), param: param === undefined ? res.body.error.param : param, code });
}

/** A PNG whose header reads (so its size and alpha are known) but whose pixel data does not decode. */
async function brokenPng(): Promise<Buffer> {
  const png = await makePng(64, 64, { hole });
  const idat = png.indexOf('IDAT');
  const out = Buffer.from(png);
  for (let i = idat + 20; i < idat + 60; i++) out[i] = 0x55;
  return out;
}

/** Grey + alpha (two channels), with a transparent square. */
async function greyAlphaPng(): Promise<Buffer> {
  const raw = Buffer.alloc(64 * 64 * 2);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) raw.set([128, x >= 8 && x < 24 && y >= 8 && y < 24 ? 0 : 255], (y * 64 + x) * 2);
  return sharp(raw, { raw: { width: 64, height: 64, channels: 2 } }).toColourspace('b-w').png().toBuffer();
}

async function uploadFile(bytes: Buffer, name: string, purpose: string, type = 'image/png'): Promise<{ status: number; body: Json }> {
  const form = new FormData();
  form.append('purpose', purpose);
  form.append('file', new Blob([new Uint8Array(bytes)], { type }), name);
  return call('POST', '/v1/files', { body: form });
}

async function s3Keys(testEnv: TestEnv, prefix = ''): Promise<string[]> {
  const res = await fetch(`${testEnv.s3.endpoint}/test-bucket?list-type=2&prefix=${encodeURIComponent(prefix)}`);
  return [...(await res.text()).matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]!);
}

describe('2, 8: images whose pixels do not decode, and grey+alpha transparency', () => {
  it('a broken PNG without a mask is 400 invalid_image, by multipart and by data: URL', async () => {
    const bad = await brokenPng();
    const multipart = await post(url('/v1/images/edits'), svc.apiKey, editForm({ prompt: 'x' }, [['image', bad, 'a.png']]), { prefer: 'respond-async' });
    expectError(multipart, 400, 'invalid_image', 'image');
    expect(multipart.body.error.message).not.toMatch(/vips|libpng/);
    const json = await call('POST', '/v1/images/edits', { json: { prompt: 'x', images: [{ image_url: `data:image/png;base64,${bad.toString('base64')}` }] }, headers: { prefer: 'respond-async' } });
    expectError(json, 400, 'invalid_image', 'images[0]');
  });

  it('/v1/files refuses an image it cannot decode, and leaves nothing in S3', async () => {
    const before = await s3Keys(svc.testEnv, 'files/');
    const res = await uploadFile(await brokenPng(), 'broken.png', 'vision');
    expectError(res, 400, 'invalid_image', 'file');
    expect(await s3Keys(svc.testEnv, 'files/')).toEqual(before);
  });

  it('a stored file that no longer decodes is 400 invalid_image by file_id, not 500', async () => {
    const up = await uploadFile(await makePng(64, 64, { hole }), 'ok.png', 'vision');
    expect(up.status).toBe(200);
    // as a file stored before uploads were decoded would be
    await svc.api.deps.store.put(`files/${up.body.id}`, await brokenPng(), { contentType: 'image/png' });
    const res = await call('POST', '/v1/images/edits', { json: { prompt: 'x', images: [{ file_id: up.body.id }] }, headers: { prefer: 'respond-async' } });
    expectError(res, 400, 'invalid_image', 'images[0]');
  });

  it('a grey+alpha PNG with transparent pixels needs no mask', async () => {
    const ga = await greyAlphaPng();
    expect((await sharp(ga).metadata()).channels).toBe(2);
    const res = await post(url('/v1/images/edits'), svc.apiKey, editForm({ prompt: 'x' }, [['image', ga, 'grey.png']]), { prefer: 'respond-async' });
    expect(res.status).toBe(202);
    expect((await pollJob(svc.url, svc.apiKey, res.body.id)).status).toBe('succeeded');
  });

  it("10: a job's error for an undecodable input names no library", async () => {
    const res = await post(url('/v1/images/edits'), svc.apiKey, editForm({ prompt: 'x' }, [['image', await brokenPng(), 'a.png'], ['mask', await makeMask(64, 64, hole), 'm.png']]), {
      prefer: 'respond-async',
    });
    expect(res.status).toBe(202);
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('failed');
    expect(job.error.code).toBe('invalid_image');
    expect(job.error.message).not.toMatch(/vips|libpng|sharp/i);
  });
});

describe('3: U+0000 and unpaired surrogates never reach Postgres', () => {
  it.each([
    ['prompt', { prompt: `a${NUL}b` }, 'prompt'],
    ['user', { prompt: 'x', user: `u${NUL}` }, 'user'],
    ['a metadata key', { prompt: 'x', metadata: { [`k${NUL}`]: 'v' } }, 'metadata'],
    ['a metadata value', { prompt: 'x', metadata: { k: `v${NUL}` } }, 'metadata.k'],
    ['a file_id', { prompt: 'x', images: [{ file_id: `file-${NUL}` }] }, 'images[0].file_id'],
    ['a lone surrogate in the prompt', { prompt: `a${LONE}` }, 'prompt'],
  ])('JSON edit: %s is 400 invalid_value naming it', async (_name, body, param) => {
    const res = await call('POST', '/v1/images/edits', { json: { images: [{ image_url: 'data:image/png;base64,AAAA' }], ...body } });
    expectError(res, 400, 'invalid_value', param);
  });

  it('multipart edit: a NUL in a field, a metadata[key] and a filename* is 400', async () => {
    const png = await makePng(64, 64, { hole });
    expectError(await post(url('/v1/images/edits'), svc.apiKey, editForm({ prompt: `a${NUL}` }, [['image', png, 'a.png']])), 400, 'invalid_value', 'prompt');
    expectError(await post(url('/v1/images/edits'), svc.apiKey, editForm({ prompt: 'x', 'metadata[a]': `b${NUL}` }, [['image', png, 'a.png']])), 400, 'invalid_value', 'metadata.a');
    const raw = multipartRaw([['prompt', 'x']], { field: 'image', header: `filename="a.png"; filename*=UTF-8''a%00b.png`, bytes: png });
    const res = await call('POST', '/v1/images/edits', { body: raw.body, headers: { 'content-type': raw.type, prefer: 'respond-async' } });
    expectError(res, 400, 'invalid_value', 'image.filename');
    expect(readdirSync(svc.testEnv.env.UPLOAD_DIR!)).toEqual([]);
  });

  it('files: a NUL in the filename is 400 and nothing is kept; a NUL purpose filter is 400', async () => {
    const before = await s3Keys(svc.testEnv, 'files/');
    const raw = multipartRaw([['purpose', 'vision']], { field: 'file', header: `filename*=UTF-8''a%00b.png`, bytes: await makePng(64, 64) });
    const res = await call('POST', '/v1/files', { body: raw.body, headers: { 'content-type': raw.type } });
    expectError(res, 400, 'invalid_value', 'file.filename');
    expect(await s3Keys(svc.testEnv, 'files/')).toEqual(before);
    expectError(await call('GET', '/v1/files?purpose=%00'), 400, 'invalid_value', 'purpose');
  });

  it('metadata sent as a JSON string is checked once decoded (multipart, JSON, batches)', async () => {
    const encoded = JSON.stringify({ a: `b${NUL}` });
    expect(encoded).not.toContain(NUL);
    const png = await makePng(64, 64, { hole });
    expectError(await post(url('/v1/images/edits'), svc.apiKey, editForm({ prompt: 'x', metadata: encoded }, [['image', png, 'a.png']]), { prefer: 'respond-async' }), 400, 'invalid_value', 'metadata.a');
    const json = await call('POST', '/v1/images/edits', { json: { prompt: 'x', metadata: encoded, images: [{ image_url: `data:image/png;base64,${png.toString('base64')}` }] }, headers: { prefer: 'respond-async' } });
    expectError(json, 400, 'invalid_value', 'metadata.a');
    expectError(await call('POST', '/v1/batches', { json: { input_file_id: 'file-x', endpoint: '/v1/images/edits', completion_window: '24h', metadata: JSON.stringify({ k: '\ud800' }) } }), 400, 'invalid_value', 'metadata.k');
  });

  it('webhook endpoint description and batch metadata', async () => {
    expectError(await call('POST', '/v1/webhook_endpoints', { json: { url: 'https://example.com/h', description: `d${NUL}` } }), 400, 'invalid_value', 'description');
    expectError(await call('POST', '/v1/batches', { json: { input_file_id: 'file-x', endpoint: '/v1/images/edits', completion_window: '24h', metadata: { k: `v${NUL}` } } }), 400, 'invalid_value', 'metadata.k');
  });

  it.each([
    ['GET', '/v1/jobs/job_%00', 'job_not_found'],
    ['POST', '/v1/jobs/job_%00/cancel', 'job_not_found'],
    ['GET', '/v1/jobs/job_%00/webhook_deliveries', 'job_not_found'],
    ['POST', '/v1/jobs/job_x/webhook_deliveries/%00/retry', 'webhook_delivery_not_found'],
    ['GET', '/v1/webhook_endpoints/we_%00', 'webhook_endpoint_not_found'],
    ['DELETE', '/v1/webhook_endpoints/we_%00', 'webhook_endpoint_not_found'],
    ['GET', '/v1/files/file-%00', 'file_not_found'],
    ['GET', '/v1/batches/batch_%00', 'batch_not_found'],
  ])('%s %s is 404', async (method, path, code) => {
    expectError(await call(method, path), 404, code, 'id');
  });

  it('list filters: a NUL is 400 naming the parameter', async () => {
    expectError(await call('GET', '/v1/jobs?status=%00'), 400, 'invalid_value', 'status');
    expectError(await call('GET', '/v1/jobs?after=job_%00'), 400, 'invalid_value', 'after');
    expectError(await call('GET', '/v1/batches?after=%00'), 400, 'invalid_value', 'after');
  });
});

describe('4, 5: Idempotency-Key', () => {
  it('a key is never stuck pending: an answer quoting a NUL is stored storable and replayed', async () => {
    const express = (await import('express')).default;
    const { idempotency, jsonDigest } = await import('@image-edits/api/src/middleware/idempotency');
    const app = express();
    app.use(express.json());
    app.use((_req, res, next) => {
      res.locals.apiKeyId = svc.apiKeyId;
      next();
    });
    // a route whose refusal quotes something the input check cannot see
    app.post('/echo', idempotency(svc.api.deps, { hash: jsonDigest }), (_req, res) => {
      res.status(400).json({ error: { message: `got ${NUL}`, type: 'invalid_request_error', param: null, code: 'invalid_value' } });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const at = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/echo`;
      const send = () => fetch(at, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': 'nul-echo' }, body: '{}' });
      expect((await send()).status).toBe(400);
      // the answer is stored after the response closes
      let again = await send();
      for (let i = 0; i < 20 && again.status === 409; i++) {
        await new Promise((r) => setTimeout(r, 100));
        again = await send();
      }
      expect(again.status).toBe(400);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(((await again.json()) as Json).error.message).toBe('got \ufffd');
    } finally {
      server.close();
    }
  });

  it.each(['/v1/images/edits', '/v1/batches', '/v1/webhook_endpoints'])('5,000 levels of JSON with a key on %s is 400, not 500', async (path) => {
    const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`;
    const res = await call('POST', path, { body: `{"prompt":"x","metadata":${deep}}`, headers: { 'content-type': 'application/json', 'idempotency-key': `deep-${path}` } });
    expectError(res, 400, 'invalid_value');
    expect(res.body.error.message).toContain('nested');
  });
});

describe('6, 10: list filters, Prefer, body parsers, headers, metrics', () => {
  it('out-of-range dates in list filters are 400', async () => {
    expectError(await call('GET', '/v1/jobs?created_after=99999999999999'), 400, 'invalid_value', 'created_after');
    expectError(await call('GET', '/v1/jobs?created_before=9007199254740991'), 400, 'invalid_value', 'created_before');
    expect((await call('GET', '/v1/jobs?created_before=253402300799')).status).toBe(200);
  });

  it('Prefer: wait takes plain decimal integers only', async () => {
    const png = await makePng(64, 64, { hole });
    for (const wait of ['0x10', '1e1', '1.5', '-1', ' ']) {
      expectError(await post(url('/v1/images/edits'), svc.apiKey, editForm({ prompt: 'x' }, [['image', png, 'a.png']]), { prefer: `wait=${wait}` }), 400, 'invalid_value', 'Prefer');
    }
  });

  it("body-parser's refusals carry a code", async () => {
    expectError(await call('POST', '/v1/batches', { body: '{}', headers: { 'content-type': 'application/json; charset=latin1' } }), 415, 'unsupported_charset');
    expectError(await call('POST', '/v1/batches', { body: 'not gzip at all', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } }), 400, 'invalid_content_encoding');
    expectError(await call('POST', '/v1/batches', { body: '{}', headers: { 'content-type': 'application/json', 'content-encoding': 'compress' } }), 415, 'unsupported_content_encoding');
  });

  it('an empty multipart boundary is invalid_multipart, on edits and files', async () => {
    for (const path of ['/v1/images/edits', '/v1/files']) {
      expectError(await call('POST', path, { body: '--\r\n\r\n', headers: { 'content-type': 'multipart/form-data; boundary=' } }), 400, 'invalid_multipart');
    }
  });

  it('file content is sent with nosniff', async () => {
    const up = await uploadFile(Buffer.from('<html><script>alert(1)</script></html>\n'), 'x.jsonl', 'batch', 'application/jsonl');
    const res = await fetch(url(`/v1/files/${up.body.id}/content`), { headers: auth() });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
  });

  it("Node's own refusals (oversized, malformed headers) are in OpenAI's shape", async () => {
    const big = await rawExchange(svc.url, `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big.text).toMatch(/^HTTP\/1\.1 431/);
    expect(JSON.parse(big.text.split('\r\n\r\n')[1]!).error).toMatchObject({ code: 'headers_too_large', type: 'invalid_request_error' });
    const bad = await rawExchange(svc.url, 'GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n');
    expect(bad.text).toMatch(/^HTTP\/1\.1 400/);
    expect(JSON.parse(bad.text.split('\r\n\r\n')[1]!).error.code).toBe('invalid_http_request');
  });

  it('/metrics wants METRICS_TOKEN when it is set', async () => {
    const none = await fetch(url('/metrics'));
    expect(none.status).toBe(401);
    expect(((await none.json()) as Json).error.code).toBe('invalid_metrics_token');
    expect((await fetch(url('/metrics'), { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const ok = await fetch(url('/metrics'), { headers: { authorization: 'Bearer metrics-secret' } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('image_edits_http_request_duration_seconds');
  });
});

describe('9: the egress guard names no internal address', () => {
  it('a webhook to a name resolving to loopback is refused without the address', async () => {
    const res = await call('POST', '/v1/webhook_endpoints', { json: { url: 'http://localhost:9/hook' } });
    expectError(res, 400, 'webhook_url_forbidden', 'url');
    expect(res.body.error.message).not.toMatch(/127\.0\.0\.1|::1|loopback/);
  });
});

describe('1: no line can stop a batch', () => {
  async function runBatch(lines: unknown[]): Promise<{ batch: Json; output: Json[]; errors: Json[] }> {
    const text = `${lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n')}\n`;
    const file = await uploadFile(Buffer.from(text), 'in.jsonl', 'batch', 'application/jsonl');
    expect(file.status).toBe(200);
    const created = await call('POST', '/v1/batches', { json: { input_file_id: file.body.id, endpoint: '/v1/images/edits', completion_window: '24h' } });
    expect(created.status).toBe(200);
    return waitBatch(created.body.id);
  }
  async function waitBatch(id: string): Promise<{ batch: Json; output: Json[]; errors: Json[] }> {
    const end = Date.now() + 60_000;
    for (;;) {
      const { body } = await get(url(`/v1/batches/${id}`), svc.apiKey);
      if (['completed', 'failed', 'cancelled', 'expired'].includes(body.status)) {
        const lines = async (fileId: string | null) =>
          fileId ? (await (await fetch(url(`/v1/files/${fileId}/content`), { headers: auth() })).text()).split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
        return { batch: body, output: await lines(body.output_file_id), errors: await lines(body.error_file_id) };
      }
      if (Date.now() > end) throw new Error(`batch ${id} still ${body.status} ${JSON.stringify(body.request_counts)}`);
      await new Promise((r) => setTimeout(r, 150));
    }
  }
  const line = (customId: string, body: Record<string, unknown>) => ({ custom_id: customId, method: 'POST', url: '/v1/images/edits', body });

  it('a NUL prompt, a NUL custom_id, a lone surrogate and a broken PNG are each their own error; the rest runs', async () => {
    const png = (await makePng(64, 64, { hole })).toString('base64');
    const bad = (await brokenPng()).toString('base64');
    const image = (b64: string) => ({ images: [{ image_url: `data:image/png;base64,${b64}` }] });
    const { batch, output, errors } = await runBatch([
      line('good', { prompt: 'x', ...image(png) }),
      line('nul-prompt', { prompt: `a${NUL}b`, ...image(png) }),
      line(`nul${NUL}id`, { prompt: 'x', ...image(png) }),
      line('lone', { prompt: 'x', metadata: { k: LONE }, ...image(png) }),
      line('broken', { prompt: 'x', ...image(bad) }),
      line('nul-file', { prompt: 'x', images: [{ file_id: `file-${NUL}` }] }),
      line('good-2', { prompt: 'y', ...image(png) }),
    ]);
    expect(batch.status).toBe('completed');
    expect(batch.request_counts).toEqual({ total: 7, completed: 2, failed: 5 });
    expect(output.map((o) => o.custom_id).sort()).toEqual(['good', 'good-2']);
    const byId = Object.fromEntries(errors.map((e) => [e.custom_id, e.error.code]));
    expect(byId).toEqual({ 'nul-prompt': 'invalid_value', 'nul\ufffdid': 'invalid_value', lone: 'invalid_value', broken: 'invalid_image', 'nul-file': 'invalid_value' });
  });

  it('a batch with a NUL custom_id still ends when cancelled', async () => {
    const up = await uploadFile(await makePng(64, 64, { hole }), 'p.png', 'vision');
    const lines = Array.from({ length: 700 }, (_, i) => line(i === 650 ? `late${NUL}` : `l${i}`, { prompt: 'x', images: [{ file_id: up.body.id }] }));
    const file = await uploadFile(Buffer.from(lines.map((l) => JSON.stringify(l)).join('\n')), 'in.jsonl', 'batch', 'application/jsonl');
    const created = await call('POST', '/v1/batches', { json: { input_file_id: file.body.id, endpoint: '/v1/images/edits', completion_window: '24h' } });
    for (let i = 0; i < 100; i++) {
      const { body } = await get(url(`/v1/batches/${created.body.id}`), svc.apiKey);
      if (body.status !== 'validating') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await call('POST', `/v1/batches/${created.body.id}/cancel`)).status).toBe(200);
    const { batch, output, errors } = await waitBatch(created.body.id);
    expect(batch.status).toBe('cancelled');
    expect(output.length + errors.length).toBe(batch.request_counts.total);
  });
});

describe('7, 10: slow clients and aborted uploads', () => {
  let env: TestEnv;
  let api: RunningApi;
  let key: string;
  const logs: Json[] = [];
  beforeAll(async () => {
    env = await createTestEnv({ HTTP_HEADERS_TIMEOUT_MS: '1000', HTTP_BODY_IDLE_TIMEOUT_MS: '1000', HTTP_REQUEST_TIMEOUT_MS: '4000', LOG_LEVEL: 'info' });
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const l of String(chunk).split('\n').filter(Boolean)) logs.push(JSON.parse(l));
        done();
      },
    });
    // no worker: a job waits, so a sync request outlives every timeout
    api = await startApi(parseConfig(env.env), { logger: pino({ level: 'info' }, sink) });
    const db = createDb(env.databaseUrl, { poolSize: 1 });
    key = (await createApiKey(db, 'slow')).key;
    await db.$disconnect();
  });
  afterAll(async () => {
    await api?.close();
    await env?.cleanup();
  });

  it('headers that never finish: 408 in OpenAI shape, the socket closed', async () => {
    const r = await rawExchange(api.url, 'POST /v1/images/edits HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n', { waitMs: 5000 });
    expect(r.closedAfterMs).toBeLessThan(4000);
    expect(r.text).toMatch(/^HTTP\/1\.1 408/);
    expect(JSON.parse(r.text.split('\r\n\r\n')[1]!).error.code).toBe('request_timeout');
  });

  it('a body that goes silent loses its connection, its upload and its memory', async () => {
    const png = await makePng(64, 64, { hole });
    const raw = multipartRaw([['prompt', 'x']], { field: 'image', header: 'filename="a.png"', bytes: png });
    const head = `POST /v1/images/edits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: ${raw.type}\r\nContent-Length: ${raw.body.length}\r\n\r\n`;
    const r = await rawExchange(api.url, Buffer.concat([Buffer.from(head), raw.body.subarray(0, raw.body.length - 100)]), { waitMs: 6000 });
    expect(r.closedAfterMs).toBeLessThan(4000);
    await new Promise((res) => setTimeout(res, 200));
    expect(processMemoryBudget.inUse()).toBe(0);
    expect(readdirSync(env.env.UPLOAD_DIR!)).toEqual([]);
    // the client's doing: no error-level log, logged as 499
    expect(logs.filter((l) => l.level >= 50)).toEqual([]);
    expect(logs.some((l) => l.res?.statusCode === 499 || l.msg === 'request aborted by the client')).toBe(true);
  });

  it('a body that trickles in past HTTP_REQUEST_TIMEOUT_MS is cut with a 408', async () => {
    const head = `POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`;
    const socket = net.connect(Number(new URL(api.url).port), '127.0.0.1');
    const started = Date.now();
    let text = '';
    socket.on('data', (d) => {
      text += d.toString('latin1');
    });
    socket.on('error', () => undefined);
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now() - started)));
    socket.write(head);
    // a byte every 300 ms: never idle for the 1 s limit, never done
    const timer = setInterval(() => socket.writable && socket.write(' '), 300);
    const after = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(Number.POSITIVE_INFINITY), 8000))]);
    clearInterval(timer);
    socket.destroy();
    expect(after).toBeGreaterThanOrEqual(4000);
    expect(after).toBeLessThan(6500);
    expect(text).toMatch(/^HTTP\/1\.1 408/);
    expect(JSON.parse(text.split('\r\n\r\n')[1]!).error.code).toBe('request_timeout');
  });

  it('a steady slow upload and a wait longer than every timeout are not cut', async () => {
    const png = await makePng(64, 64, { hole });
    const raw = multipartRaw([['prompt', 'x']], { field: 'image', header: 'filename="a.png"', bytes: png });
    const head = `POST /v1/images/edits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nPrefer: wait=3\r\nContent-Type: ${raw.type}\r\nContent-Length: ${raw.body.length}\r\n\r\n`;
    const connected = Date.now();
    const socket = net.connect(Number(new URL(api.url).port), '127.0.0.1');
    let text = '';
    socket.on('data', (d) => {
      text += d.toString('latin1');
    });
    const closed = new Promise((r) => socket.once('close', r));
    socket.write(head);
    // the body in 5 pieces, 500 ms apart: never idle for the 1 s limit, 2 s in all
    const step = Math.ceil(raw.body.length / 5);
    for (let i = 0; i < raw.body.length; i += step) {
      await new Promise((r) => setTimeout(r, 500));
      socket.write(raw.body.subarray(i, i + step));
    }
    // then 3 s of waiting for the job (no worker): answered 202, not cut
    const started = Date.now();
    while (!text.includes('\r\n\r\n') && Date.now() - started < 8000) await new Promise((r) => setTimeout(r, 50));
    socket.end();
    await closed;
    expect(text).toMatch(/^HTTP\/1\.1 202/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2500);
    // longer in all than HTTP_REQUEST_TIMEOUT_MS (4 s): that bounds the arrival of a request, not its answer
    expect(Date.now() - connected).toBeGreaterThan(4500);
  });
});

/** A multipart body written by hand, for what FormData cannot send (filename*, odd headers). */
function multipartRaw(fields: [string, string][], file: { field: string; header: string; bytes: Buffer }): { type: string; body: Buffer } {
  const boundary = 'xBOUNDARYx';
  const parts: Buffer[] = fields.map(([k, v]) => Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${file.field}"; ${file.header}\r\nContent-Type: image/png\r\n\r\n`), file.bytes, Buffer.from(`\r\n--${boundary}--\r\n`));
  return { type: `multipart/form-data; boundary=${boundary}`, body: Buffer.concat(parts) };
}

/** Sends bytes on a raw socket; what came back, and when the server closed it. */
async function rawExchange(base: string, data: string | Buffer, opts: { waitMs?: number } = {}): Promise<{ text: string; closedAfterMs: number }> {
  const socket = net.connect(Number(new URL(base).port), '127.0.0.1');
  const start = Date.now();
  let text = '';
  socket.on('data', (d) => {
    text += d.toString('latin1');
  });
  socket.on('error', () => undefined);
  socket.write(data);
  const closedAfterMs = await new Promise<number>((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(Number.POSITIVE_INFINITY);
    }, opts.waitMs ?? 5000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - start);
    });
  });
  return { text, closedAfterMs };
}
