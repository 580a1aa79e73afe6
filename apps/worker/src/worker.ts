import { buildModelRoutes, type ServiceConfig } from '@image-edits/core';
import { createDb } from '@image-edits/db';
import { buildProviders } from '@image-edits/providers';
import { createEditQueue, createEditWorker, createRedis } from '@image-edits/queue';
import { createObjectStore } from '@image-edits/storage';
import pino, { type Logger } from 'pino';
import { processEdit } from './process-edit';
import { startReconciler } from './reconcile';

export interface RunningWorker {
  logger: Logger;
  /** stops taking jobs, waits for the ones in flight, then disconnects */
  close(): Promise<void>;
}

export async function startWorker(config: ServiceConfig, opts: { logger?: Logger } = {}): Promise<RunningWorker> {
  const env = config.env;
  const logger = opts.logger ?? pino({ level: env.LOG_LEVEL, name: 'worker' });
  const routes = buildModelRoutes(config);
  const db = createDb(env.DATABASE_URL, { poolSize: Math.max(4, Math.min(env.DATABASE_POOL_SIZE, env.WORKER_CONCURRENCY + 2)) });
  const store = createObjectStore(config.s3);
  await store.ensureBucket();
  const redis = createRedis(env.REDIS_URL);
  const queueCfg = { redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX };
  const queue = createEditQueue(queueCfg, redis, { attempts: env.JOB_ATTEMPTS, backoffMs: env.JOB_BACKOFF_MS });
  const deps = {
    db,
    store,
    redis,
    prefix: env.QUEUE_PREFIX,
    providers: buildProviders(config),
    upstreamModel: (model: string) => routes.get(model)?.upstream,
    logger,
  };
  const workerRedis = createRedis(env.REDIS_URL);
  const worker = createEditWorker(queueCfg, workerRedis, (ctx) => processEdit(deps, ctx), {
    concurrency: env.WORKER_CONCURRENCY,
    lockDurationMs: env.WORKER_LOCK_DURATION_MS,
    stalledIntervalMs: env.WORKER_STALLED_INTERVAL_MS,
  });
  worker.on('error', (err) => logger.error({ err }, 'worker error'));
  await worker.waitUntilReady();
  const reconciler = startReconciler({ db, queue, logger }, env.RECONCILE_INTERVAL_MS, env.RECONCILE_GRACE_MS);
  logger.info({ concurrency: env.WORKER_CONCURRENCY, providers: [...deps.providers.keys()] }, 'worker ready');

  return {
    logger,
    async close() {
      await reconciler.stop();
      await worker.close(); // waits for in-flight jobs to finish
      await queue.close();
      // BullMQ closes only the connections it created itself
      workerRedis.disconnect();
      redis.disconnect();
      store.destroy();
      await db.$disconnect();
    },
  };
}
