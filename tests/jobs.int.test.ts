import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { createRedis, createWebhookQueue } from '@image-edits/queue';
import { announceMissedEvents } from '@image-edits/worker';
import pino from 'pino';
import { Webhook } from 'standardwebhooks';
import { type FakeOpenAI, makeMask, makePng, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import { editForm, get, pollJob, post } from './helpers';

/**
 * The job API for polling clients: list, cancel, long-poll, Prefer: wait, deadlines, metadata.
 * The OpenAI fake runs one job at a time here, so a held request stalls its provider queue.
 */
let svc: TestService;
let fake: FakeOpenAI;
let png: Buffer;
let mask: Buffer;
/** webhook deliveries received, by job id */
const hooks: Array<{ headers: http.IncomingHttpHeaders; body: string }> = [];
let receiver: http.Server;
let hookUrl: string;

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString('utf8');
    });
    req.on('end', () => {
      hooks.push({ headers: req.headers, body });
      res.end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  fake = await startFakeOpenAI({ apiKey: 'sk-upstream' });
  svc = await startTestService({
    OPENAI_API_KEY: 'sk-upstream',
    OPENAI_BASE_URL: fake.url,
    DEADLINE_SWEEP_INTERVAL_MS: '200',
    // the webhook receiver is on loopback
    WEBHOOK_ALLOW_PRIVATE: 'true',
    MODEL_REGISTRY: JSON.stringify({ providers: { openai: { concurrency: 1 } } }),
  });
  png = await makePng(64, 64);
  mask = await makeMask(64, 64, { x: 16, y: 16, width: 16, height: 16 });
});

afterAll(async () => {
  await svc?.stop();
  await fake?.close();
  receiver?.closeAllConnections();
  await new Promise((r) => receiver?.close(r));
});

/** The verified events a job's webhook received, in order. */
async function eventsFor(jobId: string): Promise<string[]> {
  const { body } = await get(`${svc.url}/v1/webhooks/secret`, svc.apiKey);
  const wh = new Webhook(body.secret);
  return hooks
    .map((h) => wh.verify(h.body, h.headers as Record<string, string>) as { type: string; data: { id: string } })
    .filter((e) => e.data.id === jobId)
    .map((e) => e.type);
}

beforeEach(() => fake.reset());

const files = (): [string, Buffer, string][] => [
  ['image', png, 'in.png'],
  ['mask', mask, 'mask.png'],
];
const submit = (fields: Record<string, string> = {}, headers: Record<string, string> = { prefer: 'respond-async' }, key = svc.apiKey) =>
  post(`${svc.url}/v1/images/edits`, key, editForm({ prompt: 'a hat', model: 'dall-e-2', size: '256x256', ...fields }, files()), headers);

async function outputObjects(jobId: string): Promise<string[]> {
  const res = await fetch(`${svc.testEnv.s3.endpoint}/test-bucket?list-type=2&prefix=jobs/${jobId}/output/`);
  return [...(await res.text()).matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]!);
}

