import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from '@jest/globals';
import { newId } from '@image-edits/core';
import { createApiKey, createDb, setKeyConcurrencyLimit } from '@image-edits/db';
import { createEditQueue, createRedis, editQueueName, fairKeys, fairPriority, LANE_RESET_QUIET_MS, LaneModel } from '@image-edits/queue';
import { createTestEnv, type FakeOpenAI, makeMask, makePng, startFakeOpenAI, startTestService, type TestEnv, type TestService } from '@image-edits/testing';
import { Queue } from 'bullmq';
import { keyConcurrencyLimits } from '../apps/worker/src/key-limits';
import { editForm, pollJob, post } from './helpers';

/**
 * Fairness between API keys on one provider queue: a newcomer's job overtakes another key's
 * backlog, batch children (a real 2,000-line batch through the Files and Batch APIs) yield to direct submissions, a per-key cap holds across workers, and no
 * slot outlives a killed worker. Real API, worker, Postgres, Redis and S3; the provider is a fake
 * OpenAI on loopback that answers after a fixed latency.
 */
const ROOT = path.resolve(__dirname, '..');
const LATENCY_MS = 400;
const REGISTRY = JSON.stringify({ providers: { openai: { concurrency: 2 } } });
const QUEUE = editQueueName('openai');

let svc: TestService | undefined;
let env: TestEnv | undefined;
let fake: FakeOpenAI | undefined;
const children: ChildProcess[] = [];
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  for (const close of closers.splice(0).reverse()) await close();
  await svc?.stop();
  await env?.cleanup();
  await fake?.close();
  svc = undefined;
  env = undefined;
  fake = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(50);
  }
}

