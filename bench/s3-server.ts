/**
 * The bench's S3: s3rver (packages/storage's startLocalS3, as in development and tests) in its own
 * process, so the report can show what it costs on these cores, apart from the load generator.
 * Before it reports ready it serves a warm-up of its own (puts and gets in a scratch bucket), so
 * that its JIT warm-up is not charged to the first service measurement: a real S3 is always warm.
 * Run as its own process: S3_DIR from the environment; sends {endpoint} over IPC once ready.
 */
import { randomBytes } from 'node:crypto';
import { createObjectStore, startLocalS3 } from '@image-edits/storage';

const WARMUP = { puts: 400, gets: 200, concurrency: 8, bytes: 200 * 1024 };

async function main(): Promise<void> {
  const directory = process.env.S3_DIR;
  if (!directory) throw new Error('S3_DIR is required');
  const s3 = await startLocalS3({ directory });
  process.on('SIGTERM', () => {
    s3.close().finally(() => process.exit(0));
  });

  const store = createObjectStore({ endpoint: s3.endpoint, region: 'us-east-1', bucket: 'bench-warmup', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true });
  await store.ensureBucket();
  const body = randomBytes(WARMUP.bytes);
  const key = (i: number) => `jobs/job_warmup${i}/input/image-0.png`;
  for (let i = 0; i < WARMUP.puts; i += WARMUP.concurrency) {
    await Promise.all(Array.from({ length: WARMUP.concurrency }, (_, k) => store.put(key(i + k), body, { contentType: 'image/png', contentLength: body.length })));
  }
  for (let i = 0; i < WARMUP.gets; i += WARMUP.concurrency) {
    await Promise.all(Array.from({ length: WARMUP.concurrency }, (_, k) => store.getBuffer(key(i + k))));
  }
  store.destroy();
  process.send?.({ endpoint: s3.endpoint });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