async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('listing', () => {
  it('pages newest first with a cursor, filters by status and time, and carries metadata', async () => {
    const key = await svc.newKey('lister');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await submit({ model: 'local-inpaint', 'metadata[batch]': 'b1', 'metadata[n]': String(i) }, { prefer: 'respond-async' }, key);
      expect(res.status).toBe(202);
      expect(res.body.metadata).toEqual({ batch: 'b1', n: String(i) });
      ids.push(res.body.id);
    }
    for (const id of ids) await pollJob(svc.url, key, id);
    const first = await get(`${svc.url}/v1/jobs?limit=2`, key);
    expect(first.body).toMatchObject({ object: 'list', has_more: true });
    expect(first.body.data.map((j: { id: string }) => j.id)).toEqual([ids[4], ids[3]]);
    const second = await get(`${svc.url}/v1/jobs?limit=2&after=${first.body.last_id}`, key);
    expect(second.body.data.map((j: { id: string }) => j.id)).toEqual([ids[2], ids[1]]);
    const last = await get(`${svc.url}/v1/jobs?limit=2&after=${second.body.last_id}`, key);
    expect(last.body).toMatchObject({ has_more: false });
    expect(last.body.data.map((j: { id: string }) => j.id)).toEqual([ids[0]]);

    expect((await get(`${svc.url}/v1/jobs?status=failed`, key)).body.data).toEqual([]);
    expect((await get(`${svc.url}/v1/jobs?status=succeeded&limit=100`, key)).body.data).toHaveLength(5);
    const future = Math.floor(Date.now() / 1000) + 60;
    expect((await get(`${svc.url}/v1/jobs?created_after=${future}`, key)).body.data).toEqual([]);
    expect((await get(`${svc.url}/v1/jobs?created_before=${future}`, key)).body.data).toHaveLength(5);
    // another key sees none of them
    expect((await get(`${svc.url}/v1/jobs`, await svc.newKey('stranger'))).body.data).toEqual([]);
    for (const [query, param] of [
      ['limit=0', 'limit'],
      ['status=done', 'status'],
      ['after=xyz', 'after'],
      ['created_after=yesterday', 'created_after'],
    ]) {
      const bad = await get(`${svc.url}/v1/jobs?${query}`, key);
      expect({ query, status: bad.status, param: bad.body.error?.param }).toEqual({ query, status: 400, param });
    }
  });

  it('refuses bad metadata before storing anything', async () => {
    const res = await submit({ metadata: '{"a": 1}' });
    expect(res.status).toBe(400);
    expect(res.body.error.param).toBe('metadata');
  });
});

