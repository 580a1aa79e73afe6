import { conflict, notFound } from '@image-edits/core';
import { emitJobEvent, getJobForKey, type JobRecord, markCanceled } from '@image-edits/db';
import { publishJobEvent } from '@image-edits/queue';
import type { ApiDeps } from '../deps';

/**
 * Cancels a job that has not finished. A queued one is taken off its queue; a running one is
 * aborted by its worker, which hears the `canceled` event (its late result is discarded, nothing
 * is stored or billed). A finished job answers 409 with its status.
 */
export async function cancelJob(deps: Pick<ApiDeps, 'db' | 'queue' | 'redis' | 'config' | 'logger' | 'webhookQueue' | 'batchQueue'>, apiKeyId: string, id: string): Promise<JobRecord> {
  const job = await getJobForKey(deps.db, id, apiKeyId);
  if (!job) throw notFound(`No job with id '${id}'`, 'id', 'job_not_found');
  const finished = await markCanceled(deps.db, id);
  if (!finished) {
    const now = (await getJobForKey(deps.db, id, apiKeyId)) ?? job;
    throw conflict(`Job ${id} is already ${now.status} and cannot be canceled`, 'job_not_cancelable');
  }
  // waiters and the worker running it hear this; the row already says canceled
  await publishJobEvent(deps.redis, deps.config.env.QUEUE_PREFIX, { jobId: id, status: 'canceled' });
  await emitJobEvent({ db: deps.db, webhookQueue: deps.webhookQueue, logger: deps.logger }, id, 'job.canceled');
  // a batch child that was its batch's last open request: the batch's files are written now
  if (finished.batchSettled && finished.batchId) {
    await deps.batchQueue.enqueue({ batchId: finished.batchId, step: 'finalize' }).catch((err: unknown) => deps.logger.warn({ err, batchId: finished.batchId }, 'finalize step not queued; the reconciler will queue it'));
  }
  if (job.status === 'queued') {
    try {
      await deps.queue.remove(job.provider, { jobId: id, target: job.targetIndex });
    } catch (err) {
      // harmless: a worker that picks it up finds it canceled and skips it
      deps.logger.warn({ err, jobId: id }, 'could not take the canceled job off its queue');
    }
  }
  return (await getJobForKey(deps.db, id, apiKeyId)) ?? job;
}
