import { createHash, randomBytes } from 'node:crypto';
import { newId } from '@image-edits/core';
import type { Db } from './client';

export const hashKey = (key: string) => createHash('sha256').update(key).digest('hex');

export interface CreatedKey {
  id: string;
  name: string;
  /** shown once; only its hash is stored */
  key: string;
}

export async function createApiKey(db: Db, name: string, opts: { maxConcurrentJobs?: number | null } = {}): Promise<CreatedKey> {
  const key = `sk-ie-${randomBytes(24).toString('base64url')}`;
  const row = await db.apiKey.create({ data: { id: newId('key'), name, keyHash: hashKey(key), keyPrefix: key.slice(0, 10), maxConcurrentJobs: checkLimit(opts.maxConcurrentJobs ?? null) } });
  return { id: row.id, name: row.name, key };
}

/**
 * How many of the key's jobs may run at once per provider, across all workers: a number (0 = no
 * cap), or null for the deployment's default (KEY_MAX_CONCURRENT_JOBS). Undefined for an unknown key.
 */
export async function getKeyConcurrencyLimit(db: Db, id: string): Promise<number | null | undefined> {
  const row = await db.apiKey.findUnique({ where: { id }, select: { maxConcurrentJobs: true } });
  return row ? row.maxConcurrentJobs : undefined;
}

/** Sets the key's cap (null: back to the default); workers apply it within seconds. False for an unknown key. */
export async function setKeyConcurrencyLimit(db: Db, id: string, limit: number | null): Promise<boolean> {
  const res = await db.apiKey.updateMany({ where: { id }, data: { maxConcurrentJobs: checkLimit(limit) } });
  return res.count > 0;
}

function checkLimit(limit: number | null): number | null {
  if (limit !== null && (!Number.isInteger(limit) || limit < 0)) throw new RangeError(`a concurrency limit is a whole number, 0 or more (0 = no cap): ${limit}`);
  return limit;
}

/** The key's id when the key is known and not revoked. */
export async function findApiKey(db: Db, key: string): Promise<{ id: string; name: string } | null> {
  const row = await db.apiKey.findUnique({ where: { keyHash: hashKey(key) }, select: { id: true, name: true, revokedAt: true } });
  return row && !row.revokedAt ? { id: row.id, name: row.name } : null;
}

export async function revokeApiKey(db: Db, id: string): Promise<boolean> {
  const res = await db.apiKey.updateMany({ where: { id, revokedAt: null }, data: { revokedAt: new Date() } });
  return res.count > 0;
}
