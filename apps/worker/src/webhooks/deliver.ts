import { batchObject, jobObject, type LookupAll, type MediaSource } from '@image-edits/core';
import {
  type Db,
  disableWebhookEndpoint,
  failWebhookDelivery,
  getBatch,
  getJob,
  getOrCreateKeyWebhookSecret,
  getWebhookDelivery,
  JOB_WEBHOOK_DESTINATION,
  recordWebhookAttempt,
} from '@image-edits/db';
import { RetryDelivery, type WebhookJobContext, webhookRetryDelay } from '@image-edits/queue';
import type { Logger } from 'pino';
import { Webhook } from 'standardwebhooks';
import type { WorkerMetrics } from '../metrics';
import { sendWebhook } from './send';

export const WEBHOOK_USER_AGENT = 'image-edits-webhooks/1.0 (+https://www.standardwebhooks.com)';

export interface WebhookDeliveryDeps {
  db: Db;
  store: MediaSource;
  /** lifetime of the result URLs in the payload */
  ttlSeconds: number;
  /** WEBHOOK_RETRY_DELAYS_MS */
  delaysMs: readonly number[];
  timeoutMs: number;
  allowPrivate: boolean;
  logger: Logger;
  lookup?: LookupAll;
  metrics?: Pick<WorkerMetrics, 'webhookDeliveries' | 'webhookAttemptSeconds'> | undefined;
}

/**
 * One attempt of one delivery: the job (or batch) is rendered now (fresh presigned URLs, never base64), signed
 * per Standard Webhooks with the endpoint's secret (or the key's default one for a per-submission
 * webhook_url) under the delivery's stable message id, sent, and the attempt recorded. A retryable
 * failure with attempts left throws RetryDelivery with the wait (schedule, Retry-After).
 */
export async function deliverWebhook(deps: WebhookDeliveryDeps, ctx: WebhookJobContext): Promise<void> {
  const { deliveryId } = ctx.payload;
  const { db } = deps;
  const delivery = await getWebhookDelivery(db, deliveryId);
  // finished meanwhile (or a stale duplicate of the queue entry): nothing to do
  if (delivery?.status !== 'pending') return;
  const log = deps.logger.child({ deliveryId, jobId: delivery.jobId, batchId: delivery.batchId, event: delivery.eventType, attempt: ctx.attempt });
  /** nothing left to send to (or about): the delivery fails without an attempt */
  const drop = (reason: string) => {
    deps.metrics?.webhookDeliveries.inc({ outcome: 'dropped' });
    return failWebhookDelivery(db, deliveryId, reason);
  };

  let secret: string;
  if (delivery.endpoint) {
    if (delivery.endpoint.deletedAt) return drop('the webhook endpoint was deleted');
    secret = delivery.endpoint.secret;
  } else if (delivery.destination === JOB_WEBHOOK_DESTINATION) {
    secret = await getOrCreateKeyWebhookSecret(db, delivery.apiKeyId);
  } else {
    return drop('the webhook endpoint was deleted');
  }
  let data: Record<string, unknown>;
  if (delivery.batchId) {
    // a batch event: the batch object as it is now
    const batch = await getBatch(db, delivery.batchId);
    if (!batch) return drop('the batch no longer exists');
    data = batchObject(batch);
  } else {
    const job = delivery.jobId ? await getJob(db, delivery.jobId) : null;
    if (!job) return drop('the job no longer exists');
    data = await jobObject(job, deps.store, deps.ttlSeconds, { urlsOnly: true });
  }

  const body = JSON.stringify({ type: delivery.eventType, timestamp: delivery.createdAt.toISOString(), data });
  const sentAt = new Date();
  const headers = {
    'content-type': 'application/json',
    'user-agent': WEBHOOK_USER_AGENT,
    'webhook-id': delivery.messageId,
    'webhook-timestamp': String(Math.floor(sentAt.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(delivery.messageId, sentAt, body),
  };
  const result = await sendWebhook({ url: delivery.url, headers, body, timeoutMs: deps.timeoutMs, allowPrivate: deps.allowPrivate, ...(deps.lookup ? { lookup: deps.lookup } : {}) });

  const retry = result.outcome === 'retry' && !ctx.isLastAttempt;
  const delayMs = retry ? webhookRetryDelay(deps.delaysMs, ctx.attempt, result.retryAfterMs) : 0;
  const status = result.outcome === 'delivered' ? 'succeeded' : retry ? 'pending' : 'failed';
  const outcome = result.outcome === 'delivered' || result.outcome === 'gone' ? result.outcome : retry ? 'retrying' : 'failed';
  deps.metrics?.webhookDeliveries.inc({ outcome });
  deps.metrics?.webhookAttemptSeconds.observe({ outcome }, result.latencyMs / 1000);
  const attempt = await recordWebhookAttempt(db, deliveryId, {
    statusCode: result.statusCode,
    latencyMs: result.latencyMs,
    error: result.error,
    status,
    nextAttemptAt: retry ? new Date(Date.now() + delayMs) : null,
  });
  // 410 Gone: the receiver asks for no more; only that endpoint stops (a per-submission URL has nothing to disable)
  if (result.outcome === 'gone' && delivery.endpointId) await disableWebhookEndpoint(db, delivery.endpointId);
  const summary = { recorded: attempt, statusCode: result.statusCode, ms: result.latencyMs, outcome: result.outcome };
  if (status === 'succeeded') log.info(summary, 'webhook delivered');
  else log.warn({ ...summary, error: result.error, ...(retry ? { retryInMs: delayMs } : {}) }, retry ? 'webhook attempt failed; will retry' : 'webhook delivery failed');
  if (retry) throw new RetryDelivery(delayMs);
}
