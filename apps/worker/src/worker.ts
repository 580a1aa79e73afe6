import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildModelRoutes, configuredProviders, createLogger, dependencyOf, type ProviderId, type ServiceConfig } from '@image-edits/core';
import { countOpenBatches, createDb } from '@image-edits/db';
import { buildProviders } from '@image-edits/providers';
import { createBatchQueue, createEditQueue, createEditWorker, createJobEventHub, createRedis, createWebhookQueue, readEditQueueDepth } from '@image-edits/queue';
import { createObjectStore } from '@image-edits/storage';
import type { Logger } from 'pino';
import { startBatchWorker } from './batches';
import { createByteBudget } from './byte-budget';
import { keyConcurrencyLimits, keyImagesPerMinute } from './key-limits';
import { createWorkerMetrics, serveMetrics, type WorkerMetrics } from './metrics';
import { processEdit } from './process-edit';
import { startDeadlineSweeper, startReconciler } from './reconcile';
import { startWebhookDelivery } from './webhooks';

/** Batch steps one worker process runs at once. */
const BATCH_STEP_CONCURRENCY = 2;

export interface RunningWorker {
  logger: Logger;
  metrics: WorkerMetrics;
  /** where GET /metrics answers (WORKER_METRICS_PORT), null when it is off */
  metricsUrl: string | null;
  /** stops taking jobs at once, waits for the ones in flight (never aborting them), then disconnects; unbounded: the caller decides how long to wait (SHUTDOWN_TIMEOUT_MS in main.ts) */
  close(): Promise<void>;
}

