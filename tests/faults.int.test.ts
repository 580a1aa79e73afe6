import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from '@jest/globals';
import { createApiKey, createDb, type Db } from '@image-edits/db';
import { createRedis } from '@image-edits/queue';
import { createObjectStore } from '@image-edits/storage';
import { createTestEnv, type FakeOpenAI, type FaultProxy, makeMask, makePng, startFakeOpenAI, startFaultProxy, type TestEnv } from '@image-edits/testing';
import OpenAI, { toFile } from 'openai';
import OpenAIv4, { toFile as toFileV4 } from 'openai-v4';
import { editForm } from './helpers';

/**
 * Fault injection against real processes: one API and workers started as users start them, talking to
 * the real Postgres, Redis and S3-compatible server through TCP fault proxies, and a fake OpenAI
 * upstream. Whatever fails, every accepted edit ends `succeeded` exactly once: its outputs stored,
 * one usage row, one upstream call; every client gets an answer, and there is no job it was not told of.
 */
const ROOT = path.resolve(__dirname, '..');
const HOLE = { x: 64, y: 64, width: 64, height: 64 };

interface Stack {
  url: string;
  key: string;
  keyId: string;
  /** straight to Postgres and S3, past the proxies: what the test checks with */
  db: Db;
  pg: FaultProxy;
  redis: FaultProxy;
  s3: FaultProxy;
  fake: FakeOpenAI;
  env: Record<string, string>;
  testEnv: TestEnv;
  children: ChildProcess[];
  spawnWorker(): ChildProcess;
  stop(): Promise<void>;
}

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** An upstream that answers every edit after `latencyMs`. */
function withLatency(fake: FakeOpenAI, latencyMs: number): void {
  fake.respondWith(async (ctx) => ({ delayMs: latencyMs, body: await ctx.defaultBody() }), { times: Number.POSITIVE_INFINITY });
}

async function startStack(opts: { workers: number; latencyMs: number; env?: Record<string, string> }): Promise<Stack> {
  const testEnv = await createTestEnv();
  const s3Port = Number(new URL(testEnv.s3.endpoint).port);
  const pg = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(testEnv.databaseUrl).port || 5432) });
  const redis = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(testEnv.env.REDIS_URL!).port || 6379) });
  const s3 = await startFaultProxy({ host: '127.0.0.1', port: s3Port });
  const fake = await startFakeOpenAI();
  withLatency(fake, opts.latencyMs);
  const db = createDb(testEnv.databaseUrl, { poolSize: 2 });
  const key = await createApiKey(db, 'faults');
  const port = await freePort();
  const env: Record<string, string> = {
    ...testEnv.env,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    PORT: String(port),
    DATABASE_URL: pg.url(testEnv.databaseUrl),
    REDIS_URL: redis.url(testEnv.env.REDIS_URL!),
    AWS_ENDPOINT_URL_S3: s3.url(testEnv.s3.endpoint),
    OPENAI_API_KEY: 'sk-upstream',
    OPENAI_BASE_URL: fake.url,
    RECONCILE_INTERVAL_MS: '1000',
    RECONCILE_GRACE_MS: '5000',
    WORKER_LOCK_DURATION_MS: '10000',
    WORKER_STALLED_INTERVAL_MS: '5000',
    DEPENDENCY_RETRY_MAX_MS: '2000',
    JOB_BACKOFF_MS: '200',
    ...opts.env,
  };
  const logFile = openSync(path.join(path.dirname(env.UPLOAD_DIR!), 'processes.log'), 'a');
  const children: ChildProcess[] = [];
  const start = (entry: string) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, entry)], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', logFile, logFile] });
    children.push(child);
    return child;
  };
  start('apps/api/src/main.ts');
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) break;
    if (i > 300) throw new Error('the API did not start');
    await sleep(100);
  }
  const spawnWorker = () => start('apps/worker/src/main.ts');
  for (let i = 0; i < opts.workers; i++) spawnWorker();
  return {
    url,
    key: key.key,
    keyId: key.id,
    db,
    pg,
    redis,
    s3,
    fake,
    env,
    testEnv,
    children,
    spawnWorker,
    async stop() {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      closeSync(logFile);
      await Promise.all([pg.close(), redis.close(), s3.close(), fake.close()]);
      await db.$disconnect();
      await testEnv.cleanup();
    },
  };
}

