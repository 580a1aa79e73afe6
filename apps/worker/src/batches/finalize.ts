import { Readable } from 'node:stream';
import { batchRequestId, batchResultFileId, editResponse, isFinalBatch } from '@image-edits/core';
import { type BatchRecord, type FailedRequest, finishBatch, getBatch, insertFileIfMissing, pageFailedRequests, pageSucceededChildren } from '@image-edits/db';
import { fileKey } from '@image-edits/storage';
import { announceBatch, type BatchDeps, batchPrefix } from './deps';

/** Rows read at a time while writing a file. */
const PAGE = 200;
/** Output files are kept as long as OpenAI keeps them: 30 days. */
const RESULT_FILE_TTL_MS = 30 * 24 * 3600 * 1000;

/**
 * The `finalize` step, once every request of the batch is final: the output file (succeeded
 * requests, OpenAI's images response with fresh presigned URLs or base64 as each line asked) and
 * the error file (refused lines, failed, canceled and expired requests), each streamed to S3 a line
 * at a time and recorded as a `files` row with purpose `batch_output`; then the final status and
 * its webhook. Every custom_id is in exactly one of the two files. The file ids are fixed by the
 * batch, so a retried finalize writes the same files.
 */
export async function runFinalize(deps: BatchDeps, batchId: string): Promise<void> {
  const batch = await getBatch(deps.db, batchId);
  if (!batch || isFinalBatch(batch.status) || !batch.settledAt) return;
  const status = batch.cancellingAt ? 'cancelled' : batch.expiredAt ? 'expired' : 'completed';
  const started = Date.now();
  const outputFileId = batch.completed > 0 ? await writeResultFile(deps, batch, 'output', outputLines(deps, batch)) : null;
  const errorFileId = batch.failed > 0 ? await writeResultFile(deps, batch, 'error', errorLines(deps, batch)) : null;
  if (await finishBatch(deps.db, batchId, { status, outputFileId, errorFileId })) {
    deps.logger.info({ batchId, status, completed: batch.completed, failed: batch.failed, ms: Date.now() - started }, 'batch finished');
    await announceBatch(deps, batchId, status);
  }
  // its input snapshot and shared input copies: every child is final, none reads them again
  await deps.store.deletePrefix(batchPrefix(batchId)).catch((err: unknown) => deps.logger.warn({ err, batchId }, 'batch objects not deleted'));
}

async function writeResultFile(deps: BatchDeps, batch: BatchRecord, kind: 'output' | 'error', lines: AsyncGenerator<string>): Promise<string> {
  const id = batchResultFileId(batch.id, batch.settledAt!, kind);
  let bytes = 0;
  async function* counted() {
    for await (const line of lines) {
      const buf = Buffer.from(`${line}\n`);
      bytes += buf.length;
      yield buf;
    }
  }
  await deps.store.upload(fileKey(id), Readable.from(counted()), { contentType: 'application/jsonl' });
  await insertFileIfMissing(deps.db, {
    id,
    apiKeyId: batch.apiKeyId,
    filename: `batch_${batch.id}_${kind}.jsonl`,
    purpose: 'batch_output',
    bytes,
    contentType: 'application/jsonl',
    expiresAt: new Date(Date.now() + RESULT_FILE_TTL_MS),
  });
  return id;
}

async function* outputLines(deps: BatchDeps, batch: BatchRecord): AsyncGenerator<string> {
  const ttl = deps.config.env.SIGNED_URL_TTL_SECONDS;
  for (let after = 0; ; ) {
    const page = await pageSucceededChildren(deps.db, batch.id, after, PAGE);
    if (page.length === 0) return;
    for (const job of page) {
      // one line at a time: a b64_json line holds its images, then lets them go
      const body = await editResponse(job, deps.store, ttl);
      yield JSON.stringify({ id: batchRequestId(batch.id, job.batchLine!), custom_id: job.customId, response: { status_code: 200, request_id: job.id, body }, error: null });
    }
    after = page.at(-1)!.batchLine!;
  }
}

async function* errorLines(deps: BatchDeps, batch: BatchRecord): AsyncGenerator<string> {
  for (let after = 0; ; ) {
    const page = await pageFailedRequests(deps.db, batch.id, after, PAGE);
    if (page.length === 0) return;
    for (const r of page) yield JSON.stringify({ id: batchRequestId(batch.id, r.line), custom_id: r.customId, ...failure(batch, r) });
    after = page.at(-1)!.line;
  }
}

/**
 * A failed request as OpenAI writes it: one that was answered (refused by validation, or failed
 * upstream) has the error response it got and `error` set too; one that never ran (its batch was
 * cancelled or expired, or it was canceled) has no response, only `error`.
 */
function failure(batch: BatchRecord, r: FailedRequest): { response: unknown; error: { code: string; message: string } } {
  if (r.status === 'canceled') {
    const code = batch.cancellingAt ? 'batch_cancelled' : 'request_cancelled';
    return { response: null, error: { code, message: batch.cancellingAt ? 'the batch was cancelled before this request finished' : `the request's job ${r.jobId} was canceled` } };
  }
  if (r.status === 'expired') {
    // the batch's window ran out, or the line's own cancel_after did
    return batch.expiredAt
      ? { response: null, error: { code: 'batch_expired', message: 'the batch reached the end of its completion window before this request ran' } }
      : { response: null, error: { code: 'request_expired', message: `the request's job ${r.jobId} was not started before its cancel_after deadline` } };
  }
  const e = r.error ?? { message: 'the request failed', type: 'server_error', code: 'internal_error', status: 500 };
  if (r.status === 'rejected' && (e.code === 'batch_cancelled' || e.code === 'batch_expired')) return { response: null, error: { code: e.code, message: e.message } };
  const { status, ...visible } = e;
  return {
    response: { status_code: status ?? 500, request_id: r.jobId, body: { error: { message: visible.message, type: visible.type, param: visible.param ?? null, code: visible.code } } },
    error: { code: e.code, message: e.message },
  };
}
