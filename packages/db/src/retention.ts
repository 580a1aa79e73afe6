import type { JobInputs, StoredImage } from '@image-edits/core';
import type { Db } from './client';

/**
 * Retention of jobs (the worker's housekeeping, apps/worker/src/retention.ts, and DELETE /v1/jobs/{id}).
 * A job's retention is copied from its key at submission; Postgres derives `inputs_expire_at` and
 * `result_expires_at` from `completed_at` (generated columns), so each sweep is one index range.
 * Every step is idempotent: objects are deleted first, the row is stamped after, so a crash between
 * the two only makes the next sweep delete them again.
 */

const FINAL = ['succeeded', 'failed', 'canceled', 'expired'];
const FINAL_BATCH = ['completed', 'failed', 'expired', 'cancelled'];

/** The S3 keys of a job's own inputs (a batch child may read a shared copy under batches/, which its batch deletes). */
export function ownInputKeys(id: string, inputs: JobInputs | null): string[] {
  if (!inputs) return [];
  return [...(inputs.images ?? []), ...(inputs.mask ? [inputs.mask] : [])].map((i) => i.key).filter((k) => k.startsWith(`jobs/${id}/`));
}

/** Final jobs whose inputs are past their retention, oldest first, with the keys of their own inputs. */
export async function findExpiredInputs(db: Db, now: Date, limit: number): Promise<{ id: string; keys: string[] }[]> {
  const rows = await db.$queryRaw<{ id: string; inputs: JobInputs | null }[]>`
    SELECT id, inputs FROM jobs
    WHERE inputs_deleted_at IS NULL AND inputs_expire_at <= ${now} AND status::text = ANY(${FINAL}::text[])
    ORDER BY inputs_expire_at LIMIT ${limit}::int`;
  return rows.map((r) => ({ id: r.id, keys: ownInputKeys(r.id, r.inputs) }));
}

export async function markInputsDeleted(db: Db, ids: string[], now: Date): Promise<number> {
  if (ids.length === 0) return 0;
  return db.$executeRaw`UPDATE jobs SET inputs_deleted_at = ${now} WHERE id = ANY(${ids}::text[]) AND inputs_deleted_at IS NULL`;
}

/**
 * Jobs whose result expired: direct jobs past `result_expires_at` (`before`: a little in the past,
 * so a read that saw the result just before its expiry still finds the objects), and the children
 * of a finished batch whose output file is gone (deleted, or expired). Failed and canceled jobs come
 * too (no outputs: only stamped), so every final row eventually reaches the row purge.
 */
export async function findExpiredResults(db: Db, before: Date, limit: number): Promise<{ id: string; keys: string[] }[]> {
  const direct = await db.$queryRaw<{ id: string; outputs: StoredImage[] | null }[]>`
    SELECT id, outputs FROM jobs
    WHERE outputs_deleted_at IS NULL AND result_expires_at <= ${before} AND status::text = ANY(${FINAL}::text[])
    ORDER BY result_expires_at LIMIT ${limit}::int`;
  const room = limit - direct.length;
  const children =
    room <= 0
      ? []
      : await db.$queryRaw<{ id: string; outputs: StoredImage[] | null }[]>`
    SELECT j.id, j.outputs FROM batches b JOIN jobs j ON j.batch_id = b.id
    WHERE b.status::text = ANY(${FINAL_BATCH}::text[])
      AND NOT EXISTS (SELECT 1 FROM files f WHERE f.id = b.output_file_id AND (f.expires_at IS NULL OR f.expires_at > ${before}))
      AND j.outputs_deleted_at IS NULL AND j.status::text = ANY(${FINAL}::text[])
    LIMIT ${room}::int`;
  return [...direct, ...children].map((r) => ({ id: r.id, keys: (r.outputs ?? []).map((o) => o.key) }));
}

/** The outputs are gone: the job says result_expired (its outputs column, revised prompts included, is cleared). */
export async function markOutputsDeleted(db: Db, ids: string[], now: Date): Promise<number> {
  if (ids.length === 0) return 0;
  return db.$executeRaw`UPDATE jobs SET outputs_deleted_at = ${now}, outputs = NULL WHERE id = ANY(${ids}::text[]) AND outputs_deleted_at IS NULL`;
}

/**
 * Rows of final jobs completed before `before` whose inputs and outputs are gone (a batch child's
 * once its batch is finished: finalize reads them). Their usage rows stay (job_id becomes null).
 */
export async function findPurgeableJobs(db: Db, before: Date, limit: number): Promise<string[]> {
  const rows = await db.$queryRaw<{ id: string }[]>`
    SELECT j.id FROM jobs j
    WHERE j.completed_at <= ${before} AND j.inputs_deleted_at IS NOT NULL AND j.outputs_deleted_at IS NOT NULL
      AND j.status::text = ANY(${FINAL}::text[])
      AND (j.batch_id IS NULL OR EXISTS (SELECT 1 FROM batches b WHERE b.id = j.batch_id AND b.status::text = ANY(${FINAL_BATCH}::text[])))
    ORDER BY j.completed_at LIMIT ${limit}::int`;
  return rows.map((r) => r.id);
}

export async function deleteJobRows(db: Db, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  return db.$executeRaw`DELETE FROM jobs WHERE id = ANY(${ids}::text[]) AND inputs_deleted_at IS NOT NULL AND outputs_deleted_at IS NOT NULL`;
}

/**
 * GDPR erasure of a final job (DELETE /v1/jobs/{id}; its objects are deleted by the caller first):
 * the prompt and the other texts of the client (user, safety_identifier, search_prompt, metadata,
 * webhook_url, revised prompts with the outputs) go at once; a tombstone keeps status, model and
 * usage until the row purge. False when the key has no such final, undeleted job.
 */
export async function eraseJob(db: Db, id: string, apiKeyId: string, now = new Date()): Promise<boolean> {
  const n = await db.$executeRaw`
    UPDATE jobs SET deleted_at = ${now}, updated_at = ${now},
      params = (params || '{"prompt": ""}'::jsonb) - 'user' - 'safety_identifier' - 'search_prompt',
      metadata = '{}'::jsonb, end_user = NULL, webhook_url = NULL, outputs = NULL,
      inputs_deleted_at = COALESCE(inputs_deleted_at, ${now}), outputs_deleted_at = COALESCE(outputs_deleted_at, ${now})
    WHERE id = ${id} AND api_key_id = ${apiKeyId} AND deleted_at IS NULL AND status::text = ANY(${FINAL}::text[])`;
  return n > 0;
}
