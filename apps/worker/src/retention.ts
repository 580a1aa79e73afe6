import { randomUUID } from 'node:crypto';
import { type Db, deleteJobRows, findExpiredInputs, findExpiredResults, findPurgeableJobs, markInputsDeleted, markOutputsDeleted } from '@image-edits/db';
import { jobPrefix, type ObjectStore } from '@image-edits/storage';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * Retention, part of every worker's housekeeping (startReconciler): a final job's inputs are
 * deleted from S3 after its input retention, its outputs after its result retention (a batch
 * child's once its batch's output file is gone), and rows of jobs whose objects are gone after
 * JOB_ROW_RETENTION_DAYS (their usage rows stay). Each step reads a page of due rows, deletes their
 * objects, then stamps the rows: a crash in between only repeats deletions. One worker sweeps at a
 * time (a Redis lock, as the orphan sweep); two at once would only delete the same keys twice.
 */
export interface RetentionDeps {
  db: Db;
  store: Pick<ObjectStore, 'deleteMany' | 'deletePrefix'>;
  redis: Redis;
  prefix: string;
  logger: Pick<Logger, 'info' | 'warn'>;
}

export interface RetentionOptions {
  rowRetentionDays: number;
  now?: Date;
  /** rows per page */
  page?: number;
  /** pages per step per run: the rest waits for the next run */
  maxPages?: number;
}

/**
 * A result is deleted this long after its expiry: a read that saw it a moment before (and is now
 * fetching its bytes for b64_json) still finds the objects. The job says result_expired from the
 * expiry itself.
 */
export const RESULT_DELETE_GRACE_MS = 5000;

const LOCK_MS = 5 * 60_000;
const RELEASE_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

export async function sweepRetention(deps: RetentionDeps, opts: RetentionOptions): Promise<{ inputs: number; outputs: number; rows: number }> {
  const lock = `${deps.prefix}:retention:lock`;
  const token = randomUUID();
  if ((await deps.redis.set(lock, token, 'PX', LOCK_MS, 'NX')) !== 'OK') return { inputs: 0, outputs: 0, rows: 0 };
  try {
    const now = opts.now ?? new Date();
    const page = opts.page ?? 500;
    const pages = opts.maxPages ?? 20;
    const inputs = await inPages(pages, page, async () => {
      const due = await findExpiredInputs(deps.db, now, page);
      await deps.store.deleteMany(due.flatMap((j) => j.keys));
      await markInputsDeleted(deps.db, due.map((j) => j.id), now);
      return due.length;
    });
    const outputs = await inPages(pages, page, async () => {
      const due = await findExpiredResults(deps.db, new Date(now.getTime() - RESULT_DELETE_GRACE_MS), page);
      await deps.store.deleteMany(due.flatMap((j) => j.keys));
      await markOutputsDeleted(deps.db, due.map((j) => j.id), now);
      return due.length;
    });
    const rows = await inPages(pages, page, async () => {
      const ids = await findPurgeableJobs(deps.db, new Date(now.getTime() - opts.rowRetentionDays * 86_400_000), page);
      // anything still under the job's prefix (an output of an earlier target, say) goes with the row:
      // without a row, nothing would ever find it again
      await pool(8, ids, (id) => deps.store.deletePrefix(jobPrefix(id)));
      return deleteJobRows(deps.db, ids);
    });
    if (inputs + outputs + rows > 0) deps.logger.info({ inputs, outputs, rows }, 'retention: expired inputs and results deleted, old job rows purged');
    return { inputs, outputs, rows };
  } finally {
    await deps.redis.eval(RELEASE_LUA, 1, lock, token);
  }
}

/** Runs `step` (one page) until it does less than a page or `pages` ran; the total it did. */
async function inPages(pages: number, size: number, step: () => Promise<number>): Promise<number> {
  let total = 0;
  for (let i = 0; i < pages; i++) {
    const n = await step();
    total += n;
    if (n < size) break;
  }
  return total;
}

async function pool<T>(size: number, items: T[], work: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(size, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}
