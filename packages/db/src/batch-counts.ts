import { Prisma } from './generated/prisma/client';

/**
 * The request counts of a batch and its settling, shared by every statement that finishes
 * requests: the job moves (jobs.ts) and the batch steps (batches.ts). Its own module so that those
 * two do not import each other.
 */
/**
 * The SET list of an UPDATE of `batches b` that adds `dCompleted` and `dFailed` finished requests
 * (SQL expressions, evaluated once per row), optionally ends the fan-out, and settles the batch if
 * that was its last request. `b.*` on the right are the values before the update.
 */
export function countsSet(now: Date, dCompleted: Prisma.Sql, dFailed: Prisma.Sql, endFanOut = false): Prisma.Sql {
  const fannedOut = endFanOut ? Prisma.sql`TRUE` : Prisma.sql`b.fanned_out_at IS NOT NULL`;
  const settles = Prisma.sql`(b.settled_at IS NULL AND ${fannedOut} AND b.status IN ('in_progress', 'cancelling')
    AND b.completed + ${dCompleted} + b.failed + ${dFailed} >= b.total)`;
  const ts = Prisma.sql`${now}::timestamp(3)`;
  return Prisma.sql`completed = b.completed + ${dCompleted}, failed = b.failed + ${dFailed}, updated_at = ${ts},
    fanned_out_at = ${endFanOut ? Prisma.sql`COALESCE(b.fanned_out_at, ${ts})` : Prisma.sql`b.fanned_out_at`},
    settled_at = CASE WHEN ${settles} THEN ${ts} ELSE b.settled_at END,
    status = CASE WHEN ${settles} AND b.status = 'in_progress' THEN 'finalizing'::"BatchStatus" ELSE b.status END,
    finalizing_at = CASE WHEN ${settles} AND b.status = 'in_progress' THEN ${ts} ELSE b.finalizing_at END`;
}

/**
 * A CTE `bumped` for a statement whose CTE `moved` (columns id, batch_id) moved one job to a final
 * state: its batch, if any, counts it as completed or failed in the same statement.
 */
export function bumpBatch(kind: 'completed' | 'failed', now: Date): Prisma.Sql {
  const one = Prisma.sql`1`;
  const zero = Prisma.sql`0`;
  return Prisma.sql`bumped AS (
    UPDATE batches b SET ${countsSet(now, kind === 'completed' ? one : zero, kind === 'failed' ? one : zero)}
    FROM moved WHERE b.id = moved.batch_id
    RETURNING b.id, b.settled_at = ${now}::timestamp(3) AS settled)`;
}

/** A job moved to a final state; for a batch child, whether it was the last request of its batch. */
export interface Finished {
  batchId: string | null;
  /** the batch settled with this job: its files are to be written (enqueue its finalize step) */
  batchSettled: boolean;
}

/** A job moved to a final state by markSucceeded / markFailed. */
export interface FinishedJob extends Finished {
  /** the job has anywhere to send its events (its own webhook, or its key's live endpoints); false spares the event's query */
  hasWebhookTargets: boolean;
}

export function finishedFrom(rows: { batch_id: string | null; settled: boolean | null }[]): Finished | null {
  const r = rows[0];
  return r ? { batchId: r.batch_id, batchSettled: r.settled === true } : null;
}

export function finishedJobFrom(rows: { batch_id: string | null; settled: boolean | null; has_webhook_targets: boolean }[]): FinishedJob | null {
  const finished = finishedFrom(rows);
  return finished ? { ...finished, hasWebhookTargets: rows[0]!.has_webhook_targets === true } : null;
}
