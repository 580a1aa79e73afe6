import { readFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createEditQueue, createRedis } from '@image-edits/queue';
import { type FakeOpenAI, makeMask, makePng, openAIError, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import path from 'node:path';
import { editForm, get, pollJob, post } from './helpers';

/**
 * The worker's Prometheus endpoint (WORKER_METRICS_PORT, METRICS_TOKEN), scraped after real edits:
 * local-inpaint, a fake OpenAI that fails (400, 500s, 429) and an Azure fake it falls back to, a
 * webhook receiver, a batch whose input is refused. Real API, worker, Postgres, Redis and S3.
 */
const TOKEN = 'metrics-token-for-tests';
let svc: TestService;
let openai: FakeOpenAI;
let azure: FakeOpenAI;
let receiver: http.Server;
let receiverUrl: string;
let metricsUrl: string;
let png: Buffer;
let mask: Buffer;

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  openai = await startFakeOpenAI({ apiKey: 'sk-upstream' });
  azure = await startFakeOpenAI({ azure: { apiKey: 'azure-key' } });
  receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  const port = await freePort();
  svc = await startTestService({
    WORKER_METRICS_PORT: String(port),
    METRICS_TOKEN: TOKEN,
    OPENAI_API_KEY: 'sk-upstream',
    OPENAI_BASE_URL: openai.url,
    AZURE_OPENAI_ENDPOINT: azure.origin,
    AZURE_OPENAI_API_KEY: 'azure-key',
    AZURE_OPENAI_DEPLOYMENTS: 'gpt-image-1=img-deployment',
    WEBHOOK_ALLOW_PRIVATE: 'true',
    // two tries per target, quick backoff; openai runs one job at a time (the queue-depth test fills it)
    MODEL_REGISTRY: JSON.stringify({ providers: { openai: { attempts: 2, backoffMs: 50, concurrency: 1 }, 'azure-openai': { attempts: 2, backoffMs: 50 } } }),
  });
  metricsUrl = `http://127.0.0.1:${port}/metrics`;
  png = await makePng(64, 64, { hole: { x: 16, y: 16, width: 16, height: 16 } });
  mask = await makeMask(64, 64, { x: 16, y: 16, width: 16, height: 16 });
});

afterAll(async () => {
  await svc?.stop();
  await Promise.all([openai?.close(), azure?.close(), new Promise((resolve) => receiver?.close(resolve))]);
});

const submit = (fields: Record<string, string>) =>
  post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'a red balloon', ...fields }, [['image', png, 'in.png'], ['mask', mask, 'mask.png']]), { prefer: 'respond-async' });

