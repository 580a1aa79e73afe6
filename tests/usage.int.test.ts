import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createApiKey } from '@image-edits/db';
import { makePng, startTestService, type TestService } from '@image-edits/testing';
import { editForm, get, pollJob, post } from './helpers';

/**
 * GET /v1/organization/usage/images and /v1/organization/costs against real data: jobs of two keys
 * (two priced models, one with a size, one with n=2) and a batch, run by the real worker; the
 * reports' sums equal the jobs' own usage, a key sees itself, an admin key sees everyone.
 */

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field
type Json = any;

const local = (price: number) => ({ family: 'local', targets: [{ provider: 'local', model: 'local-inpaint' }], price: { perImage: price } });
let svc: TestService;
let other: string;
let otherId: string;
let admin: string;
let png: Buffer;
let start: number;
/** the job objects of each key, final */
const jobsOf: Record<string, Json[]> = {};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const round = (x: number) => Math.round(x * 1e6) / 1e6;

async function edit(key: string, fields: Record<string, string>): Promise<string> {
  const res = await post(`${svc.url}/v1/images/edits`, key, editForm({ prompt: 'fill', response_format: 'url', ...fields }, [['image', png, 'in.png']]), { prefer: 'respond-async' });
  expect({ status: res.status, error: res.body.error }).toEqual({ status: 202, error: null });
  return res.body.id;
}

