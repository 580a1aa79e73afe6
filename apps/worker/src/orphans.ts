import { idTime } from '@image-edits/core';
import { type Db, existingIds } from '@image-edits/db';
import type { ObjectStore } from '@image-edits/storage';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * Objects whose row was never written: the API puts a job's inputs (or a file's bytes) in S3 before
 * it inserts the row, so a crash, or Postgres refusing the insert, between the two leaves objects no
 * one can reach. Keys start with time-sorted ids (`jobs/job_<time>.../`, `files/file-<time>...`), so
 * the sweep walks each area in key order from a watermark kept in Redis, looks at each id once it is
 * older than `graceMs` (no request is still writing it), and deletes the objects of ids without a row.
 * Keys that are not ids of ours are never touched. One worker sweeps at a time (a Redis lock);
 * losing Redis only means the walk starts over.
 */
export interface OrphanSweepDeps {
  db: Db;
  store: Pick<ObjectStore, 'listKeys' | 'deletePrefix'>;
  redis: Redis;
  /** the BullMQ prefix: the watermark and the lock live beside the queues */
  prefix: string;
  logger: Pick<Logger, 'warn'>;
}

interface Area {
  name: 'jobs' | 'files';
  /** the id a key belongs to */
  idOf(key: string): string | undefined;
  /** what to delete for an id without a row */
  objectsOf(id: string): string;
}

const AREAS: Area[] = [
  { name: 'jobs', idOf: (key) => key.split('/')[1], objectsOf: (id) => `jobs/${id}/` },
  { name: 'files', idOf: (key) => key.split('/')[1], objectsOf: (id) => `files/${id}` },
];

export const ORPHAN_GRACE_MS = 24 * 3600 * 1000;

export async function sweepOrphanObjects(deps: OrphanSweepDeps, opts: { graceMs?: number; maxKeys?: number; now?: number } = {}): Promise<number> {
  const graceMs = opts.graceMs ?? ORPHAN_GRACE_MS;
  const lock = `${deps.prefix}:orphans:lock`;
  if ((await deps.redis.set(lock, '1', 'PX', 5 * 60_000, 'NX')) !== 'OK') return 0;
  try {
    let deleted = 0;
    for (const area of AREAS) deleted += await sweepArea(deps, area, (opts.now ?? Date.now()) - graceMs, opts.maxKeys ?? 5000);
    if (deleted > 0) deps.logger.warn({ deleted }, 'objects without a row (left by an interrupted submission or upload) deleted');
    return deleted;
  } finally {
    await deps.redis.del(lock);
  }
}

async function sweepArea(deps: OrphanSweepDeps, area: Area, olderThan: number, maxKeys: number): Promise<number> {
  const mark = `${deps.prefix}:orphans:${area.name}`;
  let after = (await deps.redis.get(mark)) ?? undefined;
  let examined = 0;
  let deleted = 0;
  for (;;) {
    const page = await deps.store.listKeys(`${area.name}/`, { ...(after ? { startAfter: after } : {}), maxKeys: 1000 });
    const ids = new Set<string>();
    let last: string | undefined;
    let reachedNew = false;
    for (const key of page.keys) {
      const id = area.idOf(key);
      const t = id ? idTime(id) : undefined;
      if (t !== undefined && t > olderThan) {
        reachedNew = true;
        break;
      }
      if (id && t !== undefined) ids.add(id);
      last = key;
    }
    if (ids.size > 0) {
      const kept = await existingIds(deps.db, area.name, [...ids]);
      for (const id of ids) {
        if (kept.has(id)) continue;
        await deps.store.deletePrefix(area.objectsOf(id));
        deleted++;
      }
    }
    if (last) {
      after = last;
      await deps.redis.set(mark, last);
    }
    examined += page.keys.length;
    if (reachedNew || !page.truncated || examined >= maxKeys) return deleted;
  }
}
