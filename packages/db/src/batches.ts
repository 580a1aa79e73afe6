import type { BatchErrors, BatchStatus, JobError } from '@image-edits/core';
import type { Db } from './client';
import { Prisma } from './generated/prisma/client';
import { countsSet } from './batch-counts';
import { insertJobs, type JobRecord, type NewJob, toJobRecord } from './jobs';

/**
 * Batches (POST /v1/batches) and their requests. A batch's line is either a job (a batch child:
 * `jobs.batch_id`) or a request error (`batch_request_errors`: its body was refused by the edit
 * validation). The batch row keeps the request counts, moved by the same statement that moves a
 * child to a final state (so they never drift), and the fan-out's progress.
 *
 * Settling: the statement that makes `completed + failed` reach `total` once the fan-out is over
 * sets `settled_at` (and moves an in_progress batch to finalizing). It is one UPDATE of the batch
 * row, so two children finishing at once, or the last child and the fan-out's last chunk, serialize
 * on the row and exactly one of them sees the batch settle: that one has the files written.
 */
export interface BatchRecord {
  id: string;
  apiKeyId: string;
  status: BatchStatus;
  endpoint: string;
  inputFileId: string;
  completionWindow: string;
  metadata: Record<string, string>;
  errors: BatchErrors | null;
  outputFileId: string | null;
  errorFileId: string | null;
  total: number;
  completed: number;
  failed: number;
  linesDone: number;
  fannedOutAt: Date | null;
  settledAt: Date | null;
  createdAt: Date;
  inProgressAt: Date | null;
  expiresAt: Date;
  finalizingAt: Date | null;
  completedAt: Date | null;
  failedAt: Date | null;
  expiredAt: Date | null;
  cancellingAt: Date | null;
  cancelledAt: Date | null;
  updatedAt: Date;
}

type Row = Prisma.BatchGetPayload<object>;

function toRecord(row: Row): BatchRecord {
  return { ...row, metadata: row.metadata as Record<string, string>, errors: (row.errors as unknown as BatchErrors | null) ?? null };
}

export interface NewBatch {
  id: string;
  apiKeyId: string;
  endpoint: string;
  inputFileId: string;
  completionWindow: string;
  metadata: Record<string, string>;
  expiresAt: Date;
}

export async function insertBatch(db: Db, b: NewBatch): Promise<BatchRecord> {
  return toRecord(await db.batch.create({ data: { ...b, metadata: b.metadata } }));
}

export async function getBatch(db: Db, id: string): Promise<BatchRecord | null> {
  const row = await db.batch.findUnique({ where: { id } });
  return row ? toRecord(row) : null;
}

/** A key sees only its own batches: another key's id is simply not found. */
export async function getBatchForKey(db: Db, id: string, apiKeyId: string): Promise<BatchRecord | null> {
  const row = await db.batch.findFirst({ where: { id, apiKeyId } });
  return row ? toRecord(row) : null;
}

/** One key's batches, newest first, one page past the cursor (a batch id). */
export async function listBatches(db: Db, apiKeyId: string, q: { limit: number; after?: string | undefined }): Promise<{ batches: BatchRecord[]; hasMore: boolean }> {
  const rows = await db.batch.findMany({ where: { apiKeyId, ...(q.after ? { id: { lt: q.after } } : {}) }, orderBy: { id: 'desc' }, take: q.limit + 1 });
  return { batches: rows.slice(0, q.limit).map(toRecord), hasMore: rows.length > q.limit };
}

// ---- fan-out ----

/** Validation passed: the batch runs, with `total` requests. False if it is no longer validating (cancelled meanwhile). */
export async function startBatch(db: Db, id: string, total: number, now = new Date()): Promise<boolean> {
  const res = await db.batch.updateMany({ where: { id, status: 'validating' }, data: { status: 'in_progress', total, inProgressAt: now, updatedAt: now } });
  return res.count > 0;
}

/** A structurally invalid input file fails the batch (before any job exists). */
export async function failBatchValidation(db: Db, id: string, errors: BatchErrors, now = new Date()): Promise<boolean> {
  const res = await db.batch.updateMany({
    where: { id, status: 'validating' },
    data: { status: 'failed', errors: errors as unknown as Prisma.InputJsonValue, failedAt: now, settledAt: now, updatedAt: now },
  });
  return res.count > 0;
}

/** A batch stopped before it ever ran (cancelled or expired while validating): it ends without files. */
export async function endUnstartedBatch(db: Db, id: string, status: 'cancelled' | 'expired', now = new Date()): Promise<boolean> {
  const res = await db.batch.updateMany({
    where: { id, inProgressAt: null, status: { in: ['validating', 'cancelling'] } },
    data: { status, settledAt: now, updatedAt: now, ...(status === 'cancelled' ? { cancelledAt: now } : { expiredAt: now }) },
  });
  return res.count > 0;
}

export interface NewRequestError {
  line: number;
  customId: string;
  error: JobError & { param?: string | null };
}

