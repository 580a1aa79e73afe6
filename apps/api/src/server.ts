import type { Server, ServerResponse } from 'node:http';
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
  /**
   * The drain of a SIGTERM (see `deps.lifecycle`): /readyz answers 503, the listener stops accepting,
   * every response from then on carries `Connection: close` (idle keep-alive connections close at
   * once), open requests finish; at SHUTDOWN_TIMEOUT_MS the remaining connections are destroyed.
   * Then it disconnects. `drained` is false when the deadline cut requests short. Calling it again
   * returns the same drain.
   */
  close(): Promise<{ drained: boolean }>;
}

/** waiting requests answer this long before SHUTDOWN_TIMEOUT_MS (at most a quarter of it), so their answer goes out before the exit */
const WAIT_DEADLINE_MARGIN_MS = 2000;

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
  const waitDeadline = new AbortController();
  const lifecycle = { draining: false, waitDeadline: waitDeadline.signal };
  const deps: ApiDeps = { config, db, store, queue, webhookQueue, batchQueue, hub, redis, routes, logger, uploadDir, lifecycle };

  const app = createApp(deps);
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(env.PORT, env.HOST, () => resolve(s));
  });
  // long sync waits and big uploads: no default request timeout; keep-alive longer than typical LBs
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;
  const { port } = server.address() as AddressInfo;
  const url = env.PUBLIC_URL ?? `http://${env.HOST === '0.0.0.0' ? '127.0.0.1' : env.HOST}:${port}`;

  // responses not finished yet; before Express sees a request, so even a synchronous answer gets the header
  const open = new Set<ServerResponse>();
  server.prependListener('request', (_req, res: ServerResponse) => {
    open.add(res);
    res.once('close', () => open.delete(res));
    if (lifecycle.draining) res.setHeader('Connection', 'close');
  });

  /** resolves when every connection has ended; true unless the deadline had to destroy some */
  const drain = async (): Promise<boolean> => {
    const timeoutMs = env.SHUTDOWN_TIMEOUT_MS;
    lifecycle.draining = true;
    logger.info({ openRequests: open.size, timeoutMs }, 'draining: not accepting, finishing open requests');
    for (const res of open) {
      if (!res.headersSent) res.setHeader('Connection', 'close');
      // already answering with keep-alive (a download): its connection closes once the response ends
      else res.once('close', () => setImmediate(() => server.closeIdleConnections()));
    }
    const waitTimer = setTimeout(() => waitDeadline.abort(new Error('the API is shutting down')), timeoutMs - Math.min(WAIT_DEADLINE_MARGIN_MS, Math.floor(timeoutMs / 4)));
    let cutShort = false;
    const hardTimer = setTimeout(() => {
      cutShort = true;
      logger.warn({ openRequests: open.size, timeoutMs }, 'SHUTDOWN_TIMEOUT_MS passed: destroying the connections still open');
      server.closeAllConnections();
    }, timeoutMs);
    try {
      // stops listening and closes idle keep-alive connections; the callback runs when the last connection ends
      await new Promise<void>((resolve) => server.close(() => resolve()));
    } finally {
      clearTimeout(waitTimer);
      clearTimeout(hardTimer);
    }
    return !cutShort;
  };

  const disconnect = async () => {
    await hub.close();
    await queue.close();
    await webhookQueue.close();
    await batchQueue.close();
    redis.disconnect();
    store.destroy();
    await db.$disconnect();
  };

  let closing: Promise<{ drained: boolean }> | undefined;
  return {
    url,
    deps,
    close() {
      closing ??= (async () => {
        const drained = await drain();
        await disconnect();
        return { drained };
      })();
      return closing;
    },
  };
}
