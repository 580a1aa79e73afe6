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

export async function createApiKey(db: Db, name: string): Promise<CreatedKey> {
  const key = `sk-ie-${randomBytes(24).toString('base64url')}`;
  const row = await db.apiKey.create({ data: { id: newId('key'), name, keyHash: hashKey(key), keyPrefix: key.slice(0, 10) } });
  return { id: row.id, name: row.name, key };
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