describe('cancellation', () => {
  it('a queued job is taken off the queue and never runs', async () => {
    const release = fake.hold();
    try {
      const running = await submit();
      await fake.waitForRequests(1);
      const queued = await submit();
      const res = await post(`${svc.url}/v1/jobs/${queued.body.id}/cancel`, svc.apiKey, new FormData());
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('canceled');
      release();
      expect((await pollJob(svc.url, svc.apiKey, running.body.id)).status).toBe('succeeded');
      await new Promise((r) => setTimeout(r, 300));
      expect(fake.requests).toHaveLength(1);
      expect((await get(`${svc.url}/v1/jobs/${queued.body.id}`, svc.apiKey)).body).toMatchObject({ status: 'canceled', result: null, usage: null });
      expect(await svc.db.usage.count({ where: { jobId: queued.body.id } })).toBe(0);
    } finally {
      release();
    }
  });

  it('a running job is aborted: the provider call stops, no output stored, nothing billed', async () => {
    // the upstream would take 30 s; the worker (one slot) is free again only if the call was aborted
    fake.respondWith({ delayMs: 30_000 });
    const res = await submit({ webhook_url: hookUrl });
    await fake.waitForRequests(1);
    expect((await get(`${svc.url}/v1/jobs/${res.body.id}`, svc.apiKey)).body.status).toBe('in_progress');
    const cancel = await post(`${svc.url}/v1/jobs/${res.body.id}/cancel`, svc.apiKey, new FormData());
    expect(cancel.body.status).toBe('canceled');
    const next = await submit();
    expect((await pollJob(svc.url, svc.apiKey, next.body.id, 10_000)).status).toBe('succeeded');
    expect(await outputObjects(res.body.id)).toEqual([]);
    expect(await svc.db.usage.count({ where: { jobId: res.body.id } })).toBe(0);
    expect((await get(`${svc.url}/v1/jobs/${res.body.id}`, svc.apiKey)).body.status).toBe('canceled');
    // a second cancel is a 409 and sends nothing more
    expect((await post(`${svc.url}/v1/jobs/${res.body.id}/cancel`, svc.apiKey, new FormData())).status).toBe(409);
    await until(async () => (await eventsFor(res.body.id)).length > 0);
    await new Promise((r) => setTimeout(r, 300));
    expect(await eventsFor(res.body.id)).toEqual(['job.canceled']);
  });

  it('a webhook event lost to a crash between finishing and announcing is sent by the reconciler', async () => {
    const res = await submit({ model: 'local-inpaint', webhook_url: hookUrl });
    await pollJob(svc.url, svc.apiKey, res.body.id);
    await until(async () => (await eventsFor(res.body.id)).length === 1);
    // the worker "died" before recording the event: no delivery row, finished a while ago
    await svc.db.webhookDelivery.deleteMany({ where: { jobId: res.body.id } });
    await svc.db.$executeRaw`UPDATE jobs SET completed_at = completed_at - interval '2 minutes' WHERE id = ${res.body.id}`;
    const redis = createRedis(svc.config.env.REDIS_URL);
    try {
      const webhookQueue = createWebhookQueue({ redisUrl: svc.config.env.REDIS_URL, prefix: svc.config.env.QUEUE_PREFIX }, redis, [0]);
      expect(await announceMissedEvents({ db: svc.db, webhookQueue, logger: pino({ level: 'silent' }) })).toBe(1);
      await until(async () => (await eventsFor(res.body.id)).length === 2);
      expect(await eventsFor(res.body.id)).toEqual(['job.succeeded', 'job.succeeded']);
      // announced now: a second pass finds nothing
      expect(await announceMissedEvents({ db: svc.db, webhookQueue, logger: pino({ level: 'silent' }) })).toBe(0);
      await webhookQueue.close();
    } finally {
      redis.disconnect();
    }
  });

  it('webhook_url gets job.started when asked for, then job.succeeded, signed', async () => {
    const res = await submit({ model: 'local-inpaint', webhook_url: hookUrl, webhook_events_filter: 'job.started,job.succeeded' });
    await pollJob(svc.url, svc.apiKey, res.body.id);
    await until(async () => (await eventsFor(res.body.id)).length === 2);
    expect(await eventsFor(res.body.id)).toEqual(['job.started', 'job.succeeded']);
  });

  it('a finished job answers 409 with its status; another key gets 404', async () => {
    const res = await submit({ model: 'local-inpaint' });
    await pollJob(svc.url, svc.apiKey, res.body.id);
    const again = await post(`${svc.url}/v1/jobs/${res.body.id}/cancel`, svc.apiKey, new FormData());
    expect(again.status).toBe(409);
    expect(again.body.error).toMatchObject({ code: 'job_not_cancelable' });
    expect(again.body.error.message).toContain('succeeded');
    const other = await post(`${svc.url}/v1/jobs/${res.body.id}/cancel`, await svc.newKey(), new FormData());
    expect(other.status).toBe(404);
  });

  it('a sync request waiting on a canceled job gets 409', async () => {
    const release = fake.hold();
    try {
      const waiting = submit({}, {});
      await fake.waitForRequests(1);
      const [job] = (await svc.db.job.findMany({ where: { status: 'in_progress' }, orderBy: { createdAt: 'desc' }, take: 1 })).map((j) => j.id);
      await post(`${svc.url}/v1/jobs/${job}/cancel`, svc.apiKey, new FormData());
      const res = await waiting;
      expect(res.status).toBe(409);
      expect(res.body.error.code).toBe('job_canceled');
    } finally {
      release();
    }
  });
});

