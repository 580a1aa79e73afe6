import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { type RunningApi, startApi } from '@image-edits/api';
import { parseConfig, type ServiceConfig } from '@image-edits/core';
import { createApiKey, createDb, type Db, dropDatabase, migrate } from '@image-edits/db';
import { createRedis } from '@image-edits/queue';
import { type LocalS3, startLocalS3 } from '@image-edits/storage';
import { type RunningWorker, startWorker } from '@image-edits/worker';

const BASE_DB = process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * Real backing services for one test file: its own S3-compatible server and bucket on disk, its own
 * Postgres database (migrated), its own BullMQ prefix in the shared Redis. `cleanup` removes them.
 */
export interface TestEnv {
  env: Record<string, string>;
  s3: LocalS3;
  databaseUrl: string;
  prefix: string;
  cleanup(): Promise<void>;
}

export async function createTestEnv(overrides: Record<string, string> = {}): Promise<TestEnv> {
  const id = randomBytes(5).toString('hex');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'image-edits-test-'));
  const s3 = await startLocalS3({ directory: path.join(dir, 's3') });
  const url = new URL(BASE_DB);
  url.pathname = `/image_edits_test_${id}`;
  const databaseUrl = url.toString();
  await migrate(databaseUrl);
  const prefix = `test-${id}`;
  const env: Record<string, string> = {
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    DATABASE_URL: databaseUrl,
    DATABASE_POOL_SIZE: '5',
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    AWS_ENDPOINT_URL_S3: s3.endpoint,
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    S3_BUCKET: 'test-bucket',
    UPLOAD_DIR: path.join(dir, 'uploads'),
    JOB_BACKOFF_MS: '50',
    WORKER_CONCURRENCY: '4',
    // no worker metrics port: test files run workers side by side (a test that scrapes picks a free port)
    WORKER_METRICS_PORT: '0',
    ...overrides,
  };
  return {
    env,
    s3,
    databaseUrl,
    prefix,
    async cleanup() {
      await s3.close();
      await dropDatabase(databaseUrl);
      await deleteRedisPrefix(prefix);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function deleteRedisPrefix(prefix: string): Promise<void> {
  const redis = createRedis(REDIS_URL);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

export interface TestService {
  url: string;
  apiKey: string;
  apiKeyId: string;
  config: ServiceConfig;
  testEnv: TestEnv;
  api: RunningApi;
  worker: RunningWorker | undefined;
  /** a Prisma client on the test database, for assertions */
  db: Db;
  newKey(name?: string): Promise<string>;
  stop(): Promise<void>;
}

/** API (and, unless `worker: false`, one in-process worker) on a fresh TestEnv, with an API key. */
export async function startTestService(overrides: Record<string, string> = {}, opts: { worker?: boolean } = {}): Promise<TestService> {
  const testEnv = await createTestEnv(overrides);
  const config = parseConfig(testEnv.env);
  const worker = opts.worker === false ? undefined : await startWorker(config);
  const api = await startApi(config);
  const db = createDb(testEnv.databaseUrl, { poolSize: 2 });
  const key = await createApiKey(db, 'test');
  return {
    url: api.url,
    apiKey: key.key,
    apiKeyId: key.id,
    config,
    testEnv,
    api,
    worker,
    db,
    newKey: async (name = 'other') => (await createApiKey(db, name)).key,
    async stop() {
      await api.close();
      await worker?.close();
      await db.$disconnect();
      await testEnv.cleanup();
    },
  };
}
