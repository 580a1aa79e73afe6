import { BATCH_MAX_FILE_BYTES, invalidRequest, newId, notFound, parseBatchCreate } from '@image-edits/core';
import { type BatchRecord, getFileForKey, insertBatch } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { isFileId } from '../routes/files';

/**
 * POST /v1/batches: the request and its input file are checked (the key's own live file, purpose
 * batch, at most 200 MB), the batch recorded as `validating` and its fan-out queued. Nothing of the
 * file is read here: the worker streams it, line by line.
 */
export async function createBatch(deps: Pick<ApiDeps, 'db' | 'batchQueue' | 'logger'>, apiKeyId: string, body: unknown): Promise<BatchRecord> {
  const req = parseBatchCreate(body);
  const file = isFileId(req.inputFileId) ? await getFileForKey(deps.db, req.inputFileId, apiKeyId) : null;
  if (!file) throw notFound(`No such File object: ${req.inputFileId}`, 'input_file_id', 'file_not_found');
  if (file.purpose !== 'batch') {
    throw invalidRequest(`file ${file.id} has purpose '${file.purpose}'; a batch's input file must be uploaded with purpose 'batch'`, 'input_file_id', 'invalid_file_purpose');
  }
  if (file.bytes > BATCH_MAX_FILE_BYTES) {
    throw invalidRequest(`file ${file.id} is ${file.bytes} bytes; a batch's input file may have at most ${BATCH_MAX_FILE_BYTES} (200 MB)`, 'input_file_id', 'file_too_large');
  }
  const now = new Date();
  const batch = await insertBatch(deps.db, {
    id: newId('batch'),
    apiKeyId,
    endpoint: req.endpoint,
    inputFileId: file.id,
    completionWindow: '24h',
    metadata: req.metadata,
    expiresAt: new Date(now.getTime() + req.completionWindowMs),
  });
  try {
    await deps.batchQueue.enqueue({ batchId: batch.id, step: 'fanout' });
  } catch (err) {
    // the row is the source of truth: the worker's reconciler queues the fan-out of a batch left validating
    deps.logger.warn({ err, batchId: batch.id }, 'batch fan-out not queued; the reconciler will queue it');
  }
  return batch;
}