export interface FanOutChunk {
  /** the batch's lines_done before this chunk: the chunk is recorded only if no one else moved it meanwhile */
  fromLine: number;
  /** the last line this chunk covers */
  toLine: number;
  jobs: NewJob[];
  errors: NewRequestError[];
  /** the file ends with this chunk */
  last: boolean;
  /**
   * running: the batch must still be running (not cancelling, not expired) or nothing is written;
   * stopping: the batch must be cancelling or expired (the rest of its lines become request errors)
   */
  mode: 'running' | 'stopping';
}

export type ChunkOutcome = { recorded: true; settled: boolean } | { recorded: false };

/**
 * One chunk of the fan-out in one transaction: the progress (only from `fromLine`, so a second run
 * of the same fan-out cannot record a chunk twice), the jobs (ids are per line, written once) and
 * the request errors, counted as failed requests. Not recorded when the batch stopped running
 * (mode running) or is not stopping (mode stopping): the caller looks at the batch again.
 */
export async function recordFanOutChunk(db: Db, batchId: string, chunk: FanOutChunk, now = new Date()): Promise<ChunkOutcome> {
  const state =
    chunk.mode === 'running'
      ? Prisma.sql`b.status = 'in_progress' AND b.expired_at IS NULL`
      : Prisma.sql`b.status IN ('in_progress', 'cancelling') AND (b.status = 'cancelling' OR b.expired_at IS NOT NULL)`;
  return db.$transaction(
    async (tx) => {
      const rows = await tx.$queryRaw<{ settled: boolean }[]>`
        UPDATE batches b SET lines_done = ${chunk.toLine}::int, ${countsSet(now, Prisma.sql`0`, Prisma.sql`${chunk.errors.length}::int`, chunk.last)}
        WHERE b.id = ${batchId} AND b.lines_done = ${chunk.fromLine}::int AND ${state}
        RETURNING b.settled_at = ${now}::timestamp(3) AS settled`;
      if (rows.length === 0) return { recorded: false } as const;
      await insertJobs(tx, chunk.jobs, now);
      if (chunk.errors.length > 0) {
        const values = Prisma.join(
          chunk.errors.map((e) => Prisma.sql`(${batchId}::text, ${e.line}::int, ${e.customId}::text, ${JSON.stringify(e.error)}::jsonb, ${now}::timestamp(3))`),
        );
        await tx.$executeRaw`INSERT INTO batch_request_errors (batch_id, line, custom_id, error, created_at) VALUES ${values} ON CONFLICT DO NOTHING`;
      }
      return { recorded: true, settled: rows[0]!.settled === true } as const;
    },
    { timeout: 120_000, maxWait: 30_000 },
  );
}

// ---- stopping: cancel and expiry ----

/** validating or in_progress → cancelling. False when the batch is not (or no longer) cancellable. */
export async function requestBatchCancel(db: Db, id: string, apiKeyId: string, now = new Date()): Promise<boolean> {
  const res = await db.batch.updateMany({ where: { id, apiKeyId, status: { in: ['validating', 'in_progress'] } }, data: { status: 'cancelling', cancellingAt: now, updatedAt: now } });
  return res.count > 0;
}

/** Running batches whose 24 h window ran out are marked (expired_at): they wind down, then end `expired`. */
export async function markDueBatchesExpired(db: Db, now = new Date(), limit = 100): Promise<string[]> {
  const rows = await db.$queryRaw<{ id: string }[]>`
    UPDATE batches SET expired_at = ${now}::timestamp(3), updated_at = ${now}::timestamp(3)
    WHERE id IN (SELECT id FROM batches WHERE status IN ('validating', 'in_progress') AND expires_at <= ${now}::timestamp(3) AND expired_at IS NULL LIMIT ${limit}::int)
      AND expired_at IS NULL
    RETURNING id`;
  return rows.map((r) => r.id);
}

/**
 * Up to `limit` of the batch's children that have not started become canceled (or expired): one
 * statement for the jobs and their count on the batch. Returns them (to take them off their
 * queues) and whether the batch settled with them.
 */
