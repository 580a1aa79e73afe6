import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from './generated/prisma/client';

export type Db = PrismaClient;

/** One client (and pool) per process; Prisma 7 talks to Postgres through the pg driver adapter. */
export function createDb(databaseUrl: string, opts: { poolSize?: number } = {}): Db {
  // TCP keep-alive finds connections a dead server or network left behind. No connection timeout: pg
  // applies it to waiting for a free pooled connection too, which a burst of reads may rightly do
  const adapter = new PrismaPg({ connectionString: databaseUrl, max: opts.poolSize ?? 10, keepAlive: true });
  return new PrismaClient({ adapter });
}
