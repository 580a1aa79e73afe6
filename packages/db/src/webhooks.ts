import { type BatchWebhookEvent, newId, newWebhookSecret, type WebhookEvent, wantsEvent } from '@image-edits/core';
import type { Db } from './client';
import { Prisma, type WebhookAttempt, type WebhookDelivery, type WebhookEndpoint } from './generated/prisma/client';

/** An endpoint (`webhook_endpoints e`) that is sent events: neither deleted nor disabled. One rule for every query that looks for one. */
export const LIVE_ENDPOINT = Prisma.sql`e.deleted_at IS NULL AND e.disabled_at IS NULL`;

/**
 * Whether the `jobs` row under `alias` has anywhere to send its events: its own webhook, or, not
 * being a batch child, a live endpoint of its key (what emitJobEvent looks for).
 */
export const hasWebhookTargets = (alias: string) => {
  const j = Prisma.raw(alias);
  return Prisma.sql`(${j}.webhook_url IS NOT NULL OR (${j}.batch_id IS NULL AND EXISTS (
    SELECT 1 FROM webhook_endpoints e WHERE e.api_key_id = ${j}.api_key_id AND ${LIVE_ENDPOINT})))`;
};

/** Webhook endpoints, deliveries and their attempts, and the key's default secret. */
export type WebhookEndpointRecord = WebhookEndpoint;
export type WebhookDeliveryRecord = WebhookDelivery;
export type WebhookAttemptRecord = WebhookAttempt;
export type WebhookDeliveryStatus = WebhookDelivery['status'];

/** `destination` of a delivery to the job's own webhook_url (otherwise it is the endpoint's id). */
export const JOB_WEBHOOK_DESTINATION = 'webhook_url';

// ---- the key's default secret (signs deliveries to per-submission webhook_url) ----

/** The key's secret, created on first use; concurrent first reads agree on one. */
export async function getOrCreateKeyWebhookSecret(db: Db, apiKeyId: string): Promise<string> {
  await db.apiKey.updateMany({ where: { id: apiKeyId, webhookSecret: null }, data: { webhookSecret: newWebhookSecret() } });
  const row = await db.apiKey.findUniqueOrThrow({ where: { id: apiKeyId }, select: { webhookSecret: true } });
  return row.webhookSecret!;
}

/** A new secret at once: deliveries sent from now on are signed with it. */
export async function rotateKeyWebhookSecret(db: Db, apiKeyId: string): Promise<string> {
  const secret = newWebhookSecret();
  await db.apiKey.update({ where: { id: apiKeyId }, data: { webhookSecret: secret } });
  return secret;
}

// ---- endpoints ----

export interface NewWebhookEndpoint {
  apiKeyId: string;
  url: string;
  events: WebhookEvent[];
  description?: string | undefined;
}

export async function createWebhookEndpoint(db: Db, e: NewWebhookEndpoint): Promise<WebhookEndpointRecord> {
  return db.webhookEndpoint.create({
    data: { id: newId('we'), apiKeyId: e.apiKeyId, url: e.url, secret: newWebhookSecret(), events: e.events, description: e.description ?? null },
  });
}

/** The key's endpoints, oldest first; deleted ones are gone, disabled ones are listed. */
export async function listWebhookEndpoints(db: Db, apiKeyId: string): Promise<WebhookEndpointRecord[]> {
  return db.webhookEndpoint.findMany({ where: { apiKeyId, deletedAt: null }, orderBy: { createdAt: 'asc' } });
}

export async function countWebhookEndpoints(db: Db, apiKeyId: string): Promise<number> {
  return db.webhookEndpoint.count({ where: { apiKeyId, deletedAt: null } });
}

/** Another key's endpoint is simply not found. */
export async function getWebhookEndpointForKey(db: Db, id: string, apiKeyId: string): Promise<WebhookEndpointRecord | null> {
  return db.webhookEndpoint.findFirst({ where: { id, apiKeyId, deletedAt: null } });
}

/** Soft delete: no more events go there; past deliveries stay listed. */
export async function deleteWebhookEndpoint(db: Db, id: string, apiKeyId: string): Promise<boolean> {
  const res = await db.webhookEndpoint.updateMany({ where: { id, apiKeyId, deletedAt: null }, data: { deletedAt: new Date() } });
  return res.count > 0;
}

/** The receiver answered 410 Gone (Standard Webhooks: stop sending there). */
export async function disableWebhookEndpoint(db: Db, id: string): Promise<void> {
  await db.webhookEndpoint.updateMany({ where: { id, disabledAt: null }, data: { disabledAt: new Date() } });
}

// ---- deliveries ----

export type DeliveryWithEndpoint = WebhookDeliveryRecord & { endpoint: WebhookEndpointRecord | null };

export async function getWebhookDelivery(db: Db, id: string): Promise<DeliveryWithEndpoint | null> {
  return db.webhookDelivery.findUnique({ where: { id }, include: { endpoint: true } });
}

export type DeliveryWithAttempts = WebhookDeliveryRecord & { attemptLog: WebhookAttemptRecord[] };

