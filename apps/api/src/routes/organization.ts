import { type Response, Router } from 'express';
import { costsQuery, parseInput, type ReportQuery, ServiceError, usageImagesQuery } from '@image-edits/core';
import { type UsageGroup, type UsageRow, usageBuckets } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { apiKeyId, apiKeySettings } from '../middleware/auth';

/**
 * OpenAI's usage and costs API, over the usage rows (one per succeeded job, batch children
 * included), so the figures always agree with the jobs' `usage.cost_usd`:
 *
 * - GET /v1/organization/usage/images: images and model requests per bucket (1m, 1h, 1d), grouped
 *   by model, size, source (`image.edit`, or `batch` for batch children) and api_key_id;
 * - GET /v1/organization/costs: USD per bucket, grouped by line_item (the model, and the size when
 *   one was asked for) and api_key_id.
 *
 * A key sees its own usage; an admin key (`npm run keys -- create --admin`) sees every key's and may
 * filter with api_key_ids. Buckets are aligned to multiples of their width (UTC) and clipped to
 * [start_time, end_time); a page holds `limit` buckets, the next one is asked for with `page`.
 */

export function organizationRouter(deps: ApiDeps): Router {
  const router = Router();

  router.get('/v1/organization/usage/images', async (req, res) => {
    const asked = parseInput(usageImagesQuery, req.query);
    const q = pageOf<UsageGroup>(asked, res);
    const rows = await usageBuckets(deps.db, { start: q.from, end: q.to, width: q.width, groupBy: q.groupBy, apiKeyIds: q.apiKeyIds, models: asked.models, sizes: asked.sizes, sources: asked.sources });
    res.json(
      page(q, rows, (r) => ({
        object: 'organization.usage.images.result',
        images: r.images,
        num_model_requests: r.requests,
        source: r.source,
        size: r.size,
        model: r.model,
        api_key_id: r.apiKeyId,
        project_id: null,
        user_id: null,
      })),
    );
  });

  router.get('/v1/organization/costs', async (req, res) => {
    const q = pageOf<'line_item' | 'api_key_id'>(parseInput(costsQuery, req.query), res);
    const byLine = q.groupBy.includes('line_item');
    const groupBy: UsageGroup[] = [...(byLine ? (['model', 'size'] as const) : []), ...(q.groupBy.includes('api_key_id') ? (['api_key_id'] as const) : [])];
    const rows = await usageBuckets(deps.db, { start: q.from, end: q.to, width: q.width, groupBy, apiKeyIds: q.apiKeyIds });
    res.json(
      page(q, rows, (r) => ({
        object: 'organization.costs.result',
        amount: { value: Number(r.costUsd), currency: 'usd' },
        line_item: byLine ? lineItem(r) : null,
        project_id: null,
        api_key_id: r.apiKeyId,
      })),
    );
  });
  return router;
}

/** The model, and the size when the request asked for one: `gpt-image-1, 1024x1024`. */
const lineItem = (r: UsageRow) => (r.size ? `${r.model}, ${r.size}` : r.model);

interface Query<G extends string> {
  start: number;
  end: number;
  width: number;
  limit: number;
  /** the range this page reads: its first bucket's start (clipped) to its last one's end (clipped) */
  from: number;
  to: number;
  /** the boundaries of this page's buckets */
  buckets: number[];
  next: number | null;
  groupBy: G[];
  apiKeyIds: string[] | null;
}

/**
 * The page a checked query asks for (its buckets) and whose usage it may read: a key that is not
 * admin sees only itself (403 when it names another key).
 */
function pageOf<G extends string>(q: ReportQuery, res: Response): Query<G> {
  const own = apiKeyId(res.locals);
  const admin = apiKeySettings(res.locals)?.admin === true;
  const asked = q.apiKeyIds;
  if (!admin && asked?.some((id) => id !== own)) {
    throw new ServiceError(403, 'permission_error', "This API key may only read its own usage; an admin key (npm run keys -- create --admin) reads other keys'", { param: 'api_key_ids', code: 'forbidden' });
  }
  const buckets: number[] = [];
  for (let b = q.at; b < q.end && buckets.length < q.limit; b += q.width) buckets.push(b);
  const after = buckets.at(-1)! + q.width;
  return {
    start: q.start,
    end: q.end,
    width: q.width,
    limit: q.limit,
    from: Math.max(q.start, buckets[0]!),
    to: Math.min(q.end, after),
    buckets,
    next: after < q.end ? after : null,
    groupBy: q.groupBy as G[],
    apiKeyIds: asked ?? (admin ? null : [own]),
  };
}

/** OpenAI's page of buckets: every bucket of the page, empty ones with no results. */
function page<G extends string>(q: Query<G>, rows: UsageRow[], result: (r: UsageRow) => Record<string, unknown>) {
  const byBucket = new Map<number, UsageRow[]>();
  for (const r of rows) byBucket.set(r.bucket, [...(byBucket.get(r.bucket) ?? []), r]);
  return {
    object: 'page',
    data: q.buckets.map((b) => ({
      object: 'bucket',
      start_time: Math.max(q.start, b),
      end_time: Math.min(q.end, b + q.width),
      results: (byBucket.get(b) ?? []).map(result),
    })),
    has_more: q.next !== null,
    next_page: q.next === null ? null : `page_${q.next}`,
  };
}
