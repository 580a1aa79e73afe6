import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type FakeOpenAI, makeMask, makePng, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import OpenAI, { NotFoundError, toFile } from 'openai';
import sharp from 'sharp';
import { Webhook } from 'standardwebhooks';

/**
 * OpenAI's Batch API for /v1/images/edits, end to end, with the official `openai` SDK as the client:
 * upload a JSONL file, create the batch, poll it, download its output and error files. Real API,
 * worker, Postgres, Redis and S3; the upstream is a fake OpenAI on loopback; batch webhooks go to a
 * real receiver, their signatures checked.
 */

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field
type Json = any;

const UPSTREAM_KEY = 'sk-upstream-batches';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let fake: FakeOpenAI;
let svc: TestService;
let client: OpenAI;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
let secret: string;
let imageId: string;
let maskId: string;
let png: Buffer;
let mask: Buffer;

/** Upstream latency of the fake (ms), per request: the cancel test slows it down. */
let latencyMs = 0;

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

async function startReceiver() {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

beforeAll(async () => {
  fake = await startFakeOpenAI({ apiKey: UPSTREAM_KEY });
  fake.respondWith(
    async () => {
      if (latencyMs) await sleep(latencyMs);
      return undefined;
    },
    { times: Infinity },
  );
  receiver = await startReceiver();
  svc = await startTestService({
    OPENAI_API_KEY: UPSTREAM_KEY,
    OPENAI_BASE_URL: fake.url,
    MODEL_REGISTRY: JSON.stringify({ providers: { openai: { concurrency: 2 } } }),
    WEBHOOK_ALLOW_PRIVATE: 'true',
    WEBHOOK_RETRY_DELAYS_MS: '0,100,200',
  });
  client = new OpenAI({ apiKey: svc.apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });
  // every event of this key goes to the receiver
  const endpoint = await fetch(`${svc.url}/v1/webhook_endpoints`, {
    method: 'POST',
    headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ url: receiver.url }),
  });
  secret = ((await endpoint.json()) as Json).secret;
  const hole = { x: 16, y: 16, width: 32, height: 32 };
  png = await makePng(64, 64, { hole });
  mask = await makeMask(64, 64, hole);
  imageId = (await client.files.create({ file: await toFile(png, 'photo.png', { type: 'image/png' }), purpose: 'vision' })).id;
  maskId = (await client.files.create({ file: await toFile(mask, 'mask.png', { type: 'image/png' }), purpose: 'vision' })).id;
});

afterAll(async () => {
  await svc?.stop();
  await fake?.close();
  await receiver?.close();
});

const jsonl = (lines: unknown[]) => `${lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n')}\n`;
const edit = (customId: string, body: Record<string, unknown>) => ({ custom_id: customId, method: 'POST', url: '/v1/images/edits', body });
const baseBody = () => ({ model: 'dall-e-2', prompt: 'a red balloon', size: '256x256', images: [{ file_id: imageId }], mask: { file_id: maskId } });

async function uploadJsonl(text: string): Promise<string> {
  const file = await client.files.create({ file: await toFile(Buffer.from(text), 'input.jsonl', { type: 'application/jsonl' }), purpose: 'batch' });
  return file.id;
}

async function pollBatch(id: string, done: (b: OpenAI.Batch) => boolean, timeoutMs = 60_000): Promise<OpenAI.Batch> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (done(b)) return b;
    if (Date.now() > end) throw new Error(`batch ${id} still ${b.status}: ${JSON.stringify(b.request_counts)}`);
    await sleep(100);
  }
}

const final = (b: OpenAI.Batch) => ['completed', 'failed', 'cancelled', 'expired'].includes(b.status);

async function fileLines(id: string | null | undefined): Promise<Json[]> {
  if (!id) return [];
  const text = await (await client.files.content(id)).text();
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
}

/** The batch events the receiver got for one batch, each signature verified. */
function batchEvents(batchId: string): Json[] {
  return receiver.received
    .map((r) => new Webhook(secret).verify(r.body, r.headers as Record<string, string>) as Json)
    .filter((e) => e.type.startsWith('batch.') && e.data.id === batchId);
}

async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(50);
  }
}

