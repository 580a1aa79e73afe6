import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type RunningApi, startApi } from '@image-edits/api';
import { createApiKey, type KeySettingsPatch } from '@image-edits/db';
import { createRedis } from '@image-edits/queue';
import { makePng, startTestService, type TestService } from '@image-edits/testing';
import type { Redis } from 'ioredis';
import { editForm, get, pollJob } from './helpers';

/**
 * Per-key limits across two API processes sharing one Redis (as any number of replicas would):
 * requests and images per minute (429 rate_limit_exceeded, OpenAI's x-ratelimit-* headers,
 * retry-after), the monthly budget (429 insufficient_quota), and a batch admitted whole whose
 * children the worker paces by the key's images per minute without refusing them or spending
 * attempts. Real API processes, worker, Postgres, Redis and S3.
 */

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field
type Json = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let svc: TestService;
let second: RunningApi;
let redis: Redis;
let png: Buffer;

beforeAll(async () => {
  svc = await startTestService({
    MODEL_REGISTRY: JSON.stringify({ models: { 'local-inpaint': { family: 'local', targets: [{ provider: 'local', model: 'local-inpaint' }], price: { perImage: 0.01 } } } }),
  });
  // a second API process on the same configuration: the same Redis and prefix
  second = await startApi(svc.config);
  redis = createRedis(svc.testEnv.env.REDIS_URL!);
  png = await makePng(32, 32, { hole: { x: 8, y: 8, width: 8, height: 8 } });
});
afterAll(async () => {
  redis?.disconnect();
  await second?.close();
  await svc?.stop();
});

const key = async (name: string, settings: KeySettingsPatch) => (await createApiKey(svc.db, name, settings)).key;

async function edit(base: string, apiKey: string, fields: Record<string, string> = {}, headers: Record<string, string> = { prefer: 'respond-async' }) {
  const res = await fetch(`${base}/v1/images/edits`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, ...headers },
    body: editForm({ prompt: 'fill', model: 'local-inpaint', response_format: 'url', ...fields }, [['image', png, 'in.png']]),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Json };
}

const limitHeaders = (h: Headers) => Object.fromEntries([...h.entries()].filter(([k]) => k.startsWith('x-ratelimit-') || k === 'retry-after'));

