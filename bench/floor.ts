import { type JobInputs, newId } from '@image-edits/core';
import { type Db, getJob, insertJob } from '@image-edits/db';
import { createRedis } from '@image-edits/queue';
import type { ObjectStore } from '@image-edits/storage';
import { Queue, Worker } from 'bullmq';

/**
 * The floor under the sync overhead: the steps a synchronous edit cannot skip in this design (inputs
 * to S3 before the job exists, a row, a queue hop, the inputs handed to the worker through Redis, the
 * output to S3 while it is handed back in base64 through Redis, the row marked, the API told and
 * reading the row and the output), each timed alone, one at a time,
 * against the same S3 (s3rver), Postgres and Redis as the service, with none of the service's own
 * code around them. The sum of their medians is what the service could not go below here even if
 * everything else it does cost nothing.
 */
export interface FloorStep {
  step: string;
  p50: number;
  p90: number;
}

const ROUNDS = { warmup: 10, measured: 60 };

async function time(step: string, fn: (i: number) => Promise<unknown>): Promise<FloorStep> {
  for (let i = 0; i < ROUNDS.warmup; i++) await fn(i);
  const ms: number[] = [];
  for (let i = 0; i < ROUNDS.measured; i++) {
    const t0 = performance.now();
    await fn(ROUNDS.warmup + i);
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return { step, p50: ms[Math.floor(ms.length / 2)]!, p90: ms[Math.floor(ms.length * 0.9)]! };
}

export async function measureFloor(opts: { store: ObjectStore; db: Db; apiKeyId: string; redisUrl: string; prefix: string; image: Buffer; mask: Buffer; output: Buffer }): Promise<FloorStep[]> {
  const { store, db, image, mask, output } = opts;
  const png = { contentType: 'image/png' };
  const key = (i: number, name: string) => `floor/${i}/${name}`;
  const ids: string[] = [];
  const steps: FloorStep[] = [];
  steps.push(await time('S3: put the image and the mask (in parallel)', (i) => Promise.all([store.put(key(i, 'image.png'), image, png), store.put(key(i, 'mask.png'), mask, png)])));
  const inputs: JobInputs = { images: [{ key: 'floor/0/image.png', format: 'png', bytes: image.length, width: 1024, height: 1024, filename: 'image.png' }] };
  steps.push(
    await time('Postgres: insert the job row', async () => {
      const id = newId('job');
      ids.push(id);
      await insertJob(db, { id, apiKeyId: opts.apiKeyId, model: 'dall-e-2', provider: 'openai', targets: [{ provider: 'openai', upstream: 'dall-e-2', price: {} }], params: { prompt: 'x', n: 1, response_format: 'b64_json' }, inputs });
    }),
  );
  const connection = createRedis(opts.redisUrl);
  const workerConnection = createRedis(opts.redisUrl);
  const queue = new Queue('floor', { connection, prefix: opts.prefix });
  let started: (() => void) | undefined;
  const worker = new Worker('floor', async () => started?.(), { connection: workerConnection, prefix: opts.prefix, concurrency: 8 });
  const subscriber = createRedis(opts.redisUrl);
  try {
    await worker.waitUntilReady();
    steps.push(
      await time('BullMQ: add a job until a waiting worker runs it', (i) => new Promise<void>((resolve, reject) => {
        started = resolve;
        queue.add('floor', { i }, { jobId: `floor-${i}` }).catch(reject);
      })),
    );
    const row = (i: number) => ids[i % ids.length]!;
    steps.push(await time('Postgres: mark the row started (one UPDATE)', (i) => db.$executeRaw`UPDATE jobs SET status = 'in_progress', attempts = attempts + 1 WHERE id = ${row(i)}`));
    steps.push(
      await time('Redis: hand the image and the mask to the worker (SET both, then GETDEL both)', async (i) => {
        await connection.multi().set(`${opts.prefix}:floor:${i}:image`, image, 'EX', 60).set(`${opts.prefix}:floor:${i}:mask`, mask, 'EX', 60).exec();
        await Promise.all([connection.getdelBuffer(`${opts.prefix}:floor:${i}:image`), connection.getdelBuffer(`${opts.prefix}:floor:${i}:mask`)]);
      }),
    );
    // the worker hands the output back in base64 (what the answer sends) while it stores it
    const outputBase64 = Buffer.from(output.toString('base64'), 'latin1');
    steps.push(
      await time('S3: put the output, and hand it back in base64 through Redis (SET) meanwhile', (i) =>
        Promise.all([store.put(key(i, 'out.png'), output, png), connection.set(`${opts.prefix}:floor:${i}:out`, outputBase64, 'EX', 60)]),
      ),
    );
    steps.push(await time('Postgres: mark the row succeeded (one UPDATE)', (i) => db.$executeRaw`UPDATE jobs SET status = 'succeeded' WHERE id = ${row(i)}`));
    let heard: (() => void) | undefined;
    subscriber.on('message', () => heard?.());
    await subscriber.subscribe(`${opts.prefix}:floor`);
    steps.push(
      await time('Redis: publish the event until the API hears it', () => new Promise<void>((resolve, reject) => {
        heard = resolve;
        connection.publish(`${opts.prefix}:floor`, 'x').catch(reject);
      })),
    );
    steps.push(await time('Postgres: read the row', (i) => getJob(db, row(i))));
    steps.push(await time('Redis: the API reads the output in base64 (GETDEL)', (i) => connection.getdelBuffer(`${opts.prefix}:floor:${i}:out`)));
  } finally {
    await worker.close();
    await queue.close();
    subscriber.disconnect();
    connection.disconnect();
    workerConnection.disconnect();
    await store.deletePrefix('floor/');
  }
  return steps;
}
