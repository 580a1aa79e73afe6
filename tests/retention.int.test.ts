import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { newId } from '@image-edits/core';
import { insertJob } from '@image-edits/db';
import { createRedis } from '@image-edits/queue';
import { createObjectStore, type ObjectStore } from '@image-edits/storage';
import { makePng, startTestService, type TestService } from '@image-edits/testing';
import type { Redis } from 'ioredis';
import { sweepRetention } from '../apps/worker/src/retention';
import { allKeys, editForm, get, pollJob, post } from './helpers';

/**
 * Retention and erasure against the real API, worker, Postgres, Redis and S3: with short
 * retentions, a finished job's inputs and then its outputs leave the bucket (the worker's
 * housekeeping), the job says its result expired and keeps its status, usage and metadata; batch
 * children keep their outputs as long as their batch's output file; DELETE /v1/jobs/{id} erases a
 * job at once; the row purge keeps usage.
 */

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field
type Json = any;

const INPUT_S = 1;
const RESULT_S = 6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let svc: TestService;
let store: ObjectStore;
let redis: Redis;
let png: Buffer;

beforeAll(async () => {
  svc = await startTestService({
    INPUT_RETENTION_SECONDS: String(INPUT_S),
    RESULT_RETENTION_SECONDS: String(RESULT_S),
    // the housekeeping (retention included) runs often here
    RECONCILE_INTERVAL_MS: '300',
    MODEL_REGISTRY: JSON.stringify({ models: { 'local-inpaint': { family: 'local', targets: [{ provider: 'local', model: 'local-inpaint' }], price: { perImage: 0.01 } } } }),
  });
  const env = svc.testEnv.env;
  store = createObjectStore({ endpoint: env.AWS_ENDPOINT_URL_S3!, region: 'us-east-1', bucket: env.S3_BUCKET!, accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY!, forcePathStyle: true });
  redis = createRedis(env.REDIS_URL!);
  png = await makePng(32, 32, { hole: { x: 8, y: 8, width: 8, height: 8 } });
});
afterAll(async () => {
  store?.destroy();
  redis?.disconnect();
  await svc?.stop();
});

const keys = (prefix: string) => allKeys(store, prefix);

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(150);
  }
}

const auth = () => ({ authorization: `Bearer ${svc.apiKey}` });
const submit = (fields: Record<string, string>, headers: Record<string, string> = { prefer: 'respond-async' }) =>
  post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'fill the hole', model: 'local-inpaint', ...fields }, [['image', png, 'in.png']]), headers);