export async function listWebhookDeliveriesForJob(db: Db, jobId: string, apiKeyId: string): Promise<DeliveryWithAttempts[]> {
  return db.webhookDelivery.findMany({
    where: { jobId, apiKeyId },
    orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
    include: { attemptLog: { orderBy: { attempt: 'asc' } } },
  });
}

export async function getWebhookDeliveryForKey(db: Db, id: string, jobId: string, apiKeyId: string): Promise<DeliveryWithAttempts | null> {
  return db.webhookDelivery.findFirst({ where: { id, jobId, apiKeyId }, include: { attemptLog: { orderBy: { attempt: 'asc' } } } });
}

export interface AttemptOutcome {
  /** null when no HTTP response came */
  statusCode: number | null;
  latencyMs: number;
  error: string | null;
  /** the delivery's status after this attempt: pending while retries remain */
  status: WebhookDeliveryStatus;
  nextAttemptAt: Date | null;
}

/** One attempt: its row and the delivery's summary, in one transaction. Returns the attempt number. */
export async function recordWebhookAttempt(db: Db, deliveryId: string, a: AttemptOutcome): Promise<number> {
  return db.$transaction(async (tx) => {
    const d = await tx.webhookDelivery.update({
      where: { id: deliveryId },
      data: { attempts: { increment: 1 }, status: a.status, lastStatusCode: a.statusCode, lastError: a.error, nextAttemptAt: a.nextAttemptAt, updatedAt: new Date() },
      select: { attempts: true },
    });
    await tx.webhookAttempt.create({
      data: { id: newId('wha'), deliveryId, attempt: d.attempts, statusCode: a.statusCode, latencyMs: Math.round(a.latencyMs), error: a.error },
    });
    return d.attempts;
  });
}

/** A manual retry: a finished delivery goes back to pending. False while it is still pending. */
export async function reopenWebhookDelivery(db: Db, id: string): Promise<boolean> {
  const res = await db.webhookDelivery.updateMany({ where: { id, status: { in: ['succeeded', 'failed'] } }, data: { status: 'pending', nextAttemptAt: new Date(), updatedAt: new Date() } });
  return res.count > 0;
}

/** Ends a delivery without an attempt (its job or endpoint is gone, or it could not be queued). */
export async function failWebhookDelivery(db: Db, id: string, error: string): Promise<void> {
  await db.webhookDelivery.updateMany({ where: { id, status: 'pending' }, data: { status: 'failed', lastError: error, nextAttemptAt: null, updatedAt: new Date() } });
}

/** Pending deliveries whose next attempt is overdue: candidates for re-enqueueing when Redis lost them. */
export async function findOverdueWebhookDeliveries(db: Db, olderThan: Date, limit: number): Promise<{ id: string }[]> {
  return db.webhookDelivery.findMany({
    where: { status: 'pending', OR: [{ nextAttemptAt: { lt: olderThan } }, { nextAttemptAt: null, updatedAt: { lt: olderThan } }] },
    select: { id: true },
    orderBy: { updatedAt: 'asc' },
    take: limit,
  });
}

// ---- events ----

/** What emitJobEvent needs of the webhook queue (packages/queue's WebhookQueue fits). */
export interface WebhookEnqueuer {
  enqueue(payload: { deliveryId: string }): Promise<void>;
}

export interface EmitDeps {
  db: Db;
  webhookQueue: WebhookEnqueuer;
  logger?: { warn(obj: object, msg: string): void };
}

/**
 * A job event for webhooks: one delivery per destination that wants it (the job's own webhook_url,
 * and each of the key's live endpoints whose filter has the event; an empty filter means the final
 * events), recorded, then queued. A batch child's events go to its own webhook_url only: the key's
 * endpoints hear of the batch (emitBatchEvent), not of each of its thousands of requests. Idempotent: the unique (job, event, destination) means a second
 * call creates nothing, and the queue's job id is the delivery id, so nothing is sent twice.
 * A failed enqueue is logged, not thrown: the delivery row stands and the worker's sweep queues it.
 */
export async function emitJobEvent(deps: EmitDeps, jobId: string, type: WebhookEvent): Promise<void> {
  const { db } = deps;
  // the job's own webhook and its key's live endpoints in one round trip: most jobs have none,
  // and this runs on every job's start and finish
  const candidates = await db.$queryRaw<Array<{ api_key_id: string; endpoint_id: string | null; url: string; events: string[] | null }>>`
    SELECT j.api_key_id, NULL AS endpoint_id, j.webhook_url AS url, j.webhook_events AS events
      FROM jobs j WHERE j.id = ${jobId} AND j.webhook_url IS NOT NULL
    UNION ALL
    SELECT e.api_key_id, e.id AS endpoint_id, e.url, e.events
      FROM webhook_endpoints e JOIN jobs j ON j.api_key_id = e.api_key_id
      WHERE j.id = ${jobId} AND j.batch_id IS NULL AND ${LIVE_ENDPOINT}`;
  const wanted = candidates.filter((c) => wantsEvent(c.events ?? [], type));
  if (wanted.length === 0) return;
  const apiKeyId = wanted[0]!.api_key_id;
  const destinations = wanted.map((c) => ({ destination: c.endpoint_id ?? JOB_WEBHOOK_DESTINATION, endpointId: c.endpoint_id, url: c.url }));
  await db.webhookDelivery.createMany({
    data: destinations.map((d) => ({ id: newId('whd'), messageId: newId('msg'), apiKeyId, jobId, eventType: type, ...d })),
    skipDuplicates: true,
  });
  const pending = await db.webhookDelivery.findMany({ where: { jobId, eventType: type, status: 'pending' }, select: { id: true } });
  await enqueueDeliveries(deps, pending, { jobId, event: type });
}

