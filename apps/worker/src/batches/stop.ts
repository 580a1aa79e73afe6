import { isFinalBatch } from '@image-edits/core';
import { emitJobEvent, getBatch, stopQueuedChildren } from '@image-edits/db';
import { type BatchDeps, isStopping, onJobFinished } from './deps';

/** Children taken off their queues at once. */
const STOP_PAGE = 500;

/**
 * The `stop` step of a cancelling (or expired) batch: its children that have not started become
 * canceled (expired), a page per statement that also counts them on the batch, and leave their
 * provider queues (which gives their places in line back). Running children finish; their results
 * stay in the output. markStarted already refuses to start a child of a stopping batch, so nothing
 * new starts while this runs.
 */
export async function runStop(deps: BatchDeps, batchId: string): Promise<void> {
  const batch = await getBatch(deps.db, batchId);
  if (!batch || isFinalBatch(batch.status) || !isStopping(batch)) return;
  const status = batch.status === 'cancelling' ? 'canceled' : 'expired';
  let stopped = 0;
  for (;;) {
    const page = await stopQueuedChildren(deps.db, batchId, status, STOP_PAGE);
    if (page.jobs.length === 0) break;
    stopped += page.jobs.length;
    // the page at once: ioredis pipelines the removals
    await Promise.all(
      page.jobs.map(async (job) => {
        deps.metrics?.jobsFinished.inc({ status, provider: job.provider, model: '', code: '' });
        // harmless if it fails: a worker that picks the job up finds it final and skips it
        await deps.queue.remove(job.provider, { jobId: job.id, target: job.targetIndex }).catch((err: unknown) => deps.logger.warn({ err, jobId: job.id }, 'stopped child not taken off its queue'));
        // a line's own webhook_url hears of its job (the key's endpoints hear of the batch)
        if (job.hasWebhook) await emitJobEvent(deps, job.id, `job.${status}`).catch((err: unknown) => deps.logger.warn({ err, jobId: job.id }, 'webhook event not recorded'));
      }),
    );
    if (page.settled) await onJobFinished(deps, { batchId, batchSettled: true });
  }
  deps.logger.info({ batchId, stopped, as: status }, 'batch children that had not started are stopped');
}