export async function startWorker(config: ServiceConfig, opts: { logger?: Logger } = {}): Promise<RunningWorker> {
  const env = config.env;
  const logger = opts.logger ?? createLogger('worker', env);
  const providers = buildProviders(config);
  const settings = (provider: string) => config.registry.providers[provider as ProviderId];
  const totalConcurrency = [...providers.keys()].reduce((n, p) => n + settings(p).concurrency, 0);
  // batch steps (BATCH_STEP_CONCURRENCY of them, each a transaction at a time) get their own few connections
  const db = createDb(env.DATABASE_URL, { poolSize: Math.max(4, Math.min(env.DATABASE_POOL_SIZE, totalConcurrency + 2) + BATCH_STEP_CONCURRENCY) });
  const store = createObjectStore(config.s3);
  await store.ensureBucket();
  const redis = createRedis(env.REDIS_URL);
  const queueCfg = { redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX };
  const queue = createEditQueue(queueCfg, redis, (provider) => settings(provider));
  const webhookQueue = createWebhookQueue(queueCfg, redis, env.WEBHOOK_RETRY_DELAYS_MS);
  const batchQueue = createBatchQueue(queueCfg, redis);
  // one subscription per process: cancels reach the job running here
  const hub = await createJobEventHub(createRedis(env.REDIS_URL), env.QUEUE_PREFIX);
  const bytes = createByteBudget(env.WORKER_MAX_INFLIGHT_BYTES);
  const served = [...configuredProviders(config)].filter((p) => providers.has(p));
  // counters go where the events happen (through deps); queue depth, open batches and bytes are read when scraped
  const metrics = createWorkerMetrics({
    providers: served.map((name) => ({ name, concurrency: settings(name).concurrency })),
    queueDepth: (provider) => readEditQueueDepth(redis, env.QUEUE_PREFIX, provider),
    openBatches: () => countOpenBatches(db),
    inflight: { bytes: bytes.inFlight, waiting: bytes.waiting, limit: env.WORKER_MAX_INFLIGHT_BYTES },
    dependencyOf,
    onError: (err, what) => logger.warn({ err, what }, 'metrics: a scrape-time read failed'),
  });
  const metricsServer = env.WORKER_METRICS_PORT > 0 ? await serveMetrics(metrics.registry, { port: env.WORKER_METRICS_PORT, host: env.HOST, token: env.METRICS_TOKEN }) : null;
  const deps = { db, store, redis, prefix: env.QUEUE_PREFIX, providers, settings, queue, hub, webhookQueue, batchQueue, logger, outage: { toleranceMs: env.DEPENDENCY_OUTAGE_TOLERANCE_MS, maxRetryMs: env.DEPENDENCY_RETRY_MAX_MS }, bytes, metrics };
  // one BullMQ worker per configured provider: a slow or throttled provider holds only its own slots
  const workerRedis = createRedis(env.REDIS_URL);
  // per-key caps, shared by every worker of a provider through Redis (packages/queue/src/fairness.ts)
  const fairness = { capFor: keyConcurrencyLimits(db, env.KEY_MAX_CONCURRENT_JOBS), imagesPerMinuteFor: keyImagesPerMinute(db, env.KEY_IPM ?? 0) };
  const workers = served.map((provider) => {
    const s = settings(provider);
    const worker = createEditWorker(queueCfg, workerRedis, provider, (ctx) => processEdit(deps, ctx), {
      concurrency: s.concurrency,
      lockDurationMs: env.WORKER_LOCK_DURATION_MS,
      stalledIntervalMs: env.WORKER_STALLED_INTERVAL_MS,
      rateLimit: s.rateLimit,
      fairness,
    });
    worker.on('error', (err) => logger.error({ err, provider }, 'worker error'));
    return worker;
  });
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  const reconciler = startReconciler(
    { db, queue, webhookQueue, batchQueue, store, redis, prefix: env.QUEUE_PREFIX, logger, metrics, rowRetentionDays: env.JOB_ROW_RETENTION_DAYS },
    env.RECONCILE_INTERVAL_MS,
    env.RECONCILE_GRACE_MS,
  );
  const webhooks = await startWebhookDelivery(config, { db, store, webhookQueue, connection: workerRedis, logger, metrics });
  const sweeper = startDeadlineSweeper({ db, queue, redis, prefix: env.QUEUE_PREFIX, webhookQueue, batchQueue, logger, metrics }, env.DEADLINE_SWEEP_INTERVAL_MS);
  // batch steps: fan-out (validate, then one job per line), stop (cancel, expiry), finalize (the result files)
  const uploadDir = env.UPLOAD_DIR ?? path.join(os.tmpdir(), 'image-edits-uploads');
  mkdirSync(uploadDir, { recursive: true });
  const batches = await startBatchWorker(
    queueCfg,
    workerRedis,
    { config, db, store, queue, batchQueue, webhookQueue, routes: buildModelRoutes(config), uploadDir, logger: logger.child({ component: 'batches' }), metrics },
    { concurrency: BATCH_STEP_CONCURRENCY, lockDurationMs: env.WORKER_LOCK_DURATION_MS, stalledIntervalMs: env.WORKER_STALLED_INTERVAL_MS },
  );
  logger.info({ providers: Object.fromEntries([...providers.keys()].map((p) => [p, settings(p).concurrency])), metrics: metricsServer?.url ?? 'off' }, 'worker ready');

  return {
    logger,
    metrics,
    metricsUrl: metricsServer?.url ?? null,
    async close() {
      // Nothing new starts, all in the same tick: the periodic sweeps' timers stop (a run in progress
      // finishes) and every BullMQ worker stops fetching. Then what is in flight finishes: close
      // without force waits for active jobs and never aborts one (no provider call is cut, nothing
      // runs twice); a fan-out stops at its next chunk and another worker resumes it.
      const draining = [reconciler.stop(), sweeper.stop(), ...workers.map((w) => w.close()), batches.close()];
      const failed = (await Promise.allSettled(draining)).find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      await webhooks.close(); // after the edit workers: their last events still go out
      await hub.close();
      await queue.close();
      await webhookQueue.close();
      await batchQueue.close();
      // BullMQ closes only the connections it created itself
      workerRedis.disconnect();
      redis.disconnect();
      store.destroy();
      await db.$disconnect();
      await metricsServer?.close(); // last: a scrape during the drain still answers
    },
  };
}