async function enqueueDeliveries(deps: EmitDeps, pending: { id: string }[], about: Record<string, string>): Promise<void> {
  for (const d of pending) {
    try {
      await deps.webhookQueue.enqueue({ deliveryId: d.id });
    } catch (err) {
      deps.logger?.warn({ err, ...about, deliveryId: d.id }, 'webhook delivery not queued; the sweep will queue it');
    }
  }
}

/**
 * A batch event (batch.completed, batch.failed, batch.cancelled, batch.expired) for the key's live
 * endpoints that want it; `data` is the batch object. Idempotent as emitJobEvent is: the unique
 * (batch, event, destination) makes a second call create nothing.
 */
export async function emitBatchEvent(deps: EmitDeps, batchId: string, type: BatchWebhookEvent): Promise<void> {
  const { db } = deps;
  const candidates = await db.$queryRaw<Array<{ api_key_id: string; endpoint_id: string; url: string; events: string[] | null }>>`
    SELECT e.api_key_id, e.id AS endpoint_id, e.url, e.events
      FROM webhook_endpoints e JOIN batches b ON b.api_key_id = e.api_key_id
      WHERE b.id = ${batchId} AND ${LIVE_ENDPOINT}`;
  const wanted = candidates.filter((c) => wantsEvent(c.events ?? [], type));
  if (wanted.length === 0) return;
  await db.webhookDelivery.createMany({
    data: wanted.map((c) => ({ id: newId('whd'), messageId: newId('msg'), apiKeyId: c.api_key_id, batchId, eventType: type, destination: c.endpoint_id, endpointId: c.endpoint_id, url: c.url })),
    skipDuplicates: true,
  });
  const pending = await db.webhookDelivery.findMany({ where: { batchId, eventType: type, status: 'pending' }, select: { id: true } });
  await enqueueDeliveries(deps, pending, { batchId, event: type });
}

/** The event a final batch status announces. */
export const batchEventFor = (status: 'completed' | 'failed' | 'cancelled' | 'expired'): BatchWebhookEvent => `batch.${status}`;

/** Final batches of the last `newerThanSeconds` (but not the last `olderThanSeconds`) whose key has endpoints but no delivery of their final event. */
export async function findUnannouncedFinalBatches(db: Db, olderThanSeconds: number, newerThanSeconds: number, limit = 100): Promise<Array<{ id: string; status: 'completed' | 'failed' | 'cancelled' | 'expired' }>> {
  return db.$queryRaw`
    SELECT b.id, b.status::text AS status FROM batches b
    WHERE b.status IN ('completed', 'failed', 'cancelled', 'expired')
      AND b.updated_at >= (now() AT TIME ZONE 'UTC') - make_interval(secs => ${newerThanSeconds})
      AND b.updated_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => ${olderThanSeconds})
      AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.api_key_id = b.api_key_id AND ${LIVE_ENDPOINT})
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.batch_id = b.id AND d.event_type = 'batch.' || b.status::text)
    ORDER BY b.updated_at
    LIMIT ${limit}`;
}

/**
 * Final jobs, finished between `newerThanSeconds` and `olderThanSeconds` ago, that have somewhere to send webhooks to but no
 * delivery for their final event: the process that finished them died before emitting it. The
 * reconciler emits those again (emitJobEvent is idempotent, so a race only costs a query).
 */
export async function findUnannouncedFinalJobs(db: Db, olderThanSeconds: number, newerThanSeconds: number, limit = 500): Promise<Array<{ id: string; status: string }>> {
  // timestamps are UTC without a zone (Prisma's DateTime): compare in SQL, not with JS Dates
  return db.$queryRaw<Array<{ id: string; status: string }>>`
    SELECT j.id, j.status::text AS status FROM jobs j
    WHERE j.status IN ('succeeded', 'failed', 'canceled', 'expired')
      AND j.completed_at >= (now() AT TIME ZONE 'UTC') - make_interval(secs => ${newerThanSeconds})
      AND j.completed_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => ${olderThanSeconds})
      AND ${hasWebhookTargets('j')}
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.job_id = j.id AND d.event_type = 'job.' || j.status::text)
    ORDER BY j.completed_at
    LIMIT ${limit}`;
}
