import { isFinalBatch } from '@image-edits/core';
import { findStaleBatches, findUnannouncedFinalBatches, markDueBatchesExpired } from '@image-edits/db';
import { type BatchQueue, type BatchStep, createBatchWorker, type QueueConfig } from '@image-edits/queue';
import type { Redis } from 'ioredis';
import { announceBatch, type BatchDeps, isStopping } from './deps';
import { runFanOut } from './fanout';
import { runFinalize } from './finalize';
import { runStop } from './stop';

export { announceBatch, type BatchDeps, onJobFinished } from './deps';
export { CHUNK_LINES } from './fanout';

export interface BatchWorkerSettings {
  concurrency: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
}

/** The worker of batch steps; `close` lets a fan-out in flight stop at its next chunk (it resumes elsewhere). */
export async function startBatchWorker(cfg: QueueConfig, connection: Redis, deps: BatchDeps, settings: BatchWorkerSettings): Promise<{ close(): Promise<void> }> {
  const closing = new AbortController();
  const worker = createBatchWorker(
    cfg,
    connection,
    async ({ payload }) => {
      const run: Record<BatchStep, () => Promise<void>> = {
        fanout: () => runFanOut(deps, payload.batchId, closing.signal),
        stop: () => runStop(deps, payload.batchId),
        finalize: () => runFinalize(deps, payload.batchId),
      };
      await run[payload.step]();
    },
    settings,
  );
  worker.on('error', (err) => deps.logger.error({ err }, 'batch worker error'));
  worker.on('failed', (job, err) => deps.logger.warn({ err, batchStep: job?.id, attempts: job?.attemptsMade }, 'batch step failed; it is retried'));
  await worker.waitUntilReady();
  return {
    async close() {
      closing.abort();
      await worker.close();
    },
  };
}

/**
 * Batches past their 24 h window are marked expired (they wind down: what has not run is stopped,
 * what finished stays in the output) and their stop step queued. Every worker runs it; the
 * conditional update marks each once.
 */
export async function expireDueBatches(deps: Pick<BatchDeps, 'db' | 'logger'> & { batchQueue: Pick<BatchQueue, 'enqueue'> }): Promise<number> {
  const due = await markDueBatchesExpired(deps.db);
  for (const batchId of due) {
    deps.logger.info({ batchId }, 'batch reached the end of its completion window; winding down');
    await deps.batchQueue.enqueue({ batchId, step: 'stop' });
  }
  return due.length;
}

/**
 * Postgres is the source of truth for batches too: an unfinished batch untouched for a while gets
 * the step it waits for queued again unless BullMQ still has it (a lost enqueue, Redis lost its
 * data, a step that spent its retries). Its final webhook event, if a crash lost it, is recorded.
 */
export async function reconcileBatches(
  deps: Pick<BatchDeps, 'db' | 'webhookQueue' | 'logger'> & { batchQueue: Pick<BatchQueue, 'requeueIfMissing'> },
  graceMs: number,
): Promise<number> {
  let requeued = 0;
  for (const b of await findStaleBatches(deps.db, new Date(Date.now() - graceMs))) {
    if (isFinalBatch(b.status)) continue;
    const step: BatchStep | null = b.settledAt ? 'finalize' : !b.fannedOutAt ? 'fanout' : isStopping(b) ? 'stop' : null;
    if (!step) continue; // children still running: each is reconciled on its own
    if ((await deps.batchQueue.requeueIfMissing({ batchId: b.id, step })) === 'enqueued') {
      requeued++;
      deps.logger.warn({ batchId: b.id, step }, 'batch step missing from its queue; enqueued again');
    }
  }
  // announced again, not finished again: not counted in metrics
  for (const b of await findUnannouncedFinalBatches(deps.db, 30, 3600)) await announceBatch({ db: deps.db, webhookQueue: deps.webhookQueue, logger: deps.logger }, b.id, b.status);
  return requeued;
}
