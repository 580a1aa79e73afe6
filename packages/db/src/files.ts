import type { Db } from './client';
import type { Prisma } from './generated/prisma/client';

/** What sharp read from an image file's header at upload (the job's checks need no more). */
export interface FileImageFacts {
  format: 'png' | 'jpeg' | 'webp';
  width: number;
  height: number;
  hasAlpha: boolean;
}

/** A row of `files` with its JSON column typed; the bytes are the S3 object `files/{id}`. */
export interface FileRecord {
  id: string;
  apiKeyId: string;
  filename: string;
  purpose: string;
  bytes: number;
  contentType: string;
  image: FileImageFacts | null;
  createdAt: Date;
  expiresAt: Date | null;
}

type Row = Prisma.FileGetPayload<object>;

function toRecord(row: Row): FileRecord {
  return {
    id: row.id,
    apiKeyId: row.apiKeyId,
    filename: row.filename,
    purpose: row.purpose,
    bytes: Number(row.bytes),
    contentType: row.contentType,
    image: (row.image as unknown as FileImageFacts | null) ?? null,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
  };
}

export interface NewFile {
  id: string;
  apiKeyId: string;
  filename: string;
  purpose: string;
  bytes: number;
  contentType: string;
  image?: FileImageFacts | null;
  expiresAt?: Date | null;
}

export async function insertFile(db: Db, file: NewFile): Promise<FileRecord> {
  const row = await db.file.create({
    data: {
      id: file.id,
      apiKeyId: file.apiKeyId,
      filename: file.filename,
      purpose: file.purpose,
      bytes: BigInt(file.bytes),
      contentType: file.contentType,
      ...(file.image ? { image: file.image as unknown as Prisma.InputJsonValue } : {}),
      expiresAt: file.expiresAt ?? null,
    },
  });
  return toRecord(row);
}

/** Not expired: an expired file is gone for its client even before the sweep deletes it. */
const live = (now: Date) => ({ OR: [{ expiresAt: null }, { expiresAt: { gt: now } }] });

/** A key sees only its own live files: another key's id is simply not found. */
export async function getFileForKey(db: Db, id: string, apiKeyId: string, now = new Date()): Promise<FileRecord | null> {
  const row = await db.file.findFirst({ where: { id, apiKeyId, ...live(now) } });
  return row ? toRecord(row) : null;
}

/** Several of a key's live files at once (a batch chunk's file_ids): one query. */
export async function getFilesForKey(db: Db, ids: string[], apiKeyId: string, now = new Date()): Promise<FileRecord[]> {
  if (ids.length === 0) return [];
  const rows = await db.file.findMany({ where: { id: { in: ids }, apiKeyId, ...live(now) } });
  return rows.map(toRecord);
}

/** Records a file the service wrote (a batch's output), unless a row with its id exists: writing it again is harmless. */
export async function insertFileIfMissing(db: Db, file: NewFile): Promise<void> {
  await db.file.createMany({
    data: [{ id: file.id, apiKeyId: file.apiKeyId, filename: file.filename, purpose: file.purpose, bytes: BigInt(file.bytes), contentType: file.contentType, expiresAt: file.expiresAt ?? null }],
    skipDuplicates: true,
  });
}

export interface FileListQuery {
  limit: number;
  /** a file id: the page starts after it in the chosen order (ids sort by creation time) */
  after?: string | undefined;
  order: 'asc' | 'desc';
  purpose?: string | undefined;
}

/** One key's live files, one page past the cursor. */
export async function listFiles(db: Db, apiKeyId: string, q: FileListQuery, now = new Date()): Promise<{ files: FileRecord[]; hasMore: boolean }> {
  const rows = await db.file.findMany({
    where: {
      apiKeyId,
      ...live(now),
      ...(q.after ? { id: q.order === 'desc' ? { lt: q.after } : { gt: q.after } } : {}),
      ...(q.purpose ? { purpose: q.purpose } : {}),
    },
    orderBy: { id: q.order },
    take: q.limit + 1,
  });
  return { files: rows.slice(0, q.limit).map(toRecord), hasMore: rows.length > q.limit };
}

/** Deletes the row; true when this key had that (live) file. The caller deletes the S3 object. */
export async function deleteFileForKey(db: Db, id: string, apiKeyId: string, now = new Date()): Promise<boolean> {
  const res = await db.file.deleteMany({ where: { id, apiKeyId, ...live(now) } });
  return res.count > 0;
}

/** Files past their expiry, oldest first: the housekeeping sweep deletes their objects, then their rows. */
export async function findExpiredFiles(db: Db, now = new Date(), limit = 500): Promise<{ id: string }[]> {
  return db.file.findMany({ where: { expiresAt: { lte: now } }, select: { id: true }, orderBy: { expiresAt: 'asc' }, take: limit });
}

export async function deleteFileRow(db: Db, id: string): Promise<void> {
  await db.file.deleteMany({ where: { id } });
}