const del = async (id: string, key = svc.apiKey) => {
  const res = await fetch(`${svc.url}/v1/jobs/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, body: (await res.json()) as Json };
};

/** Nothing of these jobs left in the bucket, and each says result_expired: the sweep deletes the objects first, then stamps the rows. */
async function resultsGone(ids: string[]): Promise<boolean> {
  for (const id of ids) if ((await keys(`jobs/${id}/`)).length > 0 || (await get(`${svc.url}/v1/jobs/${id}`, svc.apiKey)).body.result_expired !== true) return false;
  return true;
}

describe('retention of a finished job', () => {
  it('deletes its inputs, then its outputs; the job then says result_expired and keeps status, usage and metadata', async () => {
    const ids: string[] = [];
    for (const format of ['url', 'b64_json', 'url']) {
      const res = await submit({ response_format: format, 'metadata[order]': '42' });
      expect(res.status).toBe(202);
      ids.push(res.body.id);
    }
    // a synchronous edit with an Idempotency-Key: its replay after expiry must not 500
    const sync = await submit({ response_format: 'b64_json' }, { 'idempotency-key': 'retention-replay' });
    expect(sync.status).toBe(200);
    ids.push(sync.headers.get('x-job-id')!);

    const done: Json[] = [];
    for (const id of ids) done.push(await pollJob(svc.url, svc.apiKey, id));
    for (const job of done) {
      expect(job.status).toBe('succeeded');
      expect(job.expires_at).toBe(job.completed_at + RESULT_S);
      expect(job.result_expired).toBe(false);
      expect(job.result.data).toHaveLength(1);
    }
    // the inputs go first (INPUT_RETENTION_SECONDS after the job finished) ...
    await until('inputs deleted', async () => {
      for (const id of ids) if ((await keys(`jobs/${id}/input/`)).length > 0) return false;
      // the objects go first, then the rows are stamped
      return (await svc.db.job.count({ where: { id: { in: ids }, inputsDeletedAt: { not: null } } })) === ids.length;
    });
    if (Date.now() / 1000 < Math.min(...done.map((j) => j.expires_at)) - 1) {
      // ... while the result is still there
      for (const id of ids) expect((await keys(`jobs/${id}/output/`)).length).toBe(1);
      expect((await get(`${svc.url}/v1/jobs/${ids[0]}`, svc.apiKey)).body.result_expired).toBe(false);
    }

    // then the outputs: the bucket holds nothing of these jobs
    await until('outputs deleted and their rows stamped', () => resultsGone(ids));
    for (const [i, id] of ids.entries()) {
      const { status, body } = await get(`${svc.url}/v1/jobs/${id}`, svc.apiKey);
      expect(status).toBe(200);
      expect(body).toMatchObject({ id, status: 'succeeded', result: null, result_expired: true, expires_at: done[i].expires_at, usage: { images: 1, cost_usd: 0.01 } });
      if (i < 3) expect(body.metadata).toEqual({ order: '42' });
    }
    // the list says the same
    const list = await get(`${svc.url}/v1/jobs?limit=10`, svc.apiKey);
    for (const j of list.body.data.filter((x: Json) => ids.includes(x.id))) expect(j).toMatchObject({ result: null, result_expired: true });

    // a replay of the sync edit: its images are gone, said so (410), never a 500
    const replay = await submit({ response_format: 'b64_json' }, { 'idempotency-key': 'retention-replay' });
    expect(replay.status).toBe(410);
    expect(replay.body.error).toMatchObject({ code: 'result_expired' });
    // the job's usage stays
    expect(await svc.db.usage.count({ where: { jobId: { in: ids } } })).toBe(ids.length);
  });

  it('keeps batch children\'s outputs as long as the batch\'s output file', async () => {
    const upload = new FormData();
    upload.append('purpose', 'vision');
    upload.append('file', new Blob([new Uint8Array(png)], { type: 'image/png' }), 'photo.png');
    const image = (await (await fetch(`${svc.url}/v1/files`, { method: 'POST', headers: auth(), body: upload })).json()) as Json;
    const line = (i: number) => JSON.stringify({ custom_id: `c${i}`, method: 'POST', url: '/v1/images/edits', body: { model: 'local-inpaint', prompt: 'x', images: [{ file_id: image.id }], response_format: 'url' } });
    const input = new FormData();
    input.append('purpose', 'batch');
    input.append('file', new Blob([`${line(0)}\n${line(1)}\n`], { type: 'application/jsonl' }), 'in.jsonl');
    const file = (await (await fetch(`${svc.url}/v1/files`, { method: 'POST', headers: auth(), body: input })).json()) as Json;
    const created = (await (
      await fetch(`${svc.url}/v1/batches`, {
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/json' },
        body: JSON.stringify({ input_file_id: file.id, endpoint: '/v1/images/edits', completion_window: '24h' }),
      })
    ).json()) as Json;
    const batch = await until('batch completed', async () => {
      const b = (await get(`${svc.url}/v1/batches/${created.id}`, svc.apiKey)).body;
      return b.status === 'completed' && b;
    });
    const children = await svc.db.job.findMany({ where: { batchId: created.id } });
    expect(children).toHaveLength(2);
    for (const c of children) expect(c.resultRetentionSeconds).toBeNull();

    // past both retentions the children's inputs are gone, their outputs are not (the output file lives)
    await until('children inputs deleted', async () => {
      for (const c of children) if ((await keys(`jobs/${c.id}/input/`)).length > 0) return false;
      return true;
    });
    await sleep((RESULT_S + 1) * 1000);
    for (const c of children) {
      expect((await keys(`jobs/${c.id}/output/`)).length).toBe(1);
      const job = (await get(`${svc.url}/v1/jobs/${c.id}`, svc.apiKey)).body;
      expect(job).toMatchObject({ status: 'succeeded', result_expired: false, expires_at: null });
    }
    expect(await keys(`batches/${created.id}/`)).toEqual([]);

    // the output file deleted: the children's outputs follow
    expect((await fetch(`${svc.url}/v1/files/${batch.output_file_id}`, { method: 'DELETE', headers: auth() })).status).toBe(200);
    await until('children outputs deleted and their rows stamped', () => resultsGone(children.map((c) => c.id)));
    for (const c of children) expect((await get(`${svc.url}/v1/jobs/${c.id}`, svc.apiKey)).body).toMatchObject({ status: 'succeeded', result: null, result_expired: true });
  });
});

describe('DELETE /v1/jobs/{id}', () => {
  it('erases a finished job at once: objects, prompt, metadata; a tombstone keeps its usage', async () => {
    const res = await submit({ response_format: 'url', 'metadata[who]': 'alice', user: 'alice@example.com' });
    const id: string = res.body.id;
    await pollJob(svc.url, svc.apiKey, id);
    expect((await keys(`jobs/${id}/`)).length).toBeGreaterThan(0);

    // another key's job is not found
    const other = await svc.newKey('other');
    expect((await del(id, other)).status).toBe(404);

    const gone = await del(id);
    expect(gone).toEqual({ status: 200, body: { id, object: 'image.edit.job.deleted', deleted: true } });
    expect(await keys(`jobs/${id}/`)).toEqual([]);
    const row = await svc.db.job.findUniqueOrThrow({ where: { id }, include: { usage: true } });
    expect(row.deletedAt).not.toBeNull();
    expect(row.metadata).toEqual({});
    expect(row.endUser).toBeNull();
    expect(row.outputs).toBeNull();
    expect((row.params as Json).prompt).toBe('');
    expect((row.params as Json).user).toBeUndefined();
    expect(JSON.stringify(row.params)).not.toContain('alice');
    expect(row.status).toBe('succeeded');
    expect(row.usage).toMatchObject({ images: 1 });

    // gone for its key: read, list, delete again
    expect((await get(`${svc.url}/v1/jobs/${id}`, svc.apiKey)).status).toBe(404);
    expect((await get(`${svc.url}/v1/jobs?limit=100`, svc.apiKey)).body.data.map((j: Json) => j.id)).not.toContain(id);
    expect((await del(id)).status).toBe(404);
  });

  it('is 409 for a job that has not finished', async () => {
    const id = newId('job');
    await insertJob(svc.db, { id, apiKeyId: svc.apiKeyId, model: 'local-inpaint', provider: 'local', targets: [{ provider: 'local', upstream: 'local-inpaint', price: {} }], params: { prompt: 'x', n: 1, response_format: 'url' }, inputs: { images: [] } });
    const res = await del(id);
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ code: 'job_not_final' });
    expect(res.body.error.message).toContain('cancel');
    await svc.db.job.update({ where: { id }, data: { status: 'canceled', completedAt: new Date() } });
    expect((await del(id)).status).toBe(200);
  });
});

describe('the row purge', () => {
  it('removes rows of expired and deleted jobs after JOB_ROW_RETENTION_DAYS and keeps every usage row', async () => {
    const usageBefore = await svc.db.usage.findMany({ orderBy: { id: 'asc' } });
    expect(usageBefore.length).toBeGreaterThan(0);
    const unfinished = newId('job');
    await insertJob(svc.db, { id: unfinished, apiKeyId: svc.apiKeyId, model: 'local-inpaint', provider: 'local', targets: [{ provider: 'local', upstream: 'local-inpaint', price: {} }], params: { prompt: 'x', n: 1, response_format: 'url' }, inputs: { images: [] } });
    // as the housekeeping would run 91 days from now (its own lock name: the worker's sweep runs too)
    const later = new Date(Date.now() + 91 * 86_400_000);
    const deps = { db: svc.db, store, redis, prefix: `${svc.testEnv.prefix}-direct`, logger: { info: () => undefined, warn: () => undefined } };
    let purged = 0;
    for (let i = 0; i < 5; i++) purged += (await sweepRetention(deps, { rowRetentionDays: 90, now: later })).rows;
    expect(purged).toBeGreaterThan(0);
    // nothing final is left; the unfinished job is untouched
    expect(await svc.db.job.count({ where: { status: { not: 'queued' } } })).toBe(0);
    expect(await svc.db.job.count({ where: { id: unfinished } })).toBe(1);
    const usageAfter = await svc.db.usage.findMany({ orderBy: { id: 'asc' } });
    expect(usageAfter.map((u) => [u.id, u.images, String(u.costUsd), u.source])).toEqual(usageBefore.map((u) => [u.id, u.images, String(u.costUsd), u.source]));
    for (const u of usageAfter) expect(u.jobId).toBeNull();
    expect(usageAfter.filter((u) => u.source === 'batch')).toHaveLength(2);
    expect(await keys('jobs/')).toEqual([]);
  });
});