describe('a batch with the official OpenAI SDK', () => {
  it('uploads, creates, completes, and hands out every result exactly once; a bad line is a failed request', async () => {
    const dataUrl = (b: Buffer) => `data:image/png;base64,${b.toString('base64')}`;
    const lines = [
      edit('url-0', baseBody()),
      edit('b64-1', { ...baseBody(), response_format: 'b64_json', n: 2 }),
      edit('data-url-2', { ...baseBody(), images: [{ image_url: dataUrl(png) }], mask: { image_url: dataUrl(mask) } }),
      edit('bad-n-3', { ...baseBody(), n: 99 }),
      '',
      edit('gone-file-5', { ...baseBody(), images: [{ file_id: 'file-doesnotexist' }] }),
      edit('meta-6', { ...baseBody(), metadata: { order: '42' } }),
      edit('unknown-7', { ...baseBody(), colour: 'red' }),
    ];
    const inputId = await uploadJsonl(jsonl(lines));
    const created = await client.batches.create({ input_file_id: inputId, endpoint: '/v1/images/edits', completion_window: '24h', metadata: { run: 'sdk' } });
    expect(created).toEqual({
      id: expect.stringMatching(/^batch_[0-9a-z]+$/),
      object: 'batch',
      endpoint: '/v1/images/edits',
      errors: null,
      input_file_id: inputId,
      completion_window: '24h',
      status: 'validating',
      output_file_id: null,
      error_file_id: null,
      created_at: expect.any(Number),
      in_progress_at: null,
      expires_at: created.created_at + 24 * 3600,
      finalizing_at: null,
      completed_at: null,
      failed_at: null,
      expired_at: null,
      cancelling_at: null,
      cancelled_at: null,
      request_counts: { total: 0, completed: 0, failed: 0 },
      metadata: { run: 'sdk' },
    });

    const done = await pollBatch(created.id, final);
    expect(done.status).toBe('completed');
    expect(done.request_counts).toEqual({ total: 7, completed: 4, failed: 3 });
    for (const k of ['in_progress_at', 'finalizing_at', 'completed_at'] as const) expect(done[k]).toEqual(expect.any(Number));
    expect(done.output_file_id).toMatch(/^file-/);
    expect(done.error_file_id).toMatch(/^file-/);

    const output = await fileLines(done.output_file_id);
    const errors = await fileLines(done.error_file_id);
    // every custom_id exactly once across the two files
    const ids = [...output, ...errors].map((l) => l.custom_id).sort();
    expect(ids).toEqual(['b64-1', 'bad-n-3', 'data-url-2', 'gone-file-5', 'meta-6', 'unknown-7', 'url-0']);
    expect(new Set([...output, ...errors].map((l) => l.id)).size).toBe(7);
    for (const l of [...output, ...errors]) expect(l.id).toMatch(/^batch_req_[0-9a-z]+$/);

    const byId = Object.fromEntries(output.map((l) => [l.custom_id, l]));
    for (const l of output) {
      expect(l.error).toBeNull();
      expect(l.response).toEqual({ status_code: 200, request_id: expect.stringMatching(/^job_/), body: { created: expect.any(Number), data: expect.any(Array) } });
    }
    // a URL answer is a fresh presigned URL of a real PNG
    const url = byId['url-0'].response.body.data[0].url as string;
    const img = await sharp(Buffer.from(await (await fetch(url)).arrayBuffer())).metadata();
    expect(img).toMatchObject({ format: 'png', width: 256, height: 256 });
    // base64 as the line asked, two images
    const b64 = byId['b64-1'].response.body.data;
    expect(b64).toHaveLength(2);
    expect((await sharp(Buffer.from(b64[0].b64_json, 'base64')).metadata()).format).toBe('png');
    // the request is a job of its own, readable as one
    const job = await client.get<unknown, Json>(`/jobs/${byId['meta-6'].response.request_id}`);
    expect(job).toMatchObject({ status: 'succeeded', metadata: { order: '42' } });

    const bad = Object.fromEntries(errors.map((l) => [l.custom_id, l]));
    expect(bad['bad-n-3']).toMatchObject({
      response: { status_code: 400, request_id: null, body: { error: { param: 'n', code: 'invalid_value' } } },
      error: { code: 'invalid_value', message: expect.stringMatching(/n must be an integer from 1 to 10/) },
    });
    // a line's body follows the endpoint's rule: an unknown field is refused, naming it
    expect(bad['unknown-7']).toMatchObject({ response: { status_code: 400, body: { error: { param: 'colour', code: 'unknown_parameter' } } }, error: { code: 'unknown_parameter' } });
    expect(bad['gone-file-5']).toMatchObject({ response: { status_code: 400, body: { error: { param: 'images[0].file_id', code: 'file_not_found' } } }, error: { code: 'file_not_found' } });

    // the result files are the key's files (purpose batch_output), listed and read like any other
    const outFile = await client.files.retrieve(done.output_file_id!);
    expect(outFile).toMatchObject({ purpose: 'batch_output', filename: `batch_${done.id}_output.jsonl` });
    // the refused lines never reached the upstream
    expect(fake.requests.filter((r) => r.path.endsWith('/images/edits'))).toHaveLength(4);

    // listed with a cursor, newest first
    const listed = await client.batches.list({ limit: 10 });
    expect(listed.data.map((b) => b.id)).toContain(done.id);

    // one batch.completed webhook with the batch object; no job.* events for its children
    await until(() => batchEvents(done.id).length > 0);
    const [event] = batchEvents(done.id);
    expect(event).toMatchObject({ type: 'batch.completed', data: { id: done.id, object: 'batch', status: 'completed', request_counts: { total: 7, completed: 4, failed: 3 } } });
    expect(receiver.received.map((r) => JSON.parse(r.body).type).filter((t: string) => t.startsWith('job.'))).toEqual([]);
  });

  it("another key's batch or input file is not found", async () => {
    const inputId = await uploadJsonl(jsonl([edit('a', baseBody())]));
    const other = new OpenAI({ apiKey: await svc.newKey('other'), baseURL: `${svc.url}/v1`, maxRetries: 0 });
    await expect(other.batches.create({ input_file_id: inputId, endpoint: '/v1/images/edits', completion_window: '24h' })).rejects.toBeInstanceOf(NotFoundError);
    const mine = await client.batches.create({ input_file_id: inputId, endpoint: '/v1/images/edits', completion_window: '24h' });
    await expect(other.batches.retrieve(mine.id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(other.batches.cancel(mine.id)).rejects.toBeInstanceOf(NotFoundError);
    expect((await other.batches.list()).data).toEqual([]);
    await pollBatch(mine.id, final);
  });

  it('refuses a bad request before creating anything', async () => {
    const inputId = await uploadJsonl(jsonl([edit('a', baseBody())]));
    const cases: [Record<string, unknown>, string][] = [
      [{ input_file_id: inputId, endpoint: '/v1/chat/completions', completion_window: '24h' }, 'endpoint'],
      [{ input_file_id: inputId, endpoint: '/v1/images/edits', completion_window: '1h' }, 'completion_window'],
      [{ endpoint: '/v1/images/edits', completion_window: '24h' }, 'input_file_id'],
      [{ input_file_id: imageId, endpoint: '/v1/images/edits', completion_window: '24h' }, 'input_file_id'],
    ];
    for (const [body, param] of cases) {
      const res = await fetch(`${svc.url}/v1/batches`, { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect({ status: res.status, param: ((await res.json()) as Json).error.param }).toEqual({ status: 400, param });
    }
  });

  it('an Idempotency-Key creates one batch', async () => {
    const inputId = await uploadJsonl(jsonl([edit('a', baseBody())]));
    const params = { input_file_id: inputId, endpoint: '/v1/images/edits' as const, completion_window: '24h' as const };
    const headers = { 'Idempotency-Key': 'batch-once' };
    const first = await client.batches.create(params, { headers });
    const again = await client.batches.create(params, { headers });
    expect(again.id).toBe(first.id);
    // other parameters under the same key: 422
    await expect(client.batches.create({ ...params, metadata: { other: 'x' } }, { headers })).rejects.toMatchObject({ status: 422 });
    await pollBatch(first.id, final);
  });
});

describe('validation', () => {
  it('a structurally broken file fails the batch, naming each line; nothing runs', async () => {
    const inputId = await uploadJsonl(
      jsonl([
        edit('ok-1', baseBody()),
        '{"custom_id": "broken", ',
        { ...edit('wrong-method', baseBody()), method: 'GET' },
        { ...edit('wrong-url', baseBody()), url: '/v1/images/generations' },
        edit('ok-1', baseBody()),
        [1, 2],
        { custom_id: 'no-body', method: 'POST', url: '/v1/images/edits' },
      ]),
    );
    const created = await client.batches.create({ input_file_id: inputId, endpoint: '/v1/images/edits', completion_window: '24h' });
    const failed = await pollBatch(created.id, final);
    expect(failed.status).toBe('failed');
    expect(failed.failed_at).toEqual(expect.any(Number));
    expect(failed.errors?.object).toBe('list');
    expect(failed.errors?.data?.map((e) => [e.line, e.code, e.param])).toEqual([
      [2, 'invalid_json_line', null],
      [3, 'invalid_value', 'method'],
      [4, 'invalid_url', 'url'],
      [5, 'duplicate_custom_id', 'custom_id'],
      [6, 'invalid_request', null],
      [7, 'invalid_value', 'body'],
    ]);
    expect(failed.request_counts).toEqual({ total: 0, completed: 0, failed: 0 });
    expect(failed.output_file_id).toBeNull();
    expect(await svc.db.job.count({ where: { batchId: created.id } })).toBe(0);
    await until(() => batchEvents(created.id).length > 0);
    expect(batchEvents(created.id)[0]).toMatchObject({ type: 'batch.failed', data: { status: 'failed' } });
  });

  it('lists the first 100 errors of a file with more, then their count', async () => {
    const inputId = await uploadJsonl(jsonl(Array.from({ length: 150 }, (_, i) => `not json ${i}`)));
    const created = await client.batches.create({ input_file_id: inputId, endpoint: '/v1/images/edits', completion_window: '24h' });
    const failed = await pollBatch(created.id, final);
    expect(failed.errors?.data).toHaveLength(101);
    expect(failed.errors?.data?.[99]).toMatchObject({ line: 100, code: 'invalid_json_line' });
    expect(failed.errors?.data?.[100]).toMatchObject({ code: 'too_many_errors', line: null, message: expect.stringMatching(/150 invalid lines/) });
  });
});

describe('cancel', () => {
  it('mid-way: nothing new starts, what finished stays in the output, the rest is in the error file; ends cancelled', async () => {
    latencyMs = 1500;
    try {
      const inputId = await uploadJsonl(jsonl(Array.from({ length: 10 }, (_, i) => edit(`slow-${i}`, baseBody()))));
      const before = fake.requests.length;
      const created = await client.batches.create({ input_file_id: inputId, endpoint: '/v1/images/edits', completion_window: '24h' });
      // two children at the upstream (the provider runs two at once), eight waiting
      await until(() => fake.requests.length >= before + 2);
      const cancelling = await client.batches.cancel(created.id);
      expect(cancelling.status).toBe('cancelling');
      expect(cancelling.cancelling_at).toEqual(expect.any(Number));

      const done = await pollBatch(created.id, final, 30_000);
      expect(done.status).toBe('cancelled');
      expect(done.cancelled_at).toEqual(expect.any(Number));
      expect(done.completed_at).toBeNull();
      // the two that were running finished; no other child reached the upstream
      expect(fake.requests.length - before).toBe(2);
      expect(done.request_counts).toEqual({ total: 10, completed: 2, failed: 8 });
      const output = await fileLines(done.output_file_id);
      const errors = await fileLines(done.error_file_id);
      expect(output).toHaveLength(2);
      for (const l of output) expect(l.response.status_code).toBe(200);
      expect(errors).toHaveLength(8);
      for (const l of errors) expect(l).toMatchObject({ response: null, error: { code: 'batch_cancelled' } });
      expect([...output, ...errors].map((l) => l.custom_id).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `slow-${i}`).sort());
      // the stopped children are canceled jobs, off their queue
      expect(await svc.db.job.count({ where: { batchId: created.id, status: 'canceled' } })).toBe(8);
      // cancelling again is a no-op on a cancelled batch: 409
      await expect(client.batches.cancel(created.id)).rejects.toMatchObject({ status: 409 });
      await until(() => batchEvents(created.id).length > 0);
      expect(batchEvents(created.id)[0]).toMatchObject({ type: 'batch.cancelled', data: { id: created.id, status: 'cancelled' } });
    } finally {
      latencyMs = 0;
    }
  });
});

describe('expiry', () => {
  it('a batch past its 24 h window stops what has not started and ends expired with what finished', async () => {
    latencyMs = 1500;
    try {
      const inputId = await uploadJsonl(jsonl(Array.from({ length: 6 }, (_, i) => edit(`late-${i}`, baseBody()))));
      const before = fake.requests.length;
      const created = await client.batches.create({ input_file_id: inputId, endpoint: '/v1/images/edits', completion_window: '24h' });
      await until(() => fake.requests.length >= before + 2);
      // the window runs out now (the worker's deadline sweep looks every second)
      await svc.db.batch.update({ where: { id: created.id }, data: { expiresAt: new Date(Date.now() - 1000) } });
      const done = await pollBatch(created.id, final, 30_000);
      expect(done.status).toBe('expired');
      expect(done.expired_at).toEqual(expect.any(Number));
      expect(fake.requests.length - before).toBe(2);
      expect(done.request_counts).toEqual({ total: 6, completed: 2, failed: 4 });
      const errors = await fileLines(done.error_file_id);
      expect(errors.map((l) => l.error.code)).toEqual(['batch_expired', 'batch_expired', 'batch_expired', 'batch_expired']);
      expect(await fileLines(done.output_file_id)).toHaveLength(2);
    } finally {
      latencyMs = 0;
    }
  });
});

describe('fan-out', () => {
  let api: TestService;
  beforeAll(async () => {
    // no worker: this test runs the fan-out step itself
    api = await startTestService({ OPENAI_API_KEY: UPSTREAM_KEY, OPENAI_BASE_URL: fake.url }, { worker: false });
  });
  afterAll(async () => {
    await api?.stop();
  });

  it('interrupted after a chunk, resumes from its recorded progress: every line one job, enqueued once', async () => {
    const { runFanOut, CHUNK_LINES } = await import('../apps/worker/src/batches/fanout');
    const pino = (await import('pino')).default;
    const c = new OpenAI({ apiKey: api.apiKey, baseURL: `${api.url}/v1`, maxRetries: 0 });
    const image = (await c.files.create({ file: await toFile(png, 'photo.png', { type: 'image/png' }), purpose: 'vision' })).id;
    const lines = CHUNK_LINES * 2 + 17;
    const body = { model: 'dall-e-2', prompt: 'x', size: '256x256', images: [{ file_id: image }] };
    const file = await c.files.create({
      file: await toFile(Buffer.from(jsonl(Array.from({ length: lines }, (_, i) => edit(`r${i}`, i === 7 ? { ...body, size: '99x99' } : body)))), 'in.jsonl'),
      purpose: 'batch',
    });
    const batch = await c.batches.create({ input_file_id: file.id, endpoint: '/v1/images/edits', completion_window: '24h' });

    const enqueued: string[] = [];
    const closing = new AbortController();
    const deps = {
      ...api.api.deps,
      logger: pino({ level: 'silent' }),
      queue: {
        async enqueueMany(provider: string, payloads: { jobId: string; batch?: boolean }[]) {
          expect(payloads.every((p) => p.batch === true)).toBe(true);
          enqueued.push(...payloads.map((p) => p.jobId));
          await api.api.deps.queue.enqueueMany(provider, payloads);
          // the worker is told to close once its first chunk is in
          closing.abort();
        },
        remove: api.api.deps.queue.remove,
      },
      batchQueue: { enqueue: async () => undefined },
    };
    await expect(runFanOut(deps, batch.id, closing.signal)).rejects.toThrow(/resumes after line 500/);
    const halfway = await api.db.batch.findUniqueOrThrow({ where: { id: batch.id } });
    expect({ status: halfway.status, total: halfway.total, linesDone: halfway.linesDone, fannedOut: halfway.fannedOutAt }).toEqual({ status: 'in_progress', total: lines, linesDone: CHUNK_LINES, fannedOut: null });

    // another run (the step retried, or another worker after a crash) takes over
    await runFanOut(deps, batch.id, new AbortController().signal);
    const done = await api.db.batch.findUniqueOrThrow({ where: { id: batch.id } });
    expect(done.linesDone).toBe(lines);
    expect(done.fannedOutAt).not.toBeNull();
    expect(done.failed).toBe(1);
    const jobs = await api.db.job.findMany({ where: { batchId: batch.id }, select: { id: true, batchLine: true, customId: true, inputs: true } });
    expect(jobs).toHaveLength(lines - 1);
    expect(new Set(jobs.map((j) => j.batchLine)).size).toBe(lines - 1);
    expect(enqueued.sort()).toEqual(jobs.map((j) => j.id).sort());
    expect(await api.db.batchRequestError.findMany({ where: { batchId: batch.id }, select: { line: true, customId: true } })).toEqual([{ line: 8, customId: 'r7' }]);
    // one shared copy of the image for all of them
    expect(new Set(jobs.map((j) => (j.inputs as Json).images[0].key))).toEqual(new Set([`batches/${batch.id}/files/${image}`]));
    // a third run finds nothing to do
    await runFanOut(deps, batch.id, new AbortController().signal);
    expect(await api.db.job.count({ where: { batchId: batch.id } })).toBe(lines - 1);
  });
});

describe('at scale', () => {
  it('validates and fans out 50,000 lines (a 100 MB file) with the live heap of the API and worker bounded', async () => {
    const { CHUNK_LINES } = await import('../apps/worker/src/batches/fanout');
    const { createWriteStream, openAsBlob, mkdtempSync, rmSync } = await import('node:fs');
    const { finished } = await import('node:stream/promises');
    const os = await import('node:os');
    const path = await import('node:path');
    const v8 = await import('node:v8');
    const vm = await import('node:vm');
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;

    // the upstream holds what reaches it: the children wait in their queue, this is about the fan-out
    const upstream = await startFakeOpenAI({ apiKey: UPSTREAM_KEY });
    const release = upstream.hold();
    const big = await startTestService({ OPENAI_API_KEY: UPSTREAM_KEY, OPENAI_BASE_URL: upstream.url, MODEL_REGISTRY: JSON.stringify({ providers: { openai: { concurrency: 1 } } }) });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'batch-scale-'));
    try {
      const c = new OpenAI({ apiKey: big.apiKey, baseURL: `${big.url}/v1`, maxRetries: 0 });
      const image = (await c.files.create({ file: await toFile(png, 'photo.png', { type: 'image/png' }), purpose: 'vision' })).id;
      const LINES = 50_000;
      const prompt = 'p'.repeat(2000);
      /** a JSONL file of `n` lines written to disk and uploaded from it (a file-backed Blob: never whole in this process) */
      const upload = async (n: number, name: string): Promise<Json> => {
        const file = path.join(dir, name);
        const out = createWriteStream(file);
        for (let i = 0; i < n; i++) {
          const line = `${JSON.stringify(edit(`req-${i}`, { model: 'gpt-image-1', prompt: `${i} ${prompt}`, images: [{ file_id: image }], size: '1024x1024' }))}\n`;
          if (!out.write(line)) await new Promise((r) => out.once('drain', r));
        }
        out.end();
        await finished(out);
        const form = new FormData();
        form.append('purpose', 'batch');
        form.append('file', await openAsBlob(file, { type: 'application/jsonl' }), name);
        return (await fetch(`${big.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${big.apiKey}` }, body: form })).json();
      };
      const fannedOut = async (batchId: string, timeoutMs: number) => {
        const end = Date.now() + timeoutMs;
        for (;;) {
          const row = await big.db.batch.findUniqueOrThrow({ where: { id: batchId } });
          if (row.fannedOutAt) return row;
          if (Date.now() > end) throw new Error(`fan-out of ${batchId} still at line ${row.linesDone}`);
          await sleep(250);
        }
      };
      // a small batch first, so the baseline has every code path of a fan-out loaded and compiled
      const warmup = await c.batches.create({ input_file_id: (await upload(CHUNK_LINES + 100, 'warmup.jsonl')).id, endpoint: '/v1/images/edits', completion_window: '24h' });
      await fannedOut(warmup.id, 60_000);
      const uploaded = await upload(LINES, 'input.jsonl');
      expect(uploaded.bytes).toBeGreaterThan(LINES * 2000);

      gc();
      const baseline = process.memoryUsage().heapUsed;
      let peak = baseline;
      const sampler = setInterval(() => {
        gc();
        peak = Math.max(peak, process.memoryUsage().heapUsed);
      }, 500);
      const started = Date.now();
      const batch = await c.batches.create({ input_file_id: uploaded.id, endpoint: '/v1/images/edits', completion_window: '24h' });
      const row = await fannedOut(batch.id, 240_000);
      const seconds = (Date.now() - started) / 1000;
      clearInterval(sampler);
      gc();
      peak = Math.max(peak, process.memoryUsage().heapUsed);
      const growthMB = (peak - baseline) / 1024 / 1024;
      console.log(`50,000 lines (${(uploaded.bytes / 1024 / 1024).toFixed(0)} MB) validated and fanned out in ${seconds.toFixed(1)} s (${(LINES / seconds).toFixed(0)} jobs/s); live heap peak +${growthMB.toFixed(1)} MB`);
      expect({ status: row.status, total: row.total, linesDone: row.linesDone, failed: row.failed }).toEqual({ status: 'in_progress', total: LINES, linesDone: LINES, failed: 0 });
      expect(await big.db.job.count({ where: { batchId: batch.id } })).toBe(LINES);
      // The file is 105 MB; the fan-out holds one chunk at a time (500 lines, their parsed bodies, rows and
      // the statement recording them: some 30 MB while it runs, measured the same at 5,000 lines)
      expect(growthMB).toBeLessThan(64);
    } finally {
      release();
      await big.stop();
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