describe('waiting without polling', () => {
  it('GET ?wait=N returns as soon as the job finishes; Prefer: wait=N answers 202 if not done, 200 if done', async () => {
    const release = fake.hold();
    let released = false;
    try {
      const res = await submit({}, { prefer: 'wait=1' });
      expect(res.status).toBe(202);
      expect(res.headers.get('location')).toBe(`/v1/jobs/${res.body.id}`);
      expect(res.headers.get('preference-applied')).toBe('wait=1');
      expect(res.body.status).toBe('in_progress');
      const started = Date.now();
      const poll = get(`${svc.url}/v1/jobs/${res.body.id}?wait=30`, svc.apiKey);
      setTimeout(() => {
        released = true;
        release();
      }, 500);
      const done = await poll;
      expect(done.body.status).toBe('succeeded');
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      if (!released) release();
    }
    const quick = await submit({ model: 'local-inpaint' }, { prefer: 'wait=20' });
    expect(quick.status).toBe(200);
    expect(quick.body.status).toBe('succeeded');
    expect(quick.body.result.data).toHaveLength(1);
    expect((await get(`${svc.url}/v1/jobs/${quick.body.id}?wait=61`, svc.apiKey)).status).toBe(400);
  });

  it('1,000 concurrent long-polls are held by one API process without polling the database', async () => {
    const release = fake.hold();
    let released = false;
    try {
      const jobs = await Promise.all(Array.from({ length: 10 }, () => submit()));
      const hub = svc.api.deps.hub;
      const polls = Array.from({ length: 1000 }, (_, i) => get(`${svc.url}/v1/jobs/${jobs[i % 10]!.body.id}?wait=30`, svc.apiKey));
      await until(() => hub.waiting() >= 1000);
      // while 1,000 requests wait, the database sees only the worker's own sweeps
      const transactions = async () =>
        Number((await svc.db.$queryRawUnsafe<{ n: bigint }[]>('SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()'))[0]!.n);
      const before = await transactions();
      await new Promise((r) => setTimeout(r, 3000));
      const during = (await transactions()) - before;
      expect(during).toBeLessThan(60);
      released = true;
      release();
      const results = await Promise.all(polls);
      expect(results.filter((r) => r.status === 200 && r.body.status === 'succeeded')).toHaveLength(1000);
      expect(hub.waiting()).toBe(0);
    } finally {
      if (!released) release();
    }
  }, 120_000);
});

describe('deadlines', () => {
  it('a job not started before its Cancel-After deadline expires and is not billed', async () => {
    const release = fake.hold();
    try {
      const running = await submit();
      await fake.waitForRequests(1);
      const late = await submit({ webhook_url: hookUrl }, { prefer: 'respond-async', 'cancel-after': '1s' });
      expect(late.status).toBe(202);
      const job = await pollJob(svc.url, svc.apiKey, late.body.id, 10_000);
      expect(job.status).toBe('expired');
      release();
      expect((await pollJob(svc.url, svc.apiKey, running.body.id)).status).toBe('succeeded');
      await new Promise((r) => setTimeout(r, 300));
      expect(fake.requests).toHaveLength(1);
      expect(await svc.db.usage.count({ where: { jobId: late.body.id } })).toBe(0);
      await until(async () => (await eventsFor(late.body.id)).length > 0);
      expect(await eventsFor(late.body.id)).toEqual(['job.expired']);
      // a deadline that is met does nothing
      const onTime = await submit({ cancel_after: '5m' });
      expect((await pollJob(svc.url, svc.apiKey, onTime.body.id)).status).toBe('succeeded');
    } finally {
      release();
    }
  });

  it('refuses a malformed Prefer before storing anything', async () => {
    const before = await svc.db.job.count();
    const res = await submit({}, { prefer: 'wait=abc' });
    expect(res.status).toBe(400);
    expect(res.body.error.param).toBe('Prefer');
    expect(await svc.db.job.count()).toBe(before);
  });

  it('refuses a deadline it cannot read', async () => {
    const res = await submit({}, { prefer: 'respond-async', 'cancel-after': 'tomorrow' });
    expect(res.status).toBe(400);
    expect(res.body.error.param).toBe('Cancel-After');
  });
});

