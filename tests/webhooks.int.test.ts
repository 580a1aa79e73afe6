import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createWebhookEndpoint, emitJobEvent } from '@image-edits/db';
import { makePng, startTestService, type TestService } from '@image-edits/testing';
import { Webhook } from 'standardwebhooks';
import { editForm, get, pollJob, post } from './helpers';

/**
 * Signed webhooks end to end: endpoints and secrets over the API, deliveries by the worker to a real
 * receiver on loopback, every signature checked with the `standardwebhooks` package, retries on the
 * compressed schedule WEBHOOK_RETRY_DELAYS_MS=0,100,200, and the egress guard.
 */

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field
type Json = any;

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

type Answer = { status: number; headers?: Record<string, string>; body?: string } | 'hang';

/** A webhook receiver: records every request; answers each path from its plan, then 200. */
async function startReceiver() {
  const received: Received[] = [];
  const plans = new Map<string, Answer[]>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      received.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() });
      const answer = plans.get(path)?.shift() ?? { status: 200 };
      if (answer === 'hang') return;
      res.writeHead(answer.status, answer.headers).end(answer.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: (path: string) => `http://127.0.0.1:${port}${path}`,
    plan: (path: string, ...answers: Answer[]) => plans.set(path, answers),
    at: (path: string) => received.filter((r) => r.path === path),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let svc: TestService;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
let png: Buffer;

beforeAll(async () => {
  receiver = await startReceiver();
  // the receiver is on 127.0.0.1: this service allows private addresses (the guard has its own service below)
  svc = await startTestService({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_DELAYS_MS: '0,100,200', WEBHOOK_TIMEOUT_MS: '1000' });
  png = await makePng(256, 256, { hole: { x: 96, y: 96, width: 64, height: 64 } });
});

afterAll(async () => {
  await svc?.stop();
  await receiver?.close();
});

const api = (path: string) => `${svc.url}${path}`;

async function send(method: string, url: string, key: string, body?: unknown): Promise<{ status: number; body: Json }> {
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json() };
}

async function createEndpoint(key: string, body: Record<string, unknown>): Promise<Json> {
  const res = await send('POST', api('/v1/webhook_endpoints'), key, body);
  expect(res.status).toBe(201);
  return res.body;
}

async function submitJob(key: string, fields: Record<string, string> = {}, base = svc.url): Promise<string> {
  const res = await post(`${base}/v1/images/edits`, key, editForm({ prompt: 'fill', model: 'local-inpaint', size: '256x256', ...fields }, [['image', png, 'in.png']]), {
    prefer: 'respond-async',
  });
  expect(res.status).toBe(202);
  return res.body.id;
}

