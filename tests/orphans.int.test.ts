import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { newId } from '@image-edits/core';
import { insertFile, insertJob, type NewJob } from '@image-edits/db';
import { createRedis } from '@image-edits/queue';
import { createObjectStore, type ObjectStore } from '@image-edits/storage';
import { makeMask, makePng, startTestService, type TestService } from '@image-edits/testing';
import type { Redis } from 'ioredis';
import { sweepOrphanObjects } from '../apps/worker/src/orphans';
import { allKeys, editForm, post } from './helpers';

/**
 * Objects without a row: the API writes a job's inputs (a file's bytes) to S3 before its row, so a
 * failed insert must take them back at once, and a crash between the two must leave them to a sweep
 * that deletes them once they are old enough, and nothing else. Real API, Postgres, Redis and S3.
 */
let svc: TestService;
let store: ObjectStore;
let redis: Redis;
const HOUR = 3600 * 1000;

beforeAll(async () => {
  svc = await startTestService({}, { worker: false });
  const env = svc.testEnv.env;
  store = createObjectStore({ endpoint: env.AWS_ENDPOINT_URL_S3!, region: 'us-east-1', bucket: env.S3_BUCKET!, accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY!, forcePathStyle: true });
  redis = createRedis(env.REDIS_URL!);
});
afterAll(async () => {
  store?.destroy();
  redis?.disconnect();
  await svc?.stop();
});

const keys = (prefix: string) => allKeys(store, prefix);

const png = Buffer.from('not really a png, the sweep never reads it');
const put = (key: string) => store.put(key, png, { contentType: 'image/png' });
const deps = () => ({ db: svc.db, store, redis, prefix: svc.testEnv.prefix, logger: { warn: () => undefined } });
const jobRow = (id: string): NewJob => ({
  id,
  apiKeyId: svc.apiKeyId,
  model: 'local-inpaint',
  provider: 'local',
  targets: [{ provider: 'local', upstream: 'local-inpaint', price: {} }],
  params: { prompt: 'x', n: 1, response_format: 'url' },
  inputs: { images: [] },
});

describe('a submission whose row cannot be written', () => {
  it('leaves no input objects behind and answers 500 in the OpenAI error shape', async () => {
    // Postgres refuses this one insert, as a full disk or a lost connection would
    await svc.db.$executeRawUnsafe(`CREATE FUNCTION refuse_job() RETURNS trigger AS $$ BEGIN IF NEW.params->>'prompt' = 'refuse me' THEN RAISE EXCEPTION 'insert refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`);
    await svc.db.$executeRawUnsafe('CREATE TRIGGER refuse_job BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION refuse_job()');
    try {
      const hole = { x: 8, y: 8, width: 16, height: 16 };
      const form = editForm({ prompt: 'refuse me' }, [['image', await makePng(64, 64), 'in.png'], ['mask', await makeMask(64, 64, hole), 'mask.png']]);
      const before = await keys('jobs/');
      const res = await post(`${svc.url}/v1/images/edits`, svc.apiKey, form, { prefer: 'respond-async' });
      expect(res.status).toBe(500);
      expect(res.body.error).toMatchObject({ type: 'server_error' });
      expect(JSON.stringify(res.body)).not.toMatch(/insert refused|at .*\.ts/);
      expect(await keys('jobs/')).toEqual(before);
      expect(await svc.db.job.count()).toBe(0);
      // and the next one goes through
      const ok = await post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'fine' }, [['image', await makePng(64, 64), 'in.png'], ['mask', await makeMask(64, 64, hole), 'mask.png']]), { prefer: 'respond-async' });
      expect(ok.status).toBe(202);
    } finally {
      await svc.db.$executeRawUnsafe('DROP TRIGGER refuse_job ON jobs');
      await svc.db.$executeRawUnsafe('DROP FUNCTION refuse_job()');
    }
  });
});