async function createBatch(base: string, apiKey: string, lines: number): Promise<{ status: number; headers: Headers; body: Json }> {
  const auth = { authorization: `Bearer ${apiKey}` };
  const line = (i: number) => JSON.stringify({ custom_id: `c${i}`, method: 'POST', url: '/v1/images/edits', body: { model: 'local-inpaint', prompt: 'x', images: [{ image_url: `data:image/png;base64,${png.toString('base64')}` }], response_format: 'url' } });
  const input = new FormData();
  input.append('purpose', 'batch');
  input.append('file', new Blob([`${Array.from({ length: lines }, (_, i) => line(i)).join('\n')}\n`], { type: 'application/jsonl' }), 'in.jsonl');
  const file = (await (await fetch(`${base}/v1/files`, { method: 'POST', headers: auth, body: input })).json()) as Json;
  const res = await fetch(`${base}/v1/batches`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/images/edits', completion_window: '24h' }),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Json };
}

describe('requests per minute', () => {
  it('is one limit across both API processes: 429 rate_limit_exceeded with retry-after once it is spent', async () => {
    const k = await key('rpm', { requestsPerMinute: 4 });
    const apis = [svc.url, second.url];
    const remaining: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await edit(apis[i % 2]!, k);
      expect(res.status).toBe(202);
      expect(res.headers.get('x-ratelimit-limit-requests')).toBe('4');
      expect(res.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+(ms|s)$|^\d+m\d+s$/);
      remaining.push(res.headers.get('x-ratelimit-remaining-requests')!);
    }
    expect(remaining).toEqual(['3', '2', '1', '0']);
    for (const base of apis) {
      const refused = await edit(base, k);
      expect(refused.status).toBe(429);
      expect(refused.body.error).toMatchObject({ code: 'rate_limit_exceeded', type: 'requests' });
      expect(refused.body.error.message).toContain('Limit 4');
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(Number(refused.headers.get('retry-after'))).toBeLessThanOrEqual(15);
      expect(refused.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    }
    // nothing was stored for the refused ones
    expect(await svc.db.job.count({ where: { apiKey: { name: 'rpm' } } })).toBe(4);
    // a key without limits gets no limit headers
    const free = await edit(svc.url, svc.apiKey);
    expect(limitHeaders(free.headers)).toEqual({});
  });

  it('counts a batch creation as one request', async () => {
    const k = await key('rpm-batch', { requestsPerMinute: 2 });
    // the file upload is not a limited endpoint; the batch is
    const first = await createBatch(svc.url, k, 1);
    expect(first.status).toBe(200);
    expect(first.headers.get('x-ratelimit-remaining-requests')).toBe('1');
    expect((await edit(second.url, k)).status).toBe(202);
    const refused = await createBatch(second.url, k, 1);
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('rate_limit_exceeded');
  });
});

describe('images per minute', () => {
  it('takes the n of each edit across both processes, gives back what created nothing, and refuses a request too large', async () => {
    const k = await key('ipm', { imagesPerMinute: 3 });
    const a = await edit(svc.url, k, { n: '2' });
    expect(a.status).toBe(202);
    expect(limitHeaders(a.headers)).toMatchObject({ 'x-ratelimit-limit-images': '3', 'x-ratelimit-remaining-images': '1' });
    expect(a.headers.get('x-ratelimit-limit-requests')).toBeNull();
    const b = await edit(second.url, k, { n: '2' });
    expect(b.status).toBe(429);
    expect(b.body.error).toMatchObject({ code: 'rate_limit_exceeded', type: 'images' });
    expect(Number(b.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(b.headers.get('x-ratelimit-remaining-images')).toBe('1');
    // an invalid edit creates nothing: its image comes back
    const invalid = await edit(second.url, k, { n: '1', quality: 'ultra' });
    expect(invalid.status).toBe(400);
    await sleep(100);
    const c = await edit(svc.url, k, { n: '1' });
    expect(c.status).toBe(202);
    expect(c.headers.get('x-ratelimit-remaining-images')).toBe('0');
    // n above the key's minute can never fit
    const huge = await edit(svc.url, k, { n: '4' });
    expect(huge.status).toBe(429);
    expect(huge.body.error).toMatchObject({ code: 'rate_limit_exceeded', param: 'n' });
    expect(huge.body.error.message).toContain('Request too large');
  });
});

describe('the monthly budget', () => {
  it('refuses new work with 429 insufficient_quota once the month\'s usage reaches it', async () => {
    const { key: k, id } = await createApiKey(svc.db, 'budget', { monthlyBudgetUsd: 0.015 });
    const first = await edit(svc.url, k, {}, {});
    expect(first.status).toBe(200);
    // the month-to-date spend is cached for a few seconds (every process reads the same figure): forget it
    await redis.del(`${svc.testEnv.prefix}:spend:${id}:${new Date().toISOString().slice(0, 7)}`);
    const second_ = await edit(second.url, k, {}, {});
    expect(second_.status).toBe(200);
    await redis.del(`${svc.testEnv.prefix}:spend:${id}:${new Date().toISOString().slice(0, 7)}`);
    for (const base of [svc.url, second.url]) {
      const refused = await edit(base, k);
      expect(refused.status).toBe(429);
      expect(refused.body.error).toMatchObject({ code: 'insufficient_quota', type: 'insufficient_quota' });
      expect(refused.body.error.message).toContain('$0.02');
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(refused.headers.get('x-should-retry')).toBe('false');
    }
    const batch = await createBatch(svc.url, k, 1);
    expect(batch.status).toBe(429);
    expect(batch.body.error.code).toBe('insufficient_quota');
  });
});

describe('a batch under an images-per-minute limit', () => {
  it('is admitted whole; its children are paced by the key\'s ipm, none refused, no attempt spent', async () => {
    const ipm = 6;
    const k = await key('paced', { imagesPerMinute: ipm });
    const started = Date.now();
    const created = await createBatch(svc.url, k, ipm + 1);
    expect(created.status).toBe(200);
    let batch: Json;
    for (const end = Date.now() + 45_000; ; await sleep(200)) {
      batch = (await get(`${svc.url}/v1/batches/${created.body.id}`, k)).body;
      if (batch.status === 'completed') break;
      if (Date.now() > end) throw new Error(`batch still ${batch.status} ${JSON.stringify(batch.request_counts)}`);
    }
    expect(batch.request_counts).toEqual({ total: ipm + 1, completed: ipm + 1, failed: 0 });
    const children = await svc.db.job.findMany({ where: { batchId: created.body.id }, orderBy: { startedAt: 'asc' } });
    for (const c of children) expect(c.attempts).toBe(1);
    // the first ipm ran at once; the last waited for a token (60 s / ipm)
    const starts = children.map((c) => c.startedAt!.getTime() - started);
    expect(starts[ipm]! - starts[0]!).toBeGreaterThanOrEqual((60_000 / ipm) * 0.8);
    // the children drew on their own pool: the key's direct edits are not refused
    const direct = await edit(second.url, k);
    expect(direct.status).toBe(202);
    expect(direct.headers.get('x-ratelimit-remaining-images')).toBe(String(ipm - 1));
    await pollJob(svc.url, k, direct.body.id);
  });
});
