import { DependencyUnavailable, isDependencyError } from '@image-edits/core';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { PrismaClient } from './generated/prisma/client';
import type { Prisma } from './generated/prisma/client';

export type Db = PrismaClient;

/** The pg pool under each client, for the few hot statements sent without Prisma (sendRaw). */
const pools = new WeakMap<Db, pg.Pool>();

/** One client (and pool) per process; Prisma 7 talks to Postgres through the pg driver adapter. */
export function createDb(databaseUrl: string, opts: { poolSize?: number } = {}): Db {
  // TCP keep-alive finds connections a dead server or network left behind. No connection timeout: pg
  // applies it to waiting for a free pooled connection too, which a burst of reads may rightly do
  const pool = new pg.Pool({ connectionString: databaseUrl, max: opts.poolSize ?? 10, keepAlive: true });
  const db = new PrismaClient({ adapter: new PrismaPg(pool, { disposeExternalPool: true }) });
  pools.set(db, pool);
  return db;
}

/**
 * A statement sent on the client's own pool without Prisma: on the hottest paths (a submission's
 * INSERT, a job's start and success, the job reads of every sync answer and poll) Prisma's query
 * handling cost more CPU than the round trip. Dates go as ISO strings, in UTC as Prisma writes them
 * (pg would send local time, which a timestamp column keeps as is); pg reads text, numbers, booleans
 * and jsonb as Prisma would, but a timestamp column must be selected `AT TIME ZONE 'UTC'` (see
 * rawJobColumns in jobs.ts) and a numeric as text. Inside a transaction, or on a client from
 * elsewhere, use Prisma's $queryRaw instead.
 */
export async function sendRaw<T extends pg.QueryResultRow>(db: Db, query: Prisma.Sql): Promise<T[]> {
  const pool = pools.get(db);
  if (!pool) return db.$queryRaw<T[]>(query);
  try {
    const result = await pool.query<T>(query.text, query.values.map((v) => (v instanceof Date ? v.toISOString() : v)));
    return result.rows;
  } catch (err) {
    // pg's network errors name no database (a bare ECONNRESET): said here, as Prisma's would say it
    if (isDependencyError(err)) throw new DependencyUnavailable('postgres', `the database is unavailable: ${(err as Error).message}`, { cause: err });
    throw err;
  }
}