let inputs: { image: Buffer; mask: Buffer } | undefined;
async function editInputs() {
  inputs ??= { image: await makePng(256, 256), mask: await makeMask(256, 256, HOLE) };
  return inputs;
}

/** One async submission as a client sends it; the answer and how long it took. */
async function submitAsync(s: Stack, prompt = 'a red hat'): Promise<{ status: number; id?: string; ms: number; retryAfter: string | null; code?: string }> {
  const { image, mask } = await editInputs();
  const form = editForm({ prompt, model: 'gpt-image-1', size: '1024x1024' }, [['image', image, 'in.png'], ['mask', mask, 'mask.png']]);
  const started = Date.now();
  const res = await fetch(`${s.url}/v1/images/edits`, { method: 'POST', headers: { authorization: `Bearer ${s.key}`, prefer: 'respond-async' }, body: form, signal: AbortSignal.timeout(30_000) });
  const body = (await res.json()) as { id?: string; error?: { code?: string } };
  return { status: res.status, ms: Date.now() - started, retryAfter: res.headers.get('retry-after'), ...(res.status === 202 ? { id: body.id } : {}), ...(body.error?.code ? { code: body.error.code } : {}) };
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * The promise: every accepted job ends succeeded exactly once (outputs in S3, one usage row), the key
 * has no job beyond those, and (where the upstream cannot be resumed) it was called once per job.
 */
async function expectExactlyOnce(s: Stack, accepted: string[], opts: { upstreamCalls: 'once' | 'at-least-once' } = { upstreamCalls: 'once' }): Promise<void> {
  await until(
    'every accepted job to end',
    async () => (await s.db.job.count({ where: { id: { in: accepted }, status: { in: ['queued', 'in_progress'] } } })) === 0,
    120_000,
  );
  const rows = await s.db.job.findMany({ where: { apiKeyId: s.keyId }, select: { id: true, status: true, error: true, outputs: true } });
  expect(rows.map((r) => r.id).sort()).toEqual([...accepted].sort());
  expect(rows.filter((r) => r.status !== 'succeeded')).toEqual([]);
  expect(await s.db.usage.count({ where: { jobId: { in: accepted } } })).toBe(accepted.length);
  const store = createObjectStore({ endpoint: s.testEnv.s3.endpoint, region: 'us-east-1', bucket: 'test-bucket', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true });
  try {
    for (const row of rows) {
      const listed = await store.listKeys(`jobs/${row.id}/output/`);
      expect(listed.keys).toEqual((row.outputs as { key: string }[]).map((o) => o.key));
    }
  } finally {
    store.destroy();
  }
  const calls = s.fake.requests.filter((r) => r.path.endsWith('/images/edits')).length;
  if (opts.upstreamCalls === 'once') expect(calls).toBe(accepted.length);
  else expect(calls).toBeGreaterThanOrEqual(accepted.length);
}

describe('our own infrastructure failing', () => {
  it('Postgres down 30 s with a backlog: nothing fails, nothing is paid twice; reads and submissions meanwhile answer 503 fast', async () => {
    stack = await startStack({ workers: 2, latencyMs: 400 });
    const s = stack;
    const accepted: string[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await submitAsync(s);
      expect(r.status).toBe(202);
      accepted.push(r.id!);
    }
    await until('jobs running upstream', () => s.fake.requests.length >= 4);
    s.pg.set('refuse');
    const down = Date.now();
    // while it is down: a read and a submission get a fast 503 with Retry-After, and nothing is stored
    await sleep(500);
    const read = await fetch(`${s.url}/v1/jobs/${accepted[0]}`, { headers: { authorization: `Bearer ${s.key}` }, signal: AbortSignal.timeout(10_000) });
    expect(read.status).toBe(503);
    expect(((await read.json()) as { error: { code: string } }).error.code).toBe('service_unavailable');
    const refused = await submitAsync(s);
    expect(refused).toMatchObject({ status: 503, code: 'service_unavailable' });
    expect(refused.retryAfter).not.toBeNull();
    expect(refused.ms).toBeLessThan(5000);
    await sleep(Math.max(0, 30_000 - (Date.now() - down)));
    s.pg.set('up');
    await expectExactlyOnce(s, accepted);
  }, 180_000);

  it('S3 down 10 s with jobs running: answers already paid for are kept and stored once S3 is back', async () => {
    stack = await startStack({ workers: 2, latencyMs: 1500 });
    const s = stack;
    const accepted: string[] = [];
    for (let i = 0; i < 24; i++) accepted.push((await submitAsync(s)).id!);
    await until('jobs running upstream', () => s.fake.requests.length >= 6);
    await s.s3.outage('refuse', 10_000);
    await expectExactlyOnce(s, accepted);
  }, 180_000);

  it('Redis down 45 s during submissions: every submission answers within seconds, every 202 runs once, no job the client was not told about', async () => {
    stack = await startStack({ workers: 2, latencyMs: 200, env: { ENQUEUE_TIMEOUT_MS: '1500' } });
    const s = stack;
    const answers: Awaited<ReturnType<typeof submitAsync>>[] = [];
    const submitFor = async (ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        answers.push(await submitAsync(s));
        await sleep(400);
      }
    };
    await submitFor(3000);
    s.redis.set('refuse');
    // a synchronous (OpenAI-style) submission cannot be waited for: 202 with the job's Location, at once
    const { image, mask } = await editInputs();
    const syncStarted = Date.now();
    const sync = await fetch(`${s.url}/v1/images/edits`, {
      method: 'POST',
      headers: { authorization: `Bearer ${s.key}` },
      body: editForm({ prompt: 'sync while redis is down', model: 'gpt-image-1' }, [['image', image, 'in.png'], ['mask', mask, 'mask.png']]),
      signal: AbortSignal.timeout(30_000),
    });
    expect(sync.status).toBe(202);
    expect(Date.now() - syncStarted).toBeLessThan(5000);
    const syncJob = sync.headers.get('x-job-id')!;
    expect(sync.headers.get('location')).toBe(`/v1/jobs/${syncJob}`);
    await submitFor(45_000 - (Date.now() - syncStarted));
    s.redis.set('up');
    await submitFor(3000);
    expect(answers.length).toBeGreaterThan(20);
    for (const a of answers) {
      expect([202, 503]).toContain(a.status);
      expect(a.ms).toBeLessThan(5000);
    }
    const accepted = answers.flatMap((a) => (a.id ? [a.id] : []));
    expect(accepted.length).toBeGreaterThan(answers.length / 2);
    accepted.push(syncJob);
    await expectExactlyOnce(s, accepted);
  }, 240_000);

  it('a worker SIGKILLed mid-backlog: every job still ends succeeded once (its in-flight calls run again: OpenAI cannot be resumed)', async () => {
    stack = await startStack({ workers: 2, latencyMs: 800 });
    const s = stack;
    const accepted: string[] = [];
    for (let i = 0; i < 16; i++) accepted.push((await submitAsync(s)).id!);
    await until('jobs running upstream', () => s.fake.requests.length >= 4);
    s.children[1]!.kill('SIGKILL');
    await expectExactlyOnce(s, accepted, { upstreamCalls: 'at-least-once' });
  }, 180_000);
});

