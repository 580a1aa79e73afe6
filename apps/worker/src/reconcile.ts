import { emitJobEvent, expireOverdue, findStaleUnfinished, findUnannouncedFinalJobs, purgeExpiredIdempotencyKeys, touchJob, type Db } from '@image-edits/db';
import { failJob, type JobEndDeps } from './job-end';
import { type BatchQueue, type EditQueue, publishJobEvent, type WebhookQueue } from '@image-edits/queue';
import type { WebhookEvent } from '@image-edits/core';
import type { Redis } from 'ioredis';
import { type Periodic, runEvery } from './periodic';
import type { Logger } from 'pino';
import type { ObjectStore } from '@image-edits/storage';
import { expireDueBatches, onJobFinished, reconcileBatches } from './batches';
import { sweepOrphanObjects } from './orphans';
import { purgeExpiredFiles } from './purge-files';
import { sweepRetention } from './retention';
import type { WorkerMetrics } from './metrics';

interface ReconcileDeps extends JobEndDeps {
  queue: EditQueue;
  batchQueue: Pick<BatchQueue, 'enqueue' | 'requeueIfMissing'>;
}

/**
 * Postgres is the source of truth: a job it holds as queued or in progress that BullMQ no longer
 * has (Redis restarted without persistence, an enqueue that failed after the insert) is enqueued
 * again. Safe with many workers: the BullMQ job id is the row id, so duplicates collapse.
 */
export async function reconcileOnce(deps: ReconcileDeps, graceMs: number, batch = 500): Promise<number> {
  const stale = await findStaleUnfinished(deps.db, new Date(Date.now() - graceMs), batch);
  let requeued = 0;
  for (const job of stale) {
    // the payload carries what fairness needs (a batch child must also say `batch: true`)
    const outcome = await deps.queue.requeueIfMissing(job.provider, { jobId: job.id, target: job.targetIndex, apiKeyId: job.apiKeyId, ...(job.batchId ? { batch: true } : {}) });
    if (outcome === 'present') continue;
    if (outcome === 'crashed') {
      // a poison job: it took its worker down every time it ran; feeding it to the next one would loop forever
      const failed = await failJob(deps, job.id, {
        message: 'The edit stopped the worker running it several times (a crash or running out of memory) and was given up; it may be submitted again',
        type: 'server_error',
        code: 'worker_crashed',
        status: 500,
      }, { provider: job.provider, model: '' });
      if (failed) deps.logger.error({ jobId: job.id, provider: job.provider }, 'job failed in the queue after repeated worker crashes; marked failed');
      continue;
    }
    await touchJob(deps.db, job.id);
    requeued++;
    deps.logger.warn({ jobId: job.id, status: job.status }, 'job missing from the queue; enqueued again');
  }
  return requeued;
}

/**
 * A worker that died between finishing a job and recording its webhook event loses nothing: jobs
 * finished over the last hour (but not the last 30 s, still being announced) with no delivery
 * for their final event are announced again.
 */
export async function announceMissedEvents(deps: Pick<ReconcileDeps, 'db' | 'webhookQueue' | 'logger'>): Promise<number> {
  const missed = await findUnannouncedFinalJobs(deps.db, 30, 3600);
  for (const job of missed) await emitJobEvent(deps, job.id, `job.${job.status}` as WebhookEvent);
  return missed.length;
}

export function startReconciler(
  deps: ReconcileDeps & { store: Pick<ObjectStore, 'delete' | 'listKeys' | 'deletePrefix' | 'deleteMany'>; rowRetentionDays?: number },
  intervalMs: number,
  graceMs: number,
): Periodic {
  return runEvery(
    intervalMs,
    async () => {
      await reconcileOnce(deps, graceMs);
      await announceMissedEvents(deps);
      await reconcileBatches(deps, graceMs);
      await purgeExpiredIdempotencyKeys(deps.db);
      await purgeExpiredFiles(deps);
      await sweepOrphanObjects(deps);
      // expired inputs and results, and old rows (JOB_ROW_RETENTION_DAYS; usage stays)
      await sweepRetention(deps, { rowRetentionDays: deps.rowRetentionDays ?? 90 });
    },
    deps.logger,
    'reconcile',
  );
}

/**
 * Jobs that waited past their `Cancel-After` deadline without starting become expired (never run,
 * never billed) and leave their queue. Every worker sweeps; the conditional update expires each once.
 */
export function startDeadlineSweeper(
  deps: { db: Db; queue: EditQueue; redis: Redis; prefix: string; webhookQueue: Pick<WebhookQueue, 'enqueue'>; batchQueue: Pick<BatchQueue, 'enqueue'>; logger: Logger; metrics?: Pick<WorkerMetrics, 'jobsFinished'> },
  intervalMs: number,
): Periodic {
  const sweep = async () => {
    for (const job of await expireOverdue(deps.db)) {
      deps.metrics?.jobsFinished.inc({ status: 'expired', provider: job.provider, model: job.model, code: '' });
      await publishJobEvent(deps.redis, deps.prefix, { jobId: job.id, status: 'expired' });
      await emitJobEvent(deps, job.id, 'job.expired');
      await deps.queue.remove(job.provider, { jobId: job.id, target: job.targetIndex }).catch((err: unknown) => deps.logger.warn({ err, jobId: job.id }, 'expired job not taken off its queue; a worker will skip it'));
      await onJobFinished(deps, job);
      deps.logger.info({ jobId: job.id }, 'job expired before it started');
    }
    // batches past their completion window wind down the same way
    await expireDueBatches(deps);
  };
  return runEvery(intervalMs, sweep, deps.logger, 'deadline sweep');
}
