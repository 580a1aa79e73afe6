import type { JobError, WebhookEvent } from '@image-edits/core';
import { type Db, emitJobEvent, markFailed, type WebhookEnqueuer } from '@image-edits/db';
import { type BatchQueue, publishJobEvent } from '@image-edits/queue';
import { type ObjectStore, outputPrefix } from '@image-edits/storage';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { onJobFinished } from './batches/deps';
import type { WorkerMetrics } from './metrics';

export interface JobEndDeps {
  db: Db;
  store: Pick<ObjectStore, 'deletePrefix'>;
  redis: Redis;
  prefix: string;
  webhookQueue: WebhookEnqueuer;
  batchQueue: Pick<BatchQueue, 'enqueue'>;
  logger: Logger;
  metrics?: Pick<WorkerMetrics, 'jobsFinished'> | undefined;
}

/**
 * A job fails for good: the row moves (the one step that must succeed; its error reaches the caller),
 * then, best effort, sync waiters hear it at once, no output object of it stays (an attempt may have
 * stored some before failing), webhooks and its batch learn it. Null when it was final already.
 */
export async function failJob(deps: JobEndDeps, jobId: string, error: JobError, job: { provider: string; model: string } = { provider: '', model: '' }): Promise<boolean> {
  const finished = await markFailed(deps.db, jobId, error);
  if (!finished) return false;
  deps.metrics?.jobsFinished.inc({ status: 'failed', provider: job.provider, model: job.model, code: error.code });
  await announceEnd(deps, jobId, 'failed', finished.hasWebhookTargets);
  await deps.store.deletePrefix(outputPrefix(jobId)).catch((err: unknown) => deps.logger.warn({ err, jobId }, 'outputs of a failed job not deleted'));
  await onJobFinished(deps, finished);
  return true;
}

/**
 * After a final state is committed: the event on Redis (waiters) and the webhook rows. Neither may
 * undo the commit: a lost event is caught by the waiters' periodic re-read, a lost webhook by the
 * reconciler's announcement of missed events. `hasWebhookTargets` (from the committing statement)
 * false: no webhook row is due, and none is looked for.
 */
export async function announceEnd(deps: Omit<JobEndDeps, 'store' | 'batchQueue'>, jobId: string, status: 'succeeded' | 'failed', hasWebhookTargets: boolean): Promise<void> {
  await publishJobEvent(deps.redis, deps.prefix, { jobId, status }).catch((err: unknown) => deps.logger.warn({ err, jobId }, 'job event not published; waiters re-read the row'));
  if (hasWebhookTargets) await emitWebhooks(deps, jobId, `job.${status}`);
}

/** The job's state is already committed: a webhook hiccup is logged, never turned into a job failure. */
export async function emitWebhooks(deps: Pick<JobEndDeps, 'db' | 'webhookQueue' | 'logger'>, jobId: string, type: WebhookEvent): Promise<void> {
  await emitJobEvent({ db: deps.db, webhookQueue: deps.webhookQueue, logger: deps.logger }, jobId, type).catch((err: unknown) => deps.logger.error({ err, jobId, event: type }, 'webhook event not recorded'));
}
