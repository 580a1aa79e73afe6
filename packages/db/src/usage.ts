import type { Db } from './client';
import { Prisma } from './generated/prisma/client';

/**
 * Reports over the `usage` rows (one per succeeded job, batch children included, kept after their
 * job's row is purged): what GET /v1/organization/usage/images and /costs add up, and what the
 * monthly budget is checked against. The same rows give every job's `usage.cost_usd`, so the
 * reports and the jobs always agree.
 */

export const USAGE_GROUPS = ['model', 'size', 'source', 'api_key_id'] as const;
export type UsageGroup = (typeof USAGE_GROUPS)[number];

export interface UsageQuery {
  /** unix seconds, inclusive / exclusive */
  start: number;
  end: number;
  /** bucket width in seconds */
  width: number;
  groupBy: UsageGroup[];
  /** null: every key (an admin's report) */
  apiKeyIds: string[] | null;
  models?: string[] | undefined;
  sizes?: string[] | undefined;
  sources?: string[] | undefined;
}

export interface UsageRow {
  /** unix seconds of the bucket's boundary (a multiple of the width) */
  bucket: number;
  model: string | null;
  size: string | null;
  source: string | null;
  apiKeyId: string | null;
  images: number;
  requests: number;
  /** USD, as the sum of the rows' cost_usd (numeric, exact), rendered as a string */
  costUsd: string;
}

const COLUMN: Record<UsageGroup, Prisma.Sql> = {
  model: Prisma.raw('model'),
  size: Prisma.raw('size'),
  source: Prisma.raw('source'),
  api_key_id: Prisma.raw('api_key_id'),
};

/** Sums of the usage rows between start and end, by bucket and by the chosen groups (others are null). */
export async function usageBuckets(db: Db, q: UsageQuery): Promise<UsageRow[]> {
  const filters: Prisma.Sql[] = [Prisma.sql`created_at >= ${new Date(q.start * 1000)}`, Prisma.sql`created_at < ${new Date(q.end * 1000)}`];
  if (q.apiKeyIds) filters.push(Prisma.sql`api_key_id = ANY(${q.apiKeyIds}::text[])`);
  if (q.models?.length) filters.push(Prisma.sql`model = ANY(${q.models}::text[])`);
  if (q.sizes?.length) filters.push(Prisma.sql`size = ANY(${q.sizes}::text[])`);
  if (q.sources?.length) filters.push(Prisma.sql`source = ANY(${q.sources}::text[])`);
  // the select list is bucket, then USAGE_GROUPS in order (null when not grouped): grouped by position
  const select = USAGE_GROUPS.map((g) => (q.groupBy.includes(g) ? Prisma.sql`${COLUMN[g]} AS ${Prisma.raw(g)}` : Prisma.sql`NULL::text AS ${Prisma.raw(g)}`));
  const bucket = Prisma.sql`(floor(extract(epoch FROM created_at) / ${q.width}::int) * ${q.width}::int)::bigint`;
  const rows = await db.$queryRaw<{ bucket: bigint; model: string | null; size: string | null; source: string | null; api_key_id: string | null; images: bigint; requests: bigint; cost: { toString(): string } }[]>`
    SELECT ${bucket} AS bucket, ${Prisma.join(select)}, SUM(images)::bigint AS images, COUNT(*)::bigint AS requests, SUM(cost_usd) AS cost
    FROM usage WHERE ${Prisma.join(filters, ' AND ')}
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5`;
  return rows.map((r) => ({
    bucket: Number(r.bucket),
    model: r.model,
    size: r.size,
    source: r.source,
    apiKeyId: r.api_key_id,
    images: Number(r.images),
    requests: Number(r.requests),
    costUsd: r.cost.toString(),
  }));
}

/** USD the key spent since `since` (the start of the month): the budget check's figure. */
export async function spentSince(db: Db, apiKeyId: string, since: Date): Promise<number> {
  const rows = await db.$queryRaw<{ spent: { toString(): string } | null }[]>`SELECT SUM(cost_usd) AS spent FROM usage WHERE api_key_id = ${apiKeyId} AND created_at >= ${since}`;
  return Number(rows[0]?.spent ?? 0);
}