describe('a synchronous answer across an outage', () => {
  it('S3 down past the tolerance after the upstream answered: what the first try handed back is withdrawn, and the answer is the image the job keeps', async () => {
    stack = await startStack({ workers: 1, latencyMs: 0, env: { DEPENDENCY_OUTAGE_TOLERANCE_MS: '1000', DEPENDENCY_RETRY_MAX_MS: '500' } });
    const s = stack;
    // what happens to each output handed back through Redis, from Redis's own keyspace events (past the proxy)
    const direct = createRedis(s.testEnv.env.REDIS_URL!);
    const listener = createRedis(s.testEnv.env.REDIS_URL!);
    const previous = ((await direct.config('GET', 'notify-keyspace-events')) as string[])[1] ?? '';
    await direct.config('SET', 'notify-keyspace-events', 'Kg$x');
    const channel = `__keyspace@0__:${s.testEnv.prefix}:inline:b64:`;
    const events: string[] = [];
    await listener.psubscribe(`${channel}*`);
    listener.on('pmessage', (_p, _ch, event) => events.push(event));
    try {
      const { image, mask } = await editInputs();
      const release = s.fake.hold();
      const answer = fetch(`${s.url}/v1/images/edits`, {
        method: 'POST',
        headers: { authorization: `Bearer ${s.key}` },
        body: editForm({ prompt: 'a hat', model: 'gpt-image-1', size: '1024x1024' }, [['image', image, 'in.png'], ['mask', mask, 'mask.png']]),
        signal: AbortSignal.timeout(60_000),
      });
      await s.fake.waitForRequests(1);
      // the answer reaches the worker while S3 refuses: it hands the image back, cannot store it, and gives up past the tolerance
      s.s3.set('refuse');
      release();
      await until('the first try to hand back and withdraw its image', () => events.filter((e) => e === 'del').length >= 1, 30_000);
      s.s3.set('up');
      const res = await answer;
      expect(res.status).toBe(200);
      const jobId = res.headers.get('x-job-id')!;
      const b64 = ((await res.json()) as { data: { b64_json: string }[] }).data[0]!.b64_json;
      const row = await s.db.job.findUniqueOrThrow({ where: { id: jobId } });
      expect(row.status).toBe('succeeded');
      const store = createObjectStore({ endpoint: s.testEnv.s3.endpoint, region: 'us-east-1', bucket: 'test-bucket', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true });
      try {
        expect(Buffer.from(b64, 'base64').equals(await store.getBuffer((row.outputs as { key: string }[])[0]!.key))).toBe(true);
      } finally {
        store.destroy();
      }
      await sleep(100);
      // the first try's image: written, then deleted when that try gave up; the committed try's: written, then read once by the answer
      expect(events).toEqual(['set', 'expire', 'del', 'set', 'expire', 'del']);
      expect(s.fake.requests.length).toBe(2);
    } finally {
      listener.disconnect();
      await direct.config('SET', 'notify-keyspace-events', previous);
      direct.disconnect();
    }
  }, 120_000);
});

