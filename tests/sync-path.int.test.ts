import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createRedis } from '@image-edits/queue';
import { createObjectStore } from '@image-edits/storage';
import { makeMask, makePng, startTestService, type TestService } from '@image-edits/testing';
import type { Redis } from 'ioredis';
import { editForm, post } from './helpers';

/**
 * The synchronous answer's bytes: the API hands a waiting client's inputs to the worker through
 * Redis, and the worker hands its images back the same way in base64 (each read once), so neither
 * reads back from S3 what the other just stored; what is handed over is exactly what S3 keeps, and
 * nothing is left in Redis.
 */
let svc: TestService;
let redis: Redis;

beforeAll(async () => {
  svc = await startTestService();
  redis = createRedis(svc.testEnv.env.REDIS_URL!);
});
afterAll(async () => {
  redis?.disconnect();
  await svc?.stop();
});

const inlineKeys = async () => redis.keys(`${svc.testEnv.prefix}:inline:*`);
/** how many GETDEL Redis has served (the API reads a handed-back output with one) */
const getdels = async () => Number(/cmdstat_getdel:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);

describe('the synchronous answer', () => {
  it('carries the same bytes as the stored output, and leaves nothing behind in Redis', async () => {
    const hole = { x: 16, y: 16, width: 16, height: 16 };
    // what happens to each handed-over key, from Redis's own keyspace events
    const events = new Map<string, string[]>();
    const listener = createRedis(svc.testEnv.env.REDIS_URL!);
    const previous = ((await redis.config('GET', 'notify-keyspace-events')) as string[])[1] ?? '';
    await redis.config('SET', 'notify-keyspace-events', 'Kg$x');
    const channel = `__keyspace@0__:${svc.testEnv.prefix}:inline:`;
    await listener.psubscribe(`${channel}*`);
    listener.on('pmessage', (_p, ch, event) => events.set(ch.slice(channel.length), [...(events.get(ch.slice(channel.length)) ?? []), event]));
    const before = await getdels();
    const res = await post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'fill', model: 'local-inpaint', n: '2' }, [['image', await makePng(64, 64), 'in.png'], ['mask', await makeMask(64, 64, hole), 'mask.png']]));
    expect(res.status).toBe(200);
    const jobId = res.headers.get('x-job-id')!;
    const row = await svc.db.job.findUniqueOrThrow({ where: { id: jobId } });
    const env = svc.testEnv.env;
    const store = createObjectStore({ endpoint: env.AWS_ENDPOINT_URL_S3!, region: 'us-east-1', bucket: env.S3_BUCKET!, accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY!, forcePathStyle: true });
    try {
      const outputs = row.outputs as { key: string }[];
      expect(res.body.data).toHaveLength(2);
      for (const [i, o] of outputs.entries()) expect(Buffer.from(res.body.data[i].b64_json, 'base64').equals(await store.getBuffer(o.key))).toBe(true);
    } finally {
      store.destroy();
    }
    // the image and the mask reached the worker, and both outputs came back, out of Redis (one read each), not S3
    expect((await getdels()) - before).toBe(4);
    expect(await inlineKeys()).toEqual([]);
    await new Promise((r) => setTimeout(r, 100));
    listener.disconnect();
    await redis.config('SET', 'notify-keyspace-events', previous);
    const outputs = (row.outputs as { key: string }[]).map((o) => o.key);
    const inputs = [`jobs/${jobId}/input/image-0.png`, `jobs/${jobId}/input/mask.png`];
    // each written once (with its expiry), then read and deleted at once (GETDEL): none left to expire;
    // the outputs in base64 (their own keys), as the answer sends them
    expect(Object.fromEntries(events)).toEqual(Object.fromEntries([...inputs, ...outputs.map((k) => `b64:${k}`)].map((k) => [k, ['set', 'expire', 'del']])));
  });

  it('a job nobody waits on is not handed over at all', async () => {
    const before = await getdels();
    const res = await post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'fill', model: 'local-inpaint' }, [['image', await makePng(64, 64, { hole: { x: 0, y: 0, width: 8, height: 8 } }), 'in.png']]), { prefer: 'respond-async' });
    expect(res.status).toBe(202);
    for (let i = 0; i < 100; i++) {
      if ((await svc.db.job.findUniqueOrThrow({ where: { id: res.body.id } })).status === 'succeeded') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await inlineKeys()).toEqual([]);
    expect((await getdels()) - before).toBe(0);
  });
});