/** The job's deliveries once none is pending any more. */
async function settledDeliveries(key: string, jobId: string, count: number, base = svc.url, timeoutMs = 20_000): Promise<Json[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const { status, body } = await get(`${base}/v1/jobs/${jobId}/webhook_deliveries`, key);
    expect(status).toBe(200);
    if (body.data.length >= count && body.data.every((d: Json) => d.status !== 'pending')) return body.data;
    if (Date.now() > end) throw new Error(`deliveries of ${jobId} not settled: ${JSON.stringify(body.data)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function until(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Verifies with the standardwebhooks package (throws on a bad signature) and returns the payload. */
function verified(secret: string, r: Received): Json {
  return new Webhook(secret).verify(r.body, r.headers as Record<string, string>);
}

describe('webhook endpoints', () => {
  it('creates (secret shown once), lists, reads and deletes; every bad input is a 400 naming its field', async () => {
    const key = await svc.newKey('crud');
    const created = await createEndpoint(key, { url: receiver.url('/crud'), events: ['job.succeeded', 'job.started'], description: 'mine' });
    expect(created).toMatchObject({ object: 'webhook_endpoint', url: receiver.url('/crud'), events: ['job.succeeded', 'job.started'], description: 'mine', status: 'enabled' });
    expect(created.id).toMatch(/^we_/);
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(Buffer.from(created.secret.slice(6), 'base64').length).toBeGreaterThanOrEqual(24);

    const all = await createEndpoint(key, { url: receiver.url('/crud2') });
    expect(all.events).toEqual(['job.succeeded', 'job.failed', 'job.canceled', 'job.expired', 'batch.completed', 'batch.failed', 'batch.cancelled', 'batch.expired']);

    const list = await get(api('/v1/webhook_endpoints'), key);
    expect(list.body.object).toBe('list');
    expect(list.body.data.map((e: Json) => e.id)).toEqual([created.id, all.id]);
    expect(list.body.data[0].secret).toBeUndefined();
    const one = await get(api(`/v1/webhook_endpoints/${created.id}`), key);
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ id: created.id, url: created.url });
    expect(one.body.secret).toBeUndefined();

    const bad: [Record<string, unknown>, string][] = [
      [{}, 'url'],
      [{ url: 42 }, 'url'],
      [{ url: 'not a url' }, 'url'],
      [{ url: 'ftp://example.com/x' }, 'url'],
      [{ url: receiver.url('/x'), events: ['job.done'] }, 'events'],
      [{ url: receiver.url('/x'), events: 'job.succeeded' }, 'events'],
      [{ url: receiver.url('/x'), description: 5 }, 'description'],
      [{ url: receiver.url('/x'), secret: 'mine' }, 'secret'],
    ];
    for (const [body, param] of bad) {
      const res = await send('POST', api('/v1/webhook_endpoints'), key, body);
      expect({ body, status: res.status, type: res.body.error?.type, param: res.body.error?.param }).toEqual({ body, status: 400, type: 'invalid_request_error', param });
    }

    const other = await svc.newKey('intruder');
    expect((await get(api(`/v1/webhook_endpoints/${created.id}`), other)).status).toBe(404);
    expect((await send('DELETE', api(`/v1/webhook_endpoints/${created.id}`), other)).status).toBe(404);
    expect((await get(api('/v1/webhook_endpoints'), other)).body.data).toEqual([]);

    const deleted = await send('DELETE', api(`/v1/webhook_endpoints/${created.id}`), key);
    expect(deleted).toEqual({ status: 200, body: { id: created.id, object: 'webhook_endpoint', deleted: true } });
    const missing = await get(api(`/v1/webhook_endpoints/${created.id}`), key);
    expect(missing.status).toBe(404);
    expect(missing.body.error).toMatchObject({ type: 'not_found_error', code: 'webhook_endpoint_not_found' });
    expect((await send('DELETE', api(`/v1/webhook_endpoints/${created.id}`), key)).status).toBe(404);
    expect((await get(api('/v1/webhook_endpoints'), key)).body.data.map((e: Json) => e.id)).toEqual([all.id]);
  });
});

describe('deliveries', () => {
  it('signs job.succeeded per Standard Webhooks with the job object (URLs, never base64)', async () => {
    const key = await svc.newKey('signed');
    const endpoint = await createEndpoint(key, { url: receiver.url('/signed') });
    const jobId = await submitJob(key, { response_format: 'b64_json', 'metadata[order]': '42' });
    await until(() => receiver.at('/signed').length === 1);
    const [r] = receiver.at('/signed');
    const payload = verified(endpoint.secret, r!);
    expect(r!.headers['content-type']).toBe('application/json');
    expect(r!.headers['user-agent']).toMatch(/^image-edits-webhooks\//);
    expect(r!.headers['webhook-id']).toMatch(/^msg_/);
    expect(r!.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(Math.abs(Number(r!.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(30);
    expect(payload).toMatchObject({ type: 'job.succeeded', data: { id: jobId, object: 'image.edit.job', status: 'succeeded', metadata: { order: '42' } } });
    expect(new Date(payload.timestamp).toISOString()).toBe(payload.timestamp);
    const datum = payload.data.result.data[0];
    expect(datum.b64_json).toBeUndefined();
    expect((await fetch(datum.url)).status).toBe(200);
    // a wrong secret does not verify
    expect(() => verified(`whsec_${Buffer.alloc(32, 1).toString('base64')}`, r!)).toThrow();

    const [d] = await settledDeliveries(key, jobId, 1);
    expect(d).toMatchObject({ object: 'webhook_delivery', webhook_id: r!.headers['webhook-id'], event: 'job.succeeded', job_id: jobId, endpoint_id: endpoint.id, status: 'succeeded', last_status_code: 200 });
    expect(d.attempts).toEqual([{ attempt: 1, status_code: 200, latency_ms: expect.any(Number), error: null, created_at: expect.any(Number) }]);
  });

  it('retries 5xx on the schedule with the same webhook-id, and records every attempt', async () => {
    const key = await svc.newKey('flaky');
    const endpoint = await createEndpoint(key, { url: receiver.url('/flaky') });
    receiver.plan('/flaky', { status: 500, body: 'boom' }, { status: 502 });
    const jobId = await submitJob(key);
    const [d] = await settledDeliveries(key, jobId, 1);
    const got = receiver.at('/flaky');
    expect(got).toHaveLength(3);
    expect(new Set(got.map((r) => r.headers['webhook-id'])).size).toBe(1);
    for (const r of got) expect(verified(endpoint.secret, r).type).toBe('job.succeeded');
    // the schedule's waits (100 ms, then 200 ms) separate the attempts
    expect(got[1]!.at - got[0]!.at).toBeGreaterThanOrEqual(90);
    expect(got[2]!.at - got[1]!.at).toBeGreaterThanOrEqual(190);
    expect(d.status).toBe('succeeded');
    expect(d.attempts.map((a: Json) => a.status_code)).toEqual([500, 502, 200]);
    expect(d.attempts[0].error).toBe('HTTP 500: boom');
    expect(d.attempts.every((a: Json) => typeof a.latency_ms === 'number' && a.latency_ms >= 0)).toBe(true);
  });

  it('gives up after the last scheduled attempt', async () => {
    const key = await svc.newKey('down');
    await createEndpoint(key, { url: receiver.url('/down') });
    receiver.plan('/down', { status: 503 }, { status: 503 }, { status: 503 }, { status: 503 });
    const jobId = await submitJob(key);
    const [d] = await settledDeliveries(key, jobId, 1);
    expect(d.status).toBe('failed');
    expect(d.attempts.map((a: Json) => a.status_code)).toEqual([503, 503, 503]);
    await sleep(400);
    expect(receiver.at('/down')).toHaveLength(3);
  });

  it('410 Gone stops at once and disables that endpoint only', async () => {
    const key = await svc.newKey('gone');
    const gone = await createEndpoint(key, { url: receiver.url('/gone') });
    const fine = await createEndpoint(key, { url: receiver.url('/gone-other') });
    receiver.plan('/gone', { status: 410 });
    const jobId = await submitJob(key);
    const deliveries = await settledDeliveries(key, jobId, 2);
    const d = deliveries.find((x: Json) => x.endpoint_id === gone.id);
    expect(d).toMatchObject({ status: 'failed', last_status_code: 410 });
    expect(d.attempts).toHaveLength(1);
    await sleep(500);
    expect(receiver.at('/gone')).toHaveLength(1);
    expect((await get(api(`/v1/webhook_endpoints/${gone.id}`), key)).body.status).toBe('disabled');
    expect((await get(api(`/v1/webhook_endpoints/${fine.id}`), key)).body.status).toBe('enabled');
    // a disabled endpoint gets no further events
    const next = await submitJob(key);
    await settledDeliveries(key, next, 1);
    expect((await get(api(`/v1/jobs/${next}/webhook_deliveries`), key)).body.data.map((x: Json) => x.endpoint_id)).toEqual([fine.id]);
    expect(receiver.at('/gone')).toHaveLength(1);
  });

  it('other 4xx fail without retry; a manual retry re-sends under the same webhook-id', async () => {
    const key = await svc.newKey('rejects');
    const endpoint = await createEndpoint(key, { url: receiver.url('/rejects') });
    receiver.plan('/rejects', { status: 400, body: 'bad payload' });
    const jobId = await submitJob(key);
    const [d] = await settledDeliveries(key, jobId, 1);
    expect(d).toMatchObject({ status: 'failed', last_status_code: 400, last_error: 'HTTP 400: bad payload' });
    await sleep(300);
    expect(receiver.at('/rejects')).toHaveLength(1);

    const other = await svc.newKey('stranger');
    expect((await get(api(`/v1/jobs/${jobId}/webhook_deliveries`), other)).status).toBe(404);
    expect((await send('POST', api(`/v1/jobs/${jobId}/webhook_deliveries/${d.id}/retry`), other)).status).toBe(404);
    expect((await send('POST', api(`/v1/jobs/${jobId}/webhook_deliveries/whd_nope/retry`), key)).status).toBe(404);

    const retried = await send('POST', api(`/v1/jobs/${jobId}/webhook_deliveries/${d.id}/retry`), key);
    expect(retried.status).toBe(202);
    expect(retried.body).toMatchObject({ id: d.id, status: 'pending' });
    const [after] = await settledDeliveries(key, jobId, 1);
    expect(after).toMatchObject({ id: d.id, status: 'succeeded', webhook_id: d.webhook_id, last_status_code: 200, last_error: null });
    expect(after.attempts.map((a: Json) => [a.attempt, a.status_code])).toEqual([
      [1, 400],
      [2, 200],
    ]);
    const got = receiver.at('/rejects');
    expect(got).toHaveLength(2);
    expect(got.map((r) => r.headers['webhook-id'])).toEqual([d.webhook_id, d.webhook_id]);
    for (const r of got) verified(endpoint.secret, r);
  });

  it("honours the receiver's Retry-After", async () => {
    const key = await svc.newKey('busy');
    await createEndpoint(key, { url: receiver.url('/busy') });
    receiver.plan('/busy', { status: 429, headers: { 'retry-after': '1' } });
    const jobId = await submitJob(key);
    const [d] = await settledDeliveries(key, jobId, 1);
    expect(d.attempts.map((a: Json) => a.status_code)).toEqual([429, 200]);
    const got = receiver.at('/busy');
    // the schedule alone would wait 100 ms
    expect(got[1]!.at - got[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it('a receiver that does not answer in time is retried', async () => {
    const key = await svc.newKey('slow');
    await createEndpoint(key, { url: receiver.url('/slow') });
    receiver.plan('/slow', 'hang');
    const jobId = await submitJob(key);
    const [d] = await settledDeliveries(key, jobId, 1);
    expect(d.status).toBe('succeeded');
    expect(d.attempts[0]).toMatchObject({ status_code: null, error: 'timed out after 1000 ms' });
    expect(d.attempts[0].latency_ms).toBeGreaterThanOrEqual(990);
    expect(d.attempts[1]).toMatchObject({ status_code: 200 });
  });

  it('respects each endpoint’s event filter, and an event emitted twice is delivered once', async () => {
    const key = await svc.newKey('filters');
    const started = await createEndpoint(key, { url: receiver.url('/f-started'), events: ['job.started'] });
    const finals = await createEndpoint(key, { url: receiver.url('/f-finals') });
    await createEndpoint(key, { url: receiver.url('/f-failed'), events: ['job.failed'] });
    const jobId = await submitJob(key);
    await pollJob(svc.url, key, jobId);
    await until(() => receiver.at('/f-finals').length === 1);
    // the events the lead's code emits elsewhere (start, cancel), emitted here directly, twice
    const deps = { db: svc.api.deps.db, webhookQueue: svc.api.deps.webhookQueue };
    await Promise.all([emitJobEvent(deps, jobId, 'job.started'), emitJobEvent(deps, jobId, 'job.started')]);
    await emitJobEvent(deps, jobId, 'job.started');
    await emitJobEvent(deps, jobId, 'job.canceled');
    const deliveries = await settledDeliveries(key, jobId, 3);
    expect(deliveries.map((d: Json) => [d.event, d.endpoint_id]).sort()).toEqual(
      [
        ['job.canceled', finals.id],
        ['job.started', started.id],
        ['job.succeeded', finals.id],
      ].sort(),
    );
    await sleep(300);
    expect(receiver.at('/f-started').map((r) => verified(started.secret, r).type)).toEqual(['job.started']);
    expect(receiver.at('/f-finals').map((r) => verified(finals.secret, r).type)).toEqual(['job.succeeded', 'job.canceled']);
    expect(receiver.at('/f-failed')).toHaveLength(0);
  });

  it("signs a submission's webhook_url with the key's default secret, which rotates", async () => {
    const key = await svc.newKey('per-job');
    const first = await get(api('/v1/webhooks/secret'), key);
    expect(first.status).toBe(200);
    expect(first.body.secret).toMatch(/^whsec_/);
    expect((await get(api('/v1/webhooks/secret'), key)).body.secret).toBe(first.body.secret);
    const other = await svc.newKey('per-job-other');
    expect((await get(api('/v1/webhooks/secret'), other)).body.secret).not.toBe(first.body.secret);

    const jobId = await submitJob(key, { webhook_url: receiver.url('/per-job') });
    const [d] = await settledDeliveries(key, jobId, 1);
    expect(d).toMatchObject({ endpoint_id: null, url: receiver.url('/per-job'), event: 'job.succeeded', status: 'succeeded' });
    const [r1] = receiver.at('/per-job');
    expect(verified(first.body.secret, r1!).data.id).toBe(jobId);

    const rotated = await send('POST', api('/v1/webhooks/secret/rotate'), key);
    expect(rotated.status).toBe(200);
    expect(rotated.body.secret).toMatch(/^whsec_/);
    expect(rotated.body.secret).not.toBe(first.body.secret);
    expect((await get(api('/v1/webhooks/secret'), key)).body.secret).toBe(rotated.body.secret);
    const second = await submitJob(key, { webhook_url: receiver.url('/per-job') });
    await settledDeliveries(key, second, 1);
    const r2 = receiver.at('/per-job')[1]!;
    expect(verified(rotated.body.secret, r2).data.id).toBe(second);
    expect(() => verified(first.body.secret, r2)).toThrow();
  });
});

describe('egress guard (private addresses refused)', () => {
  let guarded: TestService;
  beforeAll(async () => {
    guarded = await startTestService({ WEBHOOK_RETRY_DELAYS_MS: '0,100,200' });
  });
  afterAll(async () => {
    await guarded?.stop();
  });

  it('refuses endpoints on metadata, private, loopback and IPv6-mapped addresses with a 400', async () => {
    for (const url of ['http://169.254.169.254/latest/meta-data/', 'http://10.0.0.1/', 'http://192.168.1.10:8080/hook', `http://localhost:${receiver.port}/x`, 'http://[::1]/', 'http://[::ffff:169.254.169.254]/', 'http://100.64.0.1/']) {
      const res = await send('POST', `${guarded.url}/v1/webhook_endpoints`, guarded.apiKey, { url });
      expect({ url, status: res.status, param: res.body.error?.param, code: res.body.error?.code }).toEqual({ url, status: 400, param: 'url', code: 'webhook_url_forbidden' });
    }
    expect((await get(`${guarded.url}/v1/webhook_endpoints`, guarded.apiKey)).body.data).toEqual([]);
  });

  it("refuses a submission's webhook_url on a private address with a 400, before anything is stored", async () => {
    for (const url of ['http://169.254.169.254/', 'http://10.0.0.1/hook']) {
      const res = await post(`${guarded.url}/v1/images/edits`, guarded.apiKey, editForm({ prompt: 'fill', model: 'local-inpaint', size: '256x256', webhook_url: url }, [['image', png, 'in.png']]), {
        prefer: 'respond-async',
      });
      expect({ url, status: res.status, param: res.body.error?.param, code: res.body.error?.code }).toEqual({ url, status: 400, param: 'webhook_url', code: 'webhook_url_forbidden' });
    }
    expect(await guarded.db.job.count()).toBe(0);
  });

  it('re-checks at delivery: a host that resolves to a private address gets no connection', async () => {
    // as if the name had resolved elsewhere when it was registered
    await createWebhookEndpoint(guarded.db, { apiKeyId: guarded.apiKeyId, url: `http://localhost:${receiver.port}/guarded`, events: [] });
    const jobId = await submitJob(guarded.apiKey, {}, guarded.url);
    const [d] = await settledDeliveries(guarded.apiKey, jobId, 1, guarded.url);
    expect(d.status).toBe('failed');
    expect(d.attempts).toHaveLength(1);
    expect(d.attempts[0].status_code).toBeNull();
    expect(d.attempts[0].error).toMatch(/egress guard.*not resolve to a public internet address/);
    // what the name resolves to stays ours
    expect(d.attempts[0].error).not.toMatch(/127\.0\.0\.1|::1|loopback/);
    await sleep(300);
    expect(receiver.at('/guarded')).toHaveLength(0);
  });
});