async function scrape(): Promise<string> {
  const res = await fetch(metricsUrl, { headers: { authorization: `Bearer ${TOKEN}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return res.text();
}

/** The value of the sample `name` whose labels include `labels` (undefined when there is none). */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** Counters move after the job's row does: wait for the scrape to show it. */
async function eventually(name: string, labels: Record<string, string>, atLeast = 1): Promise<string> {
  const end = Date.now() + 10_000;
  for (;;) {
    const text = await scrape();
    if ((value(text, name, labels) ?? 0) >= atLeast) return text;
    if (Date.now() > end) throw new Error(`${name}${JSON.stringify(labels)} never reached ${atLeast}:\n${text.split('\n').filter((l) => l.startsWith(name)).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('the worker metrics endpoint', () => {
  it('requires METRICS_TOKEN as a bearer token', async () => {
    expect(svc.worker?.metricsUrl).toBe(metricsUrl);
    const none = await fetch(metricsUrl);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe('invalid_metrics_token');
    expect((await fetch(metricsUrl, { headers: { authorization: `Bearer ${TOKEN}x` } })).status).toBe(401);
    expect((await fetch(metricsUrl, { headers: { authorization: TOKEN } })).status).toBe(401);
    expect((await fetch(metricsUrl.replace('/metrics', '/other'), { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(404);
    const text = await scrape();
    // the process's own metrics, the worker's slots and byte budget
    expect(value(text, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(value(text, 'image_edits_worker_slots', { provider: 'openai' })).toBe(1);
    expect(value(text, 'image_edits_inflight_bytes')).toBe(0);
    expect(value(text, 'image_edits_inflight_bytes_limit')).toBe(svc.config.env.WORKER_MAX_INFLIGHT_BYTES);
  });

  it('counts a local-inpaint edit: finished, queue wait, run time, provider call, its webhook', async () => {
    const res = await submit({ model: 'local-inpaint', webhook_url: receiverUrl });
    expect(res.status).toBe(202);
    expect((await pollJob(svc.url, svc.apiKey, res.body.id)).status).toBe('succeeded');
    const text = await eventually('image_edits_webhook_deliveries_total', { outcome: 'delivered' });
    expect(value(text, 'image_edits_jobs_finished_total', { status: 'succeeded', provider: 'local', model: 'local-inpaint', code: '' })).toBe(1);
    expect(value(text, 'image_edits_job_queue_wait_seconds_count', { provider: 'local', lane: 'direct' })).toBe(1);
    expect(value(text, 'image_edits_job_run_seconds_count', { provider: 'local', model: 'local-inpaint', outcome: 'succeeded' })).toBe(1);
    expect(value(text, 'image_edits_provider_call_seconds_count', { provider: 'local', model: 'local-inpaint', outcome: 'ok' })).toBe(1);
    expect(value(text, 'image_edits_webhook_attempt_seconds_count', { outcome: 'delivered' })).toBe(1);
    expect(value(text, 'image_edits_inflight_bytes')).toBe(0);
  });

  it('counts a refused edit by its error code, retries and the fallback to the next target', async () => {
    openai.respondWith(openAIError(400, 'Your request was rejected by the safety system', { code: 'moderation_blocked' }));
    const refused = await submit({ model: 'openai/gpt-image-1' });
    const failed = await pollJob(svc.url, svc.apiKey, refused.body.id);
    expect(failed.status).toBe('failed');
    let text = await eventually('image_edits_jobs_finished_total', { status: 'failed', provider: 'openai', code: 'content_policy_violation' });
    expect(value(text, 'image_edits_jobs_finished_total', { status: 'failed', provider: 'openai', model: failed.model, code: 'content_policy_violation' })).toBe(1);
    expect(value(text, 'image_edits_provider_errors_total', { provider: 'openai', code: 'content_policy_violation', retryable: 'false' })).toBe(1);
    expect(value(text, 'image_edits_provider_call_seconds_count', { provider: 'openai', outcome: 'content_policy_violation' })).toBe(1);
    expect(value(text, 'image_edits_job_run_seconds_count', { provider: 'openai', outcome: 'failed' })).toBe(1);

    // OpenAI answers 500 twice (its two tries), Azure takes over
    openai.respondWith(openAIError(500, 'The server had an error while processing your request'), { times: 2 });
    const moved = await submit({ model: 'gpt-image-1' });
    const done = await pollJob(svc.url, svc.apiKey, moved.body.id);
    expect(done).toMatchObject({ status: 'succeeded', provider: 'azure-openai' });
    text = await eventually('image_edits_jobs_finished_total', { status: 'succeeded', provider: 'azure-openai' });
    expect(value(text, 'image_edits_provider_errors_total', { provider: 'openai', code: 'upstream_error', retryable: 'true' })).toBe(2);
    expect(value(text, 'image_edits_job_retries_total', { provider: 'openai', code: 'upstream_error' })).toBe(1);
    expect(value(text, 'image_edits_job_fallbacks_total', { from: 'openai', to: 'azure-openai', code: 'upstream_error' })).toBe(1);
    expect(value(text, 'image_edits_job_run_seconds_count', { provider: 'openai', outcome: 'retry' })).toBe(1);
    expect(value(text, 'image_edits_job_run_seconds_count', { provider: 'openai', outcome: 'fallback' })).toBe(1);
    expect(value(text, 'image_edits_jobs_finished_total', { status: 'succeeded', provider: 'azure-openai', model: 'gpt-image-1' })).toBe(1);
    // queue wait is the job's first start only (on openai), not its move to azure
    expect(value(text, 'image_edits_job_queue_wait_seconds_count', { provider: 'azure-openai', lane: 'direct' })).toBeUndefined();
  });

  it('counts a 429 that paused the queue, and the wait it asked for', async () => {
    openai.respondWith(openAIError(429, 'Rate limit reached for images', { code: 'rate_limit_exceeded', headers: { 'retry-after': '1' } }));
    const res = await submit({ model: 'openai/gpt-image-1' });
    expect((await pollJob(svc.url, svc.apiKey, res.body.id)).status).toBe('succeeded');
    const text = await eventually('image_edits_rate_limit_waits_total', { provider: 'openai' });
    expect(value(text, 'image_edits_rate_limit_wait_seconds_total', { provider: 'openai' })).toBe(1);
    expect(value(text, 'image_edits_job_run_seconds_count', { provider: 'openai', outcome: 'rate_limited' })).toBe(1);
    expect(value(text, 'image_edits_provider_errors_total', { provider: 'openai', code: 'rate_limited' })).toBe(1);
  });

  it('reads queue depth per provider, lane and state at scrape time', async () => {
    const release = openai.hold();
    const redis = createRedis(svc.config.env.REDIS_URL);
    const queue = createEditQueue({ redisUrl: svc.config.env.REDIS_URL, prefix: svc.testEnv.prefix }, redis);
    try {
      const running = await submit({ model: 'openai/gpt-image-1' });
      await openai.waitForRequests(openai.requests.length + 1);
      const waiting = await submit({ model: 'openai/gpt-image-1' });
      // a batch child in line behind it (no row: the worker skips it when its turn comes)
      await queue.enqueue('openai', { jobId: 'job_metricsbatchlane', apiKeyId: svc.apiKeyId, batch: true });
      const text = await scrape();
      expect(value(text, 'image_edits_queue_jobs', { provider: 'openai', lane: 'direct', state: 'active' })).toBe(1);
      expect(value(text, 'image_edits_queue_jobs', { provider: 'openai', lane: 'direct', state: 'prioritized' })).toBe(1);
      expect(value(text, 'image_edits_queue_jobs', { provider: 'openai', lane: 'batch', state: 'prioritized' })).toBe(1);
      expect(value(text, 'image_edits_queue_jobs', { provider: 'openai', lane: 'batch', state: 'active' })).toBe(0);
      expect(value(text, 'image_edits_queue_jobs', { provider: 'openai', lane: 'any', state: 'delayed' })).toBe(0);
      expect(value(text, 'image_edits_queue_jobs', { provider: 'local', lane: 'direct', state: 'prioritized' })).toBe(0);
      // the running job's images are held
      expect(value(text, 'image_edits_inflight_bytes')).toBeGreaterThan(0);
      release();
      for (const id of [running.body.id, waiting.body.id]) expect((await pollJob(svc.url, svc.apiKey, id)).status).toBe('succeeded');
    } finally {
      release();
      await queue.close();
      redis.disconnect();
    }
  });

  it('counts a batch that ended, and shows open batches by status', async () => {
    const form = new FormData();
    form.append('purpose', 'batch');
    form.append('file', new Blob(['not json\n'], { type: 'application/jsonl' }), 'input.jsonl');
    const file = await post(`${svc.url}/v1/files`, svc.apiKey, form);
    expect(file.status).toBe(200);
    const created = await fetch(`${svc.url}/v1/batches`, {
      method: 'POST',
      headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ input_file_id: file.body.id, endpoint: '/v1/images/edits', completion_window: '24h' }),
    });
    expect(created.status).toBe(200);
    const id = ((await created.json()) as { id: string }).id;
    const end = Date.now() + 20_000;
    while ((await get(`${svc.url}/v1/batches/${id}`, svc.apiKey)).body.status !== 'failed') {
      if (Date.now() > end) throw new Error('batch never failed');
      await new Promise((r) => setTimeout(r, 100));
    }
    const text = await eventually('image_edits_batches_finished_total', { status: 'failed' });
    expect(value(text, 'image_edits_batches_open', { status: 'validating' })).toBe(0);
    expect(value(text, 'image_edits_batches_open', { status: 'in_progress' })).toBe(0);
  });

  it('the Grafana dashboard uses metric names the API and the worker really serve', async () => {
    const dashboard = JSON.parse(readFileSync(path.join(__dirname, '../docs/grafana-dashboard.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    const api = await fetch(`${svc.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(api.status).toBe(200);
    const served = new Set([...`${await api.text()}\n${await scrape()}`.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]));
    const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:image_edits|http|process|nodejs)_\w+)/g)].map((m) => m[1]!.replace(/_(bucket|count|sum)$/, ''))));
    expect([...used].filter((name) => !served.has(name))).toEqual([]);
  });
});