async function runBatch(key: string): Promise<string[]> {
  const auth = { authorization: `Bearer ${key}` };
  const line = (i: number) => JSON.stringify({ custom_id: `c${i}`, method: 'POST', url: '/v1/images/edits', body: { model: 'local-cheap', prompt: 'x', images: [{ image_url: `data:image/png;base64,${png.toString('base64')}` }], response_format: 'url' } });
  const input = new FormData();
  input.append('purpose', 'batch');
  input.append('file', new Blob([`${line(0)}\n${line(1)}\n`], { type: 'application/jsonl' }), 'in.jsonl');
  const file = (await (await fetch(`${svc.url}/v1/files`, { method: 'POST', headers: auth, body: input })).json()) as Json;
  const created = (await (
    await fetch(`${svc.url}/v1/batches`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/images/edits', completion_window: '24h' }) })
  ).json()) as Json;
  for (const end = Date.now() + 30_000; ; await sleep(100)) {
    const b = (await get(`${svc.url}/v1/batches/${created.id}`, key)).body;
    if (b.status === 'completed') break;
    if (Date.now() > end) throw new Error(`batch still ${b.status}`);
  }
  return (await svc.db.job.findMany({ where: { batchId: created.id }, select: { id: true } })).map((j) => j.id);
}

beforeAll(async () => {
  svc = await startTestService({ MODEL_REGISTRY: JSON.stringify({ models: { 'local-inpaint': local(0.01), 'local-cheap': local(0.0025) } }) });
  png = await makePng(32, 32, { hole: { x: 8, y: 8, width: 8, height: 8 } });
  const o = await createApiKey(svc.db, 'other');
  other = o.key;
  otherId = o.id;
  admin = (await createApiKey(svc.db, 'ops', { admin: true })).key;
  start = Math.floor(Date.now() / 1000) - 5;
  const mine = [await edit(svc.apiKey, { model: 'local-inpaint' }), await edit(svc.apiKey, { model: 'local-inpaint', n: '2' }), await edit(svc.apiKey, { model: 'local-cheap', size: '256x256' })];
  const theirs = [await edit(other, { model: 'local-inpaint' })];
  const children = await runBatch(svc.apiKey);
  jobsOf[svc.apiKey] = [];
  for (const id of [...mine, ...children]) jobsOf[svc.apiKey]!.push(await pollJob(svc.url, svc.apiKey, id));
  jobsOf[other] = [];
  for (const id of theirs) jobsOf[other]!.push(await pollJob(svc.url, other, id));
  for (const j of [...jobsOf[svc.apiKey]!, ...jobsOf[other]!]) expect(j.status).toBe('succeeded');
}, 90_000);
afterAll(async () => {
  await svc?.stop();
});

const usage = (key: string, query: string) => get(`${svc.url}/v1/organization/usage/images?start_time=${start}&${query}`, key);
const costs = (key: string, query: string) => get(`${svc.url}/v1/organization/costs?start_time=${start}&${query}`, key);
const results = (body: Json): Json[] => body.data.flatMap((b: Json) => b.results);

describe('GET /v1/organization/usage/images', () => {
  it("answers OpenAI's page of buckets; the sums are the key's jobs' usage", async () => {
    const { status, body } = await usage(svc.apiKey, 'bucket_width=1d');
    expect(status).toBe(200);
    expect(body).toMatchObject({ object: 'page', has_more: false, next_page: null });
    expect(body.data).toHaveLength(1);
    expect(body.data[0]).toEqual({ object: 'bucket', start_time: start, end_time: expect.any(Number), results: [expect.any(Object)] });
    const jobs = jobsOf[svc.apiKey]!;
    expect(results(body)).toEqual([
      { object: 'organization.usage.images.result', images: sum(jobs.map((j) => j.usage.images)), num_model_requests: jobs.length, source: null, size: null, model: null, api_key_id: null, project_id: null, user_id: null },
    ]);
  });

  it('groups by model, size, source and api_key_id', async () => {
    const { body } = await usage(svc.apiKey, 'bucket_width=1h&group_by=model&group_by=source&group_by[]=size,api_key_id');
    const rows = results(body);
    const jobs = jobsOf[svc.apiKey]!;
    const expected = new Map<string, { images: number; n: number }>();
    for (const j of jobs) {
      const row = await svc.db.usage.findUniqueOrThrow({ where: { jobId: j.id } });
      const k = JSON.stringify([j.model, row.size, row.source]);
      const e = expected.get(k) ?? { images: 0, n: 0 };
      expected.set(k, { images: e.images + j.usage.images, n: e.n + 1 });
    }
    expect(rows).toHaveLength(expected.size);
    for (const r of rows) {
      expect(r.api_key_id).toBe(svc.apiKeyId);
      expect(expected.get(JSON.stringify([r.model, r.size, r.source]))).toEqual({ images: r.images, n: r.num_model_requests });
    }
    // batch children are source batch, the rest image.edit
    expect(rows.filter((r) => r.source === 'batch')).toEqual([expect.objectContaining({ model: 'local-cheap', images: 2, num_model_requests: 2 })]);
    expect(rows.find((r) => r.size === '256x256')).toMatchObject({ model: 'local-cheap', source: 'image.edit', images: 1 });
    // filters
    const batchOnly = await usage(svc.apiKey, 'sources=batch');
    expect(results(batchOnly.body)).toEqual([expect.objectContaining({ images: 2, num_model_requests: 2 })]);
  });

  it('pages through minute buckets with next_page', async () => {
    const end = Math.floor(Date.now() / 1000) + 60;
    let page: string | undefined;
    let images = 0;
    let buckets = 0;
    for (let i = 0; i < 20; i++) {
      const { status, body } = await usage(svc.apiKey, `end_time=${end}&bucket_width=1m&limit=1${page ? `&page=${page}` : ''}`);
      expect(status).toBe(200);
      expect(body.data).toHaveLength(1);
      buckets++;
      images += sum(results(body).map((r) => r.images));
      if (!body.has_more) break;
      page = body.next_page;
      expect(page).toMatch(/^page_\d+$/);
    }
    expect(buckets).toBeGreaterThan(1);
    expect(images).toBe(sum(jobsOf[svc.apiKey]!.map((j) => j.usage.images)));
  });

  it('shows an admin key every key, or the keys it asks for; a key only itself', async () => {
    const everyone = results((await usage(admin, 'group_by=api_key_id')).body);
    expect(everyone).toHaveLength(2);
    expect(sum(everyone.map((r) => r.images))).toBe(sum([...jobsOf[svc.apiKey]!, ...jobsOf[other]!].map((j) => j.usage.images)));
    const one = results((await usage(admin, `api_key_ids=${otherId}`)).body);
    expect(one).toEqual([expect.objectContaining({ images: 1, num_model_requests: 1 })]);
    // the other key sees only itself
    expect(results((await usage(other, '')).body)).toEqual([expect.objectContaining({ images: 1, num_model_requests: 1 })]);
    const forbidden = await usage(other, `api_key_ids=${svc.apiKeyId}`);
    expect(forbidden.status).toBe(403);
    expect(forbidden.body.error).toMatchObject({ param: 'api_key_ids' });
  });

  it('refuses every malformed parameter with a 400 naming it', async () => {
    const cases: [string, string][] = [
      ['', 'start_time'],
      ['start_time=yesterday', 'start_time'],
      [`start_time=${start}&end_time=${start}`, 'end_time'],
      [`start_time=${start}&bucket_width=2h`, 'bucket_width'],
      [`start_time=${start}&group_by=project_id`, 'group_by'],
      [`start_time=${start}&limit=0`, 'limit'],
      [`start_time=${start}&bucket_width=1d&limit=32`, 'limit'],
      [`start_time=${start}&page=nope`, 'page'],
      [`start_time=${start}&sources=image.generation`, 'sources'],
      [`start_time=${start}&api_key_ids=bad`, 'api_key_ids'],
      [`start_time=${start}&project_ids=p`, 'project_ids'],
      [`start_time=${start}&start_time=${start}`, 'start_time'],
    ];
    for (const [query, param] of cases) {
      const res = await get(`${svc.url}/v1/organization/usage/images?${query}`, svc.apiKey);
      expect({ query, status: res.status, param: res.body.error?.param }).toEqual({ query, status: 400, param });
    }
  });
});

describe('GET /v1/organization/costs', () => {
  it('sums the jobs\' usage.cost_usd in USD, by line item and by key', async () => {
    const { status, body } = await costs(svc.apiKey, '');
    expect(status).toBe(200);
    const total = round(sum(jobsOf[svc.apiKey]!.map((j) => j.usage.cost_usd)));
    expect(total).toBeGreaterThan(0);
    expect(results(body)).toEqual([{ object: 'organization.costs.result', amount: { value: total, currency: 'usd' }, line_item: null, project_id: null, api_key_id: null }]);

    const lines = results((await costs(svc.apiKey, 'group_by=line_item')).body);
    const byLine = Object.fromEntries(lines.map((r) => [r.line_item, r.amount.value]));
    // local-inpaint: 1 + 2 images at $0.01; local-cheap: one 256x256 edit and two batch children at $0.0025
    expect(byLine).toEqual({ 'local-inpaint': 0.03, 'local-cheap': 0.005, 'local-cheap, 256x256': 0.0025 });
    expect(round(sum(lines.map((r) => r.amount.value)))).toBe(total);

    const keys = results((await costs(admin, 'group_by=api_key_id')).body);
    expect(Object.fromEntries(keys.map((r) => [r.api_key_id, r.amount.value]))).toEqual({ [svc.apiKeyId]: total, [otherId]: round(sum(jobsOf[other]!.map((j) => j.usage.cost_usd))) });
    const bad = await costs(svc.apiKey, 'group_by=model');
    expect(bad.status).toBe(400);
    expect(bad.body.error.param).toBe('group_by');
  });
});