describe('the orphan sweep', () => {
  it('deletes the objects of ids with no row once they are old, keeps everything else, and walks on from where it stopped', async () => {
    const now = Date.now();
    const oldOrphan = newId('job', now - 30 * HOUR);
    const oldKept = newId('job', now - 29 * HOUR);
    const youngOrphan = newId('job', now - 2 * HOUR);
    const oldFileOrphan = `file-${newId('file', now - 30 * HOUR).slice('file_'.length)}`;
    const oldFileKept = `file-${newId('file', now - 30 * HOUR).slice('file_'.length)}`;
    await insertJob(svc.db, jobRow(oldKept));
    await insertFile(svc.db, { id: oldFileKept, apiKeyId: svc.apiKeyId, filename: 'a.jsonl', purpose: 'batch', bytes: png.length, contentType: 'application/jsonl' });
    for (const id of [oldOrphan, oldKept, youngOrphan]) {
      await put(`jobs/${id}/input/image-0.png`);
      await put(`jobs/${id}/input/mask.png`);
    }
    await put(`jobs/${oldKept}/output/0.png`);
    await put(`files/${oldFileOrphan}`);
    await put(`files/${oldFileKept}`);
    // not an id of ours: never touched, whatever its age
    await put('jobs/imported-by-hand/photo.png');
    const jobsBefore = await keys('jobs/');

    expect(await sweepOrphanObjects(deps(), { now })).toBe(2);
    expect(await keys('jobs/')).toEqual(jobsBefore.filter((k) => !k.startsWith(`jobs/${oldOrphan}/`)));
    expect(await keys(`jobs/${oldKept}/`)).toHaveLength(3);
    expect(await keys(`jobs/${youngOrphan}/`)).toHaveLength(2);
    expect(await keys('files/')).toEqual([`files/${oldFileKept}`]);

    // the walk stopped before the first young id; a day later that one is old enough, and goes too
    expect(await redis.get(`${svc.testEnv.prefix}:orphans:jobs`)).toBe(`jobs/${oldKept}/output/0.png`);
    expect(await sweepOrphanObjects(deps(), { now })).toBe(0);
    expect(await sweepOrphanObjects(deps(), { now: now + 24 * HOUR })).toBe(1);
    expect(await keys(`jobs/${youngOrphan}/`)).toEqual([]);
    expect(await keys(`jobs/${oldKept}/`)).toHaveLength(3);
    expect(await keys('jobs/imported-by-hand/')).toEqual(['jobs/imported-by-hand/photo.png']);
  });

  it('runs on one worker at a time', async () => {
    await redis.set(`${svc.testEnv.prefix}:orphans:lock`, '1', 'PX', 10_000);
    const orphan = newId('job', Date.now() - 30 * HOUR);
    await put(`jobs/${orphan}/input/image-0.png`);
    await redis.del(`${svc.testEnv.prefix}:orphans:jobs`);
    expect(await sweepOrphanObjects(deps())).toBe(0);
    expect(await keys(`jobs/${orphan}/`)).toHaveLength(1);
    await redis.del(`${svc.testEnv.prefix}:orphans:lock`);
    expect(await sweepOrphanObjects(deps())).toBe(1);
    expect(await keys(`jobs/${orphan}/`)).toEqual([]);
  });
});

describe('the embedded S3 past 1,000 objects', () => {
  it('lists and deletes a prefix of 2,100 keys page by page (s3rver cannot make ListObjectsV2 tokens on Node 20)', async () => {
    const prefix = 'jobs/job_manykeys/';
    const all = Array.from({ length: 2100 }, (_, i) => `${prefix}${String(i).padStart(5, '0')}`);
    for (let i = 0; i < all.length; i += 50) await Promise.all(all.slice(i, i + 50).map(put));
    const first = await store.listKeys(prefix);
    expect(first.truncated).toBe(true);
    expect(await keys(prefix)).toEqual(all);
    expect(await store.deletePrefix(prefix)).toBe(2100);
    expect(await keys(prefix)).toEqual([]);
  }, 120_000);
});