describe('clients, as they come', () => {
  it('the official OpenAI SDK, 8 sync edits across a database blip: 8 images, 8 jobs, 8 upstream calls', async () => {
    stack = await startStack({ workers: 1, latencyMs: 1500 });
    const s = stack;
    const client = new OpenAI({ apiKey: s.key, baseURL: `${s.url}/v1` });
    const { image, mask } = await editInputs();
    const calls = Array.from({ length: 8 }, async (_, i) =>
      client.images.edit({ model: 'gpt-image-1', prompt: `a hat ${i}`, image: await toFile(image, 'in.png', { type: 'image/png' }), mask: await toFile(mask, 'mask.png', { type: 'image/png' }), size: '1024x1024' }),
    );
    await until('every edit running upstream', () => s.fake.requests.length >= 4);
    await s.pg.outage('refuse', 950);
    const results = await Promise.all(calls);
    for (const r of results) expect(r.data?.[0]?.url ?? r.data?.[0]?.b64_json).toBeTruthy();
    const jobs = await s.db.job.findMany({ where: { apiKeyId: s.keyId }, select: { id: true } });
    expect(jobs).toHaveLength(8);
    await expectExactlyOnce(s, jobs.map((j) => j.id));
  }, 120_000);

  it('client timeouts shorter than the edit: one job per call (OpenAI SDK current and 4.x, Vercel AI SDK)', async () => {
    stack = await startStack({ workers: 1, latencyMs: 5000 });
    const s = stack;
    const { image, mask } = await editInputs();

    // a first edit warms the API process up (its first request loads sharp, multer, the S3 client)
    expect((await submitAsync(s, 'warm-up')).status).toBe(202);

    // current SDK, a per-request timeout: it sends it (X-Stainless-Timeout), we answer 504 + Location before it, and it does not retry
    const current = new OpenAI({ apiKey: s.key, baseURL: `${s.url}/v1` });
    const err = await current.images
      .edit({ model: 'gpt-image-1', prompt: 'current sdk', image: await toFile(image, 'in.png', { type: 'image/png' }), mask: await toFile(mask, 'mask.png', { type: 'image/png' }) }, { timeout: 3000 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const apiErr = err as InstanceType<typeof OpenAI.APIError>;
    expect(apiErr.status).toBe(504);
    const jobId = apiErr.headers?.get('x-job-id');
    expect(apiErr.headers?.get('location')).toBe(`/v1/jobs/${jobId}`);
    expect(apiErr.headers?.get('x-should-retry')).toBe('false');

    // current SDK, a client-wide timeout (not sent): it gives up at 3 s and retries (x-stainless-retry-count): the retries attach to the first job
    const impatient = new OpenAI({ apiKey: s.key, baseURL: `${s.url}/v1`, timeout: 3000, maxRetries: 2 });
    await expect(
      impatient.images.edit({ model: 'gpt-image-1', prompt: 'current sdk, client timeout', image: await toFile(image, 'in.png', { type: 'image/png' }), mask: await toFile(mask, 'mask.png', { type: 'image/png' }) }),
    ).resolves.toMatchObject({ data: [expect.anything()] });

    // 4.x sends its timeout too: 504 + x-job-id before it, and it honours x-should-retry: false
    const v4 = new OpenAIv4({ apiKey: s.key, baseURL: `${s.url}/v1`, timeout: 3000, maxRetries: 2 });
    const v4Err = await v4.images
      .edit({ model: 'gpt-image-1', prompt: 'sdk v4', image: await toFileV4(image, 'in.png', { type: 'image/png' }), mask: await toFileV4(mask, 'mask.png', { type: 'image/png' }) })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(v4Err).toBeInstanceOf(OpenAIv4.APIError);
    expect((v4Err as InstanceType<typeof OpenAIv4.APIError>).status).toBe(504);
    expect((v4Err as InstanceType<typeof OpenAIv4.APIError>).headers?.['x-job-id']).toMatch(/^job_/);

    // Vercel AI SDK (in its own process: it is ESM only), its own abort after 2 s, then the same call
    // again: the second attaches to the first's job and gets its answer
    const dir = path.dirname(s.env.UPLOAD_DIR!);
    writeFileSync(path.join(dir, 'in.png'), image);
    writeFileSync(path.join(dir, 'mask.png'), mask);
    const aiCall = async (extra: Record<string, unknown>) => {
      const args = { apiKey: s.key, baseURL: `${s.url}/v1`, model: 'gpt-image-1', prompt: 'ai sdk', image: path.join(dir, 'in.png'), mask: path.join(dir, 'mask.png'), maxRetries: 0, ...extra };
      const { stdout } = await promisify(execFile)(process.execPath, [path.join(__dirname, 'clients/ai-sdk-edit.mjs'), JSON.stringify(args)], { cwd: ROOT });
      return JSON.parse(stdout.trim().split('\n').pop()!) as { ok: boolean; name?: string; status?: number | null };
    };
    expect(await aiCall({ timeoutMs: 2000 })).toMatchObject({ ok: false });
    // gpt-image answers b64_json by default, the only form the AI SDK reads
    const retried = await aiCall({});
    expect(retried).toMatchObject({ ok: true });

    const prompts = (await s.db.job.findMany({ where: { apiKeyId: s.keyId }, select: { params: true } })).map((j) => (j.params as { prompt: string }).prompt).sort();
    expect(prompts).toEqual(['ai sdk', 'current sdk', 'current sdk, client timeout', 'sdk v4', 'warm-up']);
    const all = await s.db.job.findMany({ where: { apiKeyId: s.keyId }, select: { id: true } });
    await expectExactlyOnce(s, all.map((j) => j.id));
  }, 120_000);
});
