import type { ServiceConfig } from '@image-edits/core';
import type { Db } from '@image-edits/db';
import { createWebhookWorker, DEFAULT_WEBHOOK_WORKER_OPTIONS, type WebhookQueue } from '@image-edits/queue';
import type { ObjectStore } from '@image-edits/storage';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { deliverWebhook, type WebhookDeliveryDeps } from './deliver';
import { startWebhookSweeper } from './sweep';

export { deliverWebhook, WEBHOOK_USER_AGENT, type WebhookDeliveryDeps } from './deliver';
export { parseRetryAfter, sendWebhook, type SendResult } from './send';
export { sweepWebhookDeliveries } from './sweep';

/** The webhook delivery worker and its sweep, as the worker process runs them. */
export async function startWebhookDelivery(
  config: ServiceConfig,
  deps: { db: Db; store: ObjectStore; webhookQueue: WebhookQueue; connection: Redis; logger: Logger; metrics?: WebhookDeliveryDeps['metrics'] },
): Promise<{ close(): Promise<void> }> {
  const env = config.env;
  const logger = deps.logger.child({ component: 'webhooks' });
  const deliveryDeps = {
    db: deps.db,
    store: deps.store,
    ttlSeconds: env.SIGNED_URL_TTL_SECONDS,
    delaysMs: env.WEBHOOK_RETRY_DELAYS_MS,
    timeoutMs: env.WEBHOOK_TIMEOUT_MS,
    allowPrivate: env.WEBHOOK_ALLOW_PRIVATE,
    logger,
    metrics: deps.metrics,
  };
  const worker = createWebhookWorker({ redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX }, deps.connection, (ctx) => deliverWebhook(deliveryDeps, ctx), {
    ...DEFAULT_WEBHOOK_WORKER_OPTIONS,
    lockDurationMs: Math.max(env.WORKER_LOCK_DURATION_MS, env.WEBHOOK_TIMEOUT_MS * 2),
    stalledIntervalMs: env.WORKER_STALLED_INTERVAL_MS,
  });
  worker.on('error', (err) => logger.error({ err }, 'webhook worker error'));
  await worker.waitUntilReady();
  const sweeper = startWebhookSweeper({ db: deps.db, webhookQueue: deps.webhookQueue, logger }, env.RECONCILE_INTERVAL_MS, env.RECONCILE_GRACE_MS);
  return {
    async close() {
      await sweeper.stop();
      await worker.close(); // waits for the attempts in flight
    },
  };
}
