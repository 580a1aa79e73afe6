/**
 * The drain baseline: a bare BullMQ worker doing the same I/O per job as the service's worker and
 * nothing else: read the image and the mask from S3, POST the multipart edit to the same upstream,
 * put the output to S3, one Postgres UPDATE. No validation, retries, fairness, events or webhooks.
 * Run as its own process; configured by the environment; SIGTERM closes it.
 */
import { createObjectStore } from '@image-edits/storage';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};

async function main(): Promise<void> {
  const store = createObjectStore({ endpoint: env('S3_ENDPOINT'), region: 'us-east-1', bucket: env('S3_BUCKET'), accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true });
  const db = new pg.Pool({ connectionString: env('DATABASE_URL'), max: 10 });
  const upstream = env('UPSTREAM_URL');
  const key = env('UPSTREAM_KEY');
  const connection = new Redis(env('REDIS_URL'), { maxRetriesPerRequest: null });
  const worker = new Worker(
    'bare-edits',
    async (job) => {
      const { id, image, mask } = job.data as { id: string; image: string; mask: string };
      await db.query('UPDATE bare_jobs SET started_at = now() WHERE id = $1', [id]);
      const [img, msk] = await Promise.all([store.getBuffer(image), store.getBuffer(mask)]);
      const form = new FormData();
      for (const [k, v] of Object.entries({ model: 'dall-e-2', prompt: 'a red balloon floating in the hole', n: '1', size: '1024x1024', response_format: 'b64_json' })) form.append(k, v);
      form.append('image', new Blob([new Uint8Array(img)], { type: 'image/png' }), 'image.png');
      form.append('mask', new Blob([new Uint8Array(msk)], { type: 'image/png' }), 'mask.png');
      const res = await fetch(`${upstream}/images/edits`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: form });
      if (!res.ok) throw new Error(`upstream ${res.status}`);
      const body = (await res.json()) as { data: { b64_json: string }[] };
      const out = Buffer.from(body.data[0]!.b64_json, 'base64');
      await store.put(`bare/${id}/output/0.png`, out, { contentType: 'image/png', contentLength: out.length });
      await db.query("UPDATE bare_jobs SET status = 'succeeded', completed_at = now() WHERE id = $1", [id]);
    },
    { connection, prefix: env('QUEUE_PREFIX'), concurrency: Number(env('CONCURRENCY')) },
  );
  await worker.waitUntilReady();
  process.send?.({ ready: true });
  process.on('SIGTERM', () => {
    worker
      .close()
      .then(() => db.end())
      .finally(() => {
        connection.disconnect();
        store.destroy();
        process.exit(0);
      });
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