describe('idempotency keys', () => {
  it('20 concurrent identical submissions with one key create exactly one job; replays answer the same job', async () => {
    const key = await svc.newKey('idem');
    const keyRow = await svc.db.apiKey.findFirstOrThrow({ where: { name: 'idem' }, orderBy: { createdAt: 'desc' } });
    const send = (fields: Record<string, string> = {}, image = png, apiKey = key) =>
      post(`${svc.url}/v1/images/edits`, apiKey, editForm({ prompt: 'a hat', model: 'local-inpaint', ...fields }, [['image', image, 'in.png'], ['mask', mask, 'mask.png']]), {
        prefer: 'respond-async',
        'idempotency-key': 'order-42',
      });
    const results = await Promise.all(Array.from({ length: 20 }, () => send()));
    expect(await svc.db.job.count({ where: { apiKeyId: keyRow.id } })).toBe(1);
    const accepted = results.filter((r) => r.status === 202);
    expect(accepted.length).toBeGreaterThanOrEqual(1);
    expect(new Set(accepted.map((r) => r.body.id)).size).toBe(1);
    for (const r of results.filter((x) => x.status !== 202)) expect({ status: r.status, code: r.body.error?.code }).toEqual({ status: 409, code: 'idempotency_key_in_use' });

    const replay = await send();
    expect(replay.status).toBe(202);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body.id).toBe(accepted[0]!.body.id);
    expect(await svc.db.job.count({ where: { apiKeyId: keyRow.id } })).toBe(1);

    const changedPrompt = await send({ prompt: 'a different hat' });
    expect(changedPrompt.status).toBe(422);
    expect(changedPrompt.body.error).toMatchObject({ code: 'idempotency_error', param: 'Idempotency-Key' });
    const changedImage = await send({}, await makePng(64, 64, { hole: { x: 0, y: 0, width: 8, height: 8 } }));
    expect(changedImage.status).toBe(422);
    // keys are scoped to the API key: another key's 'order-42' is its own
    const other = await send({}, png, await svc.newKey('idem-2'));
    expect(other.status).toBe(202);
    expect(other.body.id).not.toBe(replay.body.id);
  });

  it('a sync replay answers in OpenAI shape from the same job; a rejected request replays its error', async () => {
    const headers = { 'idempotency-key': `sync-${Date.now()}` };
    const form = () => editForm({ prompt: 'a hat', model: 'local-inpaint', response_format: 'b64_json' }, files());
    const first = await post(`${svc.url}/v1/images/edits`, svc.apiKey, form(), headers);
    const again = await post(`${svc.url}/v1/images/edits`, svc.apiKey, form(), headers);
    expect(first.status).toBe(200);
    expect(again.status).toBe(200);
    expect(again.headers.get('x-job-id')).toBe(first.headers.get('x-job-id'));
    expect(again.body.data[0].b64_json).toBe(first.body.data[0].b64_json);

    const badKey = `bad-${Date.now()}`;
    const bad = () => post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'a hat', model: 'local-inpaint', n: '99' }, files()), { 'idempotency-key': badKey });
    const b1 = await bad();
    expect(b1.status).toBe(400);
    expect(b1.body.error.param).toBe('n');
    const b2 = await bad();
    expect(b2.status).toBe(400);
    expect(b2.headers.get('idempotent-replayed')).toBe('true');
    expect(b2.body).toEqual(b1.body);
    const empty = await post(`${svc.url}/v1/images/edits`, svc.apiKey, form(), { 'idempotency-key': ' ' });
    expect(empty.status).toBe(400);
    expect(empty.body.error.param).toBe('Idempotency-Key');
  });

  it('a retried webhook endpoint creation with the same key creates one endpoint', async () => {
    const key = await svc.newKey('idem-hooks');
    const create = (url: string) =>
      fetch(`${svc.url}/v1/webhook_endpoints`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'idempotency-key': 'hook-1' },
        body: JSON.stringify({ url, events: ['job.succeeded'] }),
      }).then(async (r) => ({ status: r.status, headers: r.headers, body: await r.json() }));
    const first = await create(hookUrl);
    const again = await create(hookUrl);
    expect(first.status).toBe(201);
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body.id).toBe(first.body.id);
    expect((await get(`${svc.url}/v1/webhook_endpoints`, key)).body.data).toHaveLength(1);
    expect((await create(`${hookUrl}/other`)).status).toBe(422);
  });
});