export async function stopQueuedChildren(
  db: Db,
  batchId: string,
  status: 'canceled' | 'expired',
  limit = 500,
  now = new Date(),
): Promise<{ jobs: { id: string; provider: string; targetIndex: number; apiKeyId: string; hasWebhook: boolean }[]; settled: boolean }> {
  const ts = Prisma.sql`${now}::timestamp(3)`;
  const rows = await db.$queryRaw<{ id: string; provider: string; target_index: number; api_key_id: string; has_webhook: boolean; settled: boolean | null }[]>`
    WITH moved AS (
      UPDATE jobs SET status = ${status}::"JobStatus", completed_at = ${ts}, updated_at = ${ts},
        cancel_requested_at = ${status === 'canceled' ? ts : Prisma.sql`cancel_requested_at`}
      WHERE id IN (SELECT id FROM jobs WHERE batch_id = ${batchId} AND status = 'queued' ORDER BY batch_line LIMIT ${limit}::int FOR UPDATE SKIP LOCKED)
        AND status = 'queued'
      RETURNING id, provider, target_index, api_key_id, batch_id, webhook_url IS NOT NULL AS has_webhook
    ), n AS (SELECT count(*)::int AS c FROM moved),
    bumped AS (
      UPDATE batches b SET ${countsSet(now, Prisma.sql`0`, Prisma.sql`(SELECT c FROM n)`)}
      WHERE b.id = ${batchId} AND (SELECT c FROM n) > 0
      RETURNING b.settled_at = ${ts} AS settled
    )
    SELECT moved.id, moved.provider, moved.target_index, moved.api_key_id, moved.has_webhook, (SELECT settled FROM bumped) AS settled FROM moved`;
  return {
    jobs: rows.map((r) => ({ id: r.id, provider: r.provider, targetIndex: r.target_index, apiKeyId: r.api_key_id, hasWebhook: r.has_webhook })),
    settled: rows.some((r) => r.settled === true),
  };
}

// ---- finalizing ----

/** The settled batch's last move: its files and its final status. False if it was not waiting for them. */
export async function finishBatch(db: Db, id: string, end: { status: 'completed' | 'cancelled' | 'expired'; outputFileId: string | null; errorFileId: string | null }, now = new Date()): Promise<boolean> {
  const stamp = end.status === 'completed' ? { completedAt: now } : end.status === 'cancelled' ? { cancelledAt: now } : { expiredAt: now };
  const res = await db.batch.updateMany({
    where: { id, settledAt: { not: null }, status: { in: ['in_progress', 'finalizing', 'cancelling'] } },
    data: { status: end.status, outputFileId: end.outputFileId, errorFileId: end.errorFileId, updatedAt: now, ...stamp },
  });
  return res.count > 0;
}

/** Succeeded children after `afterLine`, in line order: the output file, a page at a time. */
export async function pageSucceededChildren(db: Db, batchId: string, afterLine: number, limit: number): Promise<JobRecord[]> {
  const rows = await db.job.findMany({ where: { batchId, status: 'succeeded', batchLine: { gt: afterLine } }, orderBy: { batchLine: 'asc' }, take: limit, include: { usage: true } });
  return rows.map(toJobRecord);
}

export interface FailedRequest {
  line: number;
  customId: string;
  /** null for a line whose body was refused (it never became a job) */
  jobId: string | null;
  /** the job's status, or `rejected` */
  status: 'failed' | 'canceled' | 'expired' | 'rejected';
  error: (JobError & { param?: string | null }) | null;
}

/** Failed, canceled and expired children and refused lines after `afterLine`, in line order: the error file, a page at a time. */
export async function pageFailedRequests(db: Db, batchId: string, afterLine: number, limit: number): Promise<FailedRequest[]> {
  const rows = await db.$queryRaw<{ line: number; custom_id: string; job_id: string | null; status: FailedRequest['status']; error: FailedRequest['error'] }[]>`
    SELECT * FROM (
      SELECT batch_line AS line, custom_id, id AS job_id, status::text AS status, error FROM jobs
        WHERE batch_id = ${batchId} AND status IN ('failed', 'canceled', 'expired') AND batch_line > ${afterLine}::int
      UNION ALL
      SELECT line, custom_id, NULL AS job_id, 'rejected' AS status, error FROM batch_request_errors
        WHERE batch_id = ${batchId} AND line > ${afterLine}::int
    ) r ORDER BY line LIMIT ${limit}::int`;
  return rows.map((r) => ({ line: r.line, customId: r.custom_id, jobId: r.job_id, status: r.status, error: r.error }));
}

// ---- housekeeping ----

/** Unfinished batches untouched for a while: the reconciler queues again the step each one waits for. */
export async function findStaleBatches(db: Db, olderThan: Date, limit = 100): Promise<BatchRecord[]> {
  const rows = await db.batch.findMany({
    where: { status: { in: ['validating', 'in_progress', 'finalizing', 'cancelling'] }, updatedAt: { lt: olderThan } },
    orderBy: { updatedAt: 'asc' },
    take: limit,
  });
  return rows.map(toRecord);
}

export async function touchBatch(db: Db, id: string): Promise<void> {
  await db.batch.updateMany({ where: { id }, data: { updatedAt: new Date() } });
}

/** Unfinished batches by status (metrics: read at each scrape, through the status index). */
export async function countOpenBatches(db: Db): Promise<Record<'validating' | 'in_progress' | 'finalizing' | 'cancelling', number>> {
  const counts = { validating: 0, in_progress: 0, finalizing: 0, cancelling: 0 };
  const rows = await db.batch.groupBy({ by: ['status'], where: { status: { in: Object.keys(counts) as (keyof typeof counts)[] } }, _count: { _all: true } });
  for (const r of rows) counts[r.status as keyof typeof counts] = r._count._all;
  return counts;
}
