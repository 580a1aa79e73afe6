import { conflict, isFinal, isFinalBatch, notFound } from '@image-edits/core';
import { eraseJob, getBatch, getJobForKey } from '@image-edits/db';
import { jobPrefix } from '@image-edits/storage';
import type { ApiDeps } from '../deps';

/**
 * DELETE /v1/jobs/{id}: the erasure of a final job (GDPR). Its objects (inputs, outputs) are deleted
 * from S3, then the row loses the prompt, metadata and the client's other texts at once; a tombstone
 * (status, model, usage) stays for the usage reports until the row purge (JOB_ROW_RETENTION_DAYS),
 * and the key no longer finds the job. A queued or running job is 409 (cancel it first); a batch
 * child while its batch is unfinished is 409 too (finalize still writes it to the output file).
 * Another key's job, or one already deleted, is 404.
 */
export async function deleteJob(deps: Pick<ApiDeps, 'db' | 'store'>, apiKeyId: string, id: string): Promise<{ id: string; object: 'image.edit.job.deleted'; deleted: true }> {
  const job = await getJobForKey(deps.db, id, apiKeyId);
  if (!job) throw notFound(`No job with id '${id}'`, 'id', 'job_not_found');
  if (!isFinal(job.status)) throw conflict(`Job ${id} is ${job.status}; cancel it first (POST /v1/jobs/${id}/cancel), then delete it`, 'job_not_final');
  if (job.batchId) {
    const batch = await getBatch(deps.db, job.batchId);
    if (batch && !isFinalBatch(batch.status)) throw conflict(`Job ${id} belongs to batch ${job.batchId}, which is ${batch.status}; delete it once the batch has finished`, 'batch_in_progress');
  }
  // the objects first: a failure here leaves the job as it was, and the client may try again
  await deps.store.deletePrefix(jobPrefix(id));
  if (!(await eraseJob(deps.db, id, apiKeyId))) throw notFound(`No job with id '${id}'`, 'id', 'job_not_found');
  return { id, object: 'image.edit.job.deleted', deleted: true };
}
