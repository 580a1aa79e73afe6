import { newId } from '@image-edits/core';
import type { Db } from './client';
import { Prisma } from './generated/prisma/client';

export interface IdempotencyRecord {
  id: string;
  requestHash: string;
  state: 'pending' | 'done';
  responseStatus: number | null;
  responseBody: unknown;
  jobId: string | null;
  prefer: string | null;
}

export type IdempotencyClaim = { claimed: true; id: string } | { claimed: false; existing: IdempotencyRecord };

/**
 * Claims `key` for this API key, or returns what an earlier request with it left. The unique
 * index decides between concurrent requests: exactly one claims it. An expired record is dropped
 * and the key claimed afresh.
 */
export async function claimIdempotencyKey(db: Db, apiKeyId: string, key: string, requestHash: string, ttlMs: number): Promise<IdempotencyClaim> {
  for (let tries = 0; tries < 2; tries++) {
    const id = newId('idem');
    try {
      await db.idempotencyKey.create({ data: { id, apiKeyId, key, requestHash, expiresAt: new Date(Date.now() + ttlMs) } });
      return { claimed: true, id };
    } catch (err) {
      if (!(err instanceof Prisma.PrismaClientKnownRequestError) || err.code !== 'P2002') throw err;
    }
    const row = await db.idempotencyKey.findUnique({ where: { apiKeyId_key: { apiKeyId, key } } });
    if (!row) continue; // deleted meanwhile: try again
    if (row.expiresAt.getTime() <= Date.now()) {
      await db.idempotencyKey.deleteMany({ where: { id: row.id } });
      continue;
    }
    return {
      claimed: false,
      existing: {
        id: row.id,
        requestHash: row.requestHash,
        state: row.state === 'done' ? 'done' : 'pending',
        responseStatus: row.responseStatus,
        responseBody: row.responseBody,
        jobId: row.jobId,
        prefer: row.prefer,
      },
    };
  }
  throw new Error(`idempotency key ${key} could not be claimed`);
}

/** Saves what the first request answered, so later ones replay it. */
export async function completeIdempotencyKey(db: Db, id: string, result: { status: number; body?: unknown; jobId?: string | undefined; prefer?: string | undefined }): Promise<void> {
  await db.idempotencyKey.updateMany({
    where: { id },
    data: {
      state: 'done',
      responseStatus: result.status,
      responseBody: result.body === undefined ? Prisma.DbNull : (result.body as Prisma.InputJsonValue),
      jobId: result.jobId ?? null,
      prefer: result.prefer ?? null,
    },
  });
}

/** Forgets a claim whose request failed on our side (5xx), so the client's retry runs again. */
export async function releaseIdempotencyKey(db: Db, id: string): Promise<void> {
  await db.idempotencyKey.deleteMany({ where: { id } });
}

export async function purgeExpiredIdempotencyKeys(db: Db, now = new Date()): Promise<number> {
  return (await db.idempotencyKey.deleteMany({ where: { expiresAt: { lte: now } } })).count;
}
