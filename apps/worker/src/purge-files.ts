import { deleteFileRow, findExpiredFiles, type Db } from '@image-edits/db';
import { fileKey, type ObjectStore } from '@image-edits/storage';
import type { Logger } from 'pino';

/**
 * Housekeeping of POST /v1/files: files past `expires_at` (already 404 for their clients) lose
 * their S3 object, then their row. The object goes first, so a failure leaves the row for the next
 * sweep. Jobs never depend on a file's object: they got their own copy at submission.
 */
export async function purgeExpiredFiles(deps: { db: Db; store: Pick<ObjectStore, 'delete'>; logger: Logger }, now = new Date()): Promise<number> {
  const expired = await findExpiredFiles(deps.db, now);
  for (const file of expired) {
    await deps.store.delete(fileKey(file.id));
    await deleteFileRow(deps.db, file.id);
  }
  if (expired.length > 0) deps.logger.info({ files: expired.length }, 'expired files deleted');
  return expired.length;
}
