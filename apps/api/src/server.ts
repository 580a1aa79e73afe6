import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { buildModelRoutes, type ProviderId, type ServiceConfig } from '@image-edits/core';
import { createDb } from '@image-edits/db';
import { createBatchQueue, createEditQueue, createJobEventHub, createRedis, createWebhookQueue } from '@image-edits/queue';
import { createObjectStore } from '@image-edits/storage';
import pino, { type Logger } from 'pino';
import { createApp } from './app';
import type { ApiDeps } from './deps';

export interface RunningApi {
  url: string;
  deps: ApiDeps;
  close(): Promise<void>;
}

/** Builds the API's dependencies from configuration and listens. */
export async function startApi(config: ServiceConfig, opts: { logger?: Logger } = {}): Promise<RunningApi> {
  const env = config.env;
  const logger = opts.logger ?? pino({ level: env.LOG_LEVEL, name: 'api' });
  const routes = buildModelRoutes(config);
  const db = createDb(env.DATABASE_URL, { poolSize: env.DATABASE_POOL_SIZE });
  const redis = createRedis(env.REDIS_URL);
  const store = createObjectStore(config.s3);
  await store.ensureBucket();
  // retries per provider, from the registry: a job's first queue sets the policy of its first target
  const queue = createEditQueue({ redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX }, redis, (provider) => config.registry.providers[provider as ProviderId]);
  const webhookQueue = createWebhookQueue({ redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX }, redis, env.WEBHOOK_RETRY_DELAYS_MS);
  const batchQueue = createBatchQueue({ redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX }, redis);
  const hub = await createJobEventHub(createRedis(env.REDIS_URL), env.QUEUE_PREFIX);
  const uploadDir = env.UPLOAD_DIR ?? path.join(os.tmpdir(), 'image-edits-uploads');
  const deps: ApiDeps = { config, db, store, queue, webhookQueue, batchQueue, hub, redis, routes, logger, uploadDir };

  const app = createApp(deps);
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(env.PORT, env.HOST, () => resolve(s));
  });
  // long sync waits and big uploads: no default request timeout; keep-alive longer than typical LBs
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;
  const { port } = server.address() as AddressInfo;
  const url = env.PUBLIC_URL ?? `http://${env.HOST === '0.0.0.0' ? '127.0.0.1' : env.HOST}:${port}`;

  return {
    url,
    deps,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await hub.close();
      await queue.close();
      await webhookQueue.close();
      await batchQueue.close();
      redis.disconnect();
      store.destroy();
      await db.$disconnect();
    },
  };
}