/** Runs `fn` over `items`, `n` at a time. */
async function pool<T, R>(n: number, items: T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

let images: [string, Buffer, string][] | undefined;
async function form(prompt: string): Promise<FormData> {
  images ??= [
    ['image', await makePng(64, 64), 'in.png'],
    ['mask', await makeMask(64, 64, { x: 16, y: 16, width: 16, height: 16 }), 'mask.png'],
  ];
  return editForm({ prompt, model: 'dall-e-2', size: '256x256' }, images);
}

/** Through the API, as clients do: 202 and the job's id. */
async function submitAsync(s: TestService, key: string, prompt: string): Promise<string> {
  const res = await post(`${s.url}/v1/images/edits`, key, await form(prompt), { prefer: 'respond-async' });
  expect(res.status).toBe(202);
  return res.body.id as string;
}

/** A fake OpenAI that answers after LATENCY_MS and counts, per prompt, how many requests it holds at once. */
async function slowProvider(): Promise<{ fake: FakeOpenAI; peak: Record<string, number>; now: Record<string, number>; done: string[] }> {
  const f = await startFakeOpenAI({ apiKey: 'sk-upstream' });
  const now: Record<string, number> = {};
  const peak: Record<string, number> = {};
  const done: string[] = [];
  f.respondWith(
    async ({ request }) => {
      const who = String(request.fields.prompt);
      now[who] = (now[who] ?? 0) + 1;
      peak[who] = Math.max(peak[who] ?? 0, now[who]!);
      peak.all = Math.max(peak.all ?? 0, Object.entries(now).reduce((n, [k, v]) => (k === 'all' ? n : n + v), 0));
      await sleep(LATENCY_MS);
      now[who]!--;
      done.push(who);
      return undefined;
    },
    { times: Infinity },
  );
  return { fake: f, peak, now, done };
}

const upstream = (f: FakeOpenAI, extra: Record<string, string> = {}) => ({ OPENAI_API_KEY: 'sk-upstream', OPENAI_BASE_URL: f.url, MODEL_REGISTRY: REGISTRY, ...extra });

const countStatus = (s: TestService, apiKeyId: string, status: 'queued' | 'succeeded') => s.db.job.count({ where: { apiKeyId, status } });

describe('places in line (the Redis scripts, no worker)', () => {
  it('match the reference rule, give removed places back, and start a drained lane again at 0', async () => {
    env = await createTestEnv();
    const redis = createRedis(env.env.REDIS_URL!);
    const queue = createEditQueue({ redisUrl: env.env.REDIS_URL!, prefix: env.prefix }, redis);
    const bull = new Queue(QUEUE, { connection: redis, prefix: env.prefix });
    closers.push(() => redis.disconnect(), () => queue.close(), () => bull.close());
    const priorityOf = async (jobId: string) => (await bull.getJob(jobId))!.priority;
    const model = new LaneModel();
    const expected: number[] = [];
    const ids: string[] = [];
    const add = async (apiKeyId: string, count: number, batch = false) => {
      const batchIds = Array.from({ length: count }, () => newId('job'));
      ids.push(...batchIds);
      expected.push(...model.enqueue(batch ? 'batch' : 'direct', apiKeyId, count));
      if (count === 1) await queue.enqueue('openai', { jobId: batchIds[0]!, apiKeyId, ...(batch ? { batch } : {}) });
      else await queue.enqueueMany('openai', batchIds.map((jobId) => ({ jobId, apiKeyId, ...(batch ? { batch } : {}) })));
    };
    await add('key_a', 5);
    await add('key_b', 1);
    await add('key_a', 1);
    await add('key_a', 3, true);
    await add('key_c', 2, true);
    expect(await Promise.all(ids.map(priorityOf))).toEqual(expected);
    expect(expected.slice(0, 7)).toEqual([1, 2, 3, 4, 5, 1, 6]);

    // a canceled job leaves the line: the key's next job takes its place at the back
    await queue.remove('openai', { jobId: ids[6]! });
    const again = newId('job');
    await queue.enqueue('openai', { jobId: again, apiKeyId: 'key_a' });
    expect(await priorityOf(again)).toBe(6);

    // a lane with jobs waiting keeps counting, however long it was quiet
    await sleep(LANE_RESET_QUIET_MS + 200);
    const later = newId('job');
    await queue.enqueue('openai', { jobId: later, apiKeyId: 'key_a' });
    expect(await priorityOf(later)).toBe(7);

    // once the lane is empty (and quiet) it starts again at 0: priorities stay bounded
    for (const id of [...ids.slice(0, 6), again, later]) await queue.remove('openai', { jobId: id });
    await sleep(LANE_RESET_QUIET_MS + 200);
    const fresh = newId('job');
    await queue.enqueue('openai', { jobId: fresh, apiKeyId: 'key_a' });
    expect(await priorityOf(fresh)).toBe(1);
    // the batch lane was not empty: it keeps its count
    const child = newId('job');
    await queue.enqueue('openai', { jobId: child, apiKeyId: 'key_c', batch: true });
    expect(await priorityOf(child)).toBe(fairPriority('batch', 2));
  });
});

describe('through the service', () => {
  it("another key's direct submission completes within a few provider latencies while one key has 2,000 jobs queued", async () => {
    const p = await slowProvider();
    fake = p.fake;
    svc = await startTestService(upstream(fake));
    const s = svc;
    const keyB = await s.newKey('B');
    const started = Date.now();
    await pool(40, Array.from({ length: 2000 }, (_, i) => i), () => submitAsync(s, s.apiKey, 'A'));
    const enqueueMs = Date.now() - started;
    expect(await countStatus(s, s.apiKeyId, 'queued')).toBeGreaterThan(1900);

    const t0 = Date.now();
    const res = await post(`${s.url}/v1/images/edits`, keyB, await form('B'));
    const tookMs = Date.now() - t0;
    expect(res.status).toBe(200);
    expect(res.body.data).toHaveLength(1);
    // one slot to free up, one call of its own, and some slack; never A's backlog (2,000 × 400 ms / 2)
    expect(tookMs).toBeLessThan(4 * LATENCY_MS + 1000);
    expect(await countStatus(s, s.apiKeyId, 'queued')).toBeGreaterThan(1900);
    console.info(`fairness: 2,000 jobs submitted over HTTP in ${enqueueMs} ms; key B's sync edit took ${tookMs} ms with ${LATENCY_MS} ms provider latency`);
  }, 180_000);

  it("with key A's 2,000-line batch fanned out behind the slow provider, key B's and key A's own direct edits complete within a few provider latencies", async () => {
    const p = await slowProvider();
    fake = p.fake;
    svc = await startTestService(upstream(fake));
    const s = svc;
    const keyB = await s.newKey('B');
    const call = async (method: string, route: string, key: string, body?: unknown) => {
      const res = await fetch(`${s.url}${route}`, { method, headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
      expect(res.status).toBe(200);
      return (await res.json()) as { id: string; status: string; request_counts: { total: number; completed: number; failed: number } };
    };
    const upload = async (bytes: Buffer | string, name: string, purpose: string) => {
      const f = new FormData();
      f.append('purpose', purpose);
      f.append('file', new Blob([typeof bytes === 'string' ? bytes : new Uint8Array(bytes)]), name);
      const res = await fetch(`${s.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${s.apiKey}` }, body: f });
      expect(res.status).toBe(200);
      return ((await res.json()) as { id: string }).id;
    };
    const image = await upload(await makePng(64, 64), 'in.png', 'vision');
    const mask = await upload(await makeMask(64, 64, { x: 16, y: 16, width: 16, height: 16 }), 'mask.png', 'vision');
    const body = { model: 'dall-e-2', prompt: 'child', size: '256x256', images: [{ file_id: image }], mask: { file_id: mask } };
    const lines = Array.from({ length: 2000 }, (_, i) => JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/images/edits', body }));
    const input = await upload(`${lines.join('\n')}\n`, 'input.jsonl', 'batch');
    const created = await call('POST', '/v1/batches', s.apiKey, { input_file_id: input, endpoint: '/v1/images/edits', completion_window: '24h' });

    // fanned out: 2,000 children in Postgres, nearly all of them still waiting for the provider
    await until(async () => (await s.db.job.count({ where: { batchId: created.id } })) === 2000, 120_000);
    const batch = await call('GET', `/v1/batches/${created.id}`, s.apiKey);
    expect(batch).toMatchObject({ status: 'in_progress', request_counts: { total: 2000, failed: 0 } });
    await until(() => p.done.includes('child'));
    const queuedBefore = await s.db.job.count({ where: { batchId: created.id, status: 'queued' } });
    expect(queuedBefore).toBeGreaterThan(1900);

    const t0 = Date.now();
    const [b, a] = await Promise.all([post(`${s.url}/v1/images/edits`, keyB, await form('B-direct')), post(`${s.url}/v1/images/edits`, s.apiKey, await form('A-direct'))]);
    const tookMs = Date.now() - t0;
    expect([b.status, a.status]).toEqual([200, 200]);
    expect(b.body.data).toHaveLength(1);
    // a slot to free up, their own calls (two slots), slack; never the batch (2,000 × 400 ms / 2 slots)
    expect(tookMs).toBeLessThan(4 * LATENCY_MS + 1000);
    expect(await s.db.job.count({ where: { batchId: created.id, status: 'queued' } })).toBeGreaterThan(1900);
    console.info(`fairness: 2,000-line batch fanned out; keys B and A's direct edits took ${tookMs} ms with ${LATENCY_MS} ms provider latency`);

    // the batch is not starved either: it carries on afterwards
    const doneBefore = p.done.filter((w) => w === 'child').length;
    await until(() => p.done.filter((w) => w === 'child').length > doneBefore + 2);
  }, 240_000);

  it("a cap of 1 keeps key A to one running job at a time while key B's jobs use the other slot, without spending attempts", async () => {
    const p = await slowProvider();
    fake = p.fake;
    svc = await startTestService(upstream(fake));
    const s = svc;
    expect(await setKeyConcurrencyLimit(s.db, s.apiKeyId, 1)).toBe(true);
    const keyB = await s.newKey('B');
    const aIds = await pool(10, Array.from({ length: 10 }), () => submitAsync(s, s.apiKey, 'A'));
    const bIds = await pool(4, Array.from({ length: 4 }), () => submitAsync(s, keyB, 'B'));
    const jobs = await Promise.all([...aIds, ...bIds].map((id, i) => pollJob(s.url, i < aIds.length ? s.apiKey : keyB, id, 60_000)));
    expect(jobs.map((j) => j.status)).toEqual(jobs.map(() => 'succeeded'));
    // parked jobs went back in line without spending an attempt
    expect(jobs.map((j) => j.attempts)).toEqual(jobs.map(() => 1));
    expect(p.peak.A).toBe(1);
    expect(p.peak.all).toBe(2);
    // B was not queued behind A's ten (10 × 400 ms one at a time): its four ran beside them
    expect(p.done.lastIndexOf('B')).toBeLessThan(p.done.lastIndexOf('A'));
    expect(p.done.indexOf('B')).toBeLessThan(4);

    const redis = createRedis(s.testEnv.env.REDIS_URL!);
    closers.push(() => redis.disconnect());
    const k = fairKeys(s.testEnv.prefix, QUEUE);
    expect(await redis.zcard(k.running(s.apiKeyId))).toBe(0);
    expect(await redis.zcard(k.parked(s.apiKeyId))).toBe(0);
    expect(await redis.smembers(k.parkedKeys)).toEqual([]);
  }, 120_000);

  it('a killed worker leaks no slot: its lease lapses, parked jobs are woken, the lane starts again at 0', async () => {
    fake = await startFakeOpenAI({ apiKey: 'sk-upstream' });
    const release = fake.hold();
    svc = await startTestService(upstream(fake, { WORKER_LOCK_DURATION_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000' }), { worker: false });
    const s = svc;
    const capped = await createApiKey(s.db, 'capped', { maxConcurrentJobs: 1 });
    const spawnWorker = () => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'apps/worker/src/main.ts')], { cwd: ROOT, env: { ...process.env, ...s.testEnv.env }, stdio: ['ignore', 'ignore', 'inherit'] });
      children.push(child);
      return child;
    };
    const redis = createRedis(s.testEnv.env.REDIS_URL!);
    closers.push(() => redis.disconnect());
    const k = fairKeys(s.testEnv.prefix, QUEUE);

    const first = spawnWorker();
    const ids = await pool(3, Array.from({ length: 3 }), () => submitAsync(s, capped.key, 'A'));
    await until(() => fake!.requests.length === 1);
    // one job holds the key's only slot; the other two were parked, not run
    await until(async () => (await redis.zcard(k.parked(capped.id))) === 2);
    expect(await redis.zcard(k.running(capped.id))).toBe(1);

    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    release();
    spawnWorker();
    const done = await Promise.all(ids.map((id) => pollJob(s.url, capped.key, id, 60_000)));
    expect(done.map((j) => j.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    // the killed one ran twice (its provider call was cut); the parked ones once
    expect(done.map((j) => j.attempts).sort()).toEqual([1, 1, 2]);
    expect(await redis.zcard(k.running(capped.id))).toBe(0);
    expect(await redis.zcard(k.parked(capped.id))).toBe(0);

    // nothing waiting: after a quiet moment the next job is first in line again
    await sleep(LANE_RESET_QUIET_MS + 200);
    fake.reset();
    const next = await submitAsync(s, capped.key, 'A');
    const bull = new Queue(QUEUE, { connection: redis, prefix: s.testEnv.prefix });
    closers.push(() => bull.close());
    const job = await bull.getJob(next);
    expect(job?.priority).toBe(1);
    expect((await pollJob(s.url, capped.key, next)).status).toBe('succeeded');
  }, 120_000);
});

it('workers read a changed cap within seconds (the CLI `set` path)', async () => {
  env = await createTestEnv();
  const db = createDb(env.databaseUrl, { poolSize: 1 });
  closers.push(() => db.$disconnect());
  const key = await createApiKey(db, 'k', { maxConcurrentJobs: 3 });
  const capFor = keyConcurrencyLimits(db, 8, 50);
  expect(await capFor(key.id)).toBe(3);
  await setKeyConcurrencyLimit(db, key.id, null);
  await sleep(60);
  expect(await capFor(key.id)).toBe(8);
  await setKeyConcurrencyLimit(db, key.id, 0);
  await sleep(60);
  expect(await capFor(key.id)).toBe(0);
  await expect(setKeyConcurrencyLimit(db, key.id, -1)).rejects.toThrow(RangeError);
});
