import { type Request, type Response, Router } from 'express';
import { invalidRequest, ServiceError } from '@image-edits/core';
import { USAGE_GROUPS, type UsageGroup, type UsageRow, usageBuckets } from '@image-edits/db';
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

const WIDTHS = { '1m': 60, '1h': 3600, '1d': 86_400 } as const;
type Width = keyof typeof WIDTHS;
/** OpenAI's defaults and maxima of `limit` (buckets per page) per bucket width */
const USAGE_LIMITS: Record<Width, { def: number; max: number }> = { '1m': { def: 60, max: 1440 }, '1h': { def: 24, max: 168 }, '1d': { def: 7, max: 31 } };
const COST_LIMITS: Record<Width, { def: number; max: number }> = { '1m': { def: 60, max: 1440 }, '1h': { def: 24, max: 168 }, '1d': { def: 7, max: 180 } };
const SOURCES = ['image.edit', 'batch'];
/** 9999-12-31T23:59:59Z */
const MAX_UNIX_SECONDS = 253_402_300_799;

export function organizationRouter(deps: ApiDeps): Router {
  const router = Router();

  router.get('/v1/organization/usage/images', async (req, res) => {
    const q = parseQuery(req, res, {
      params: ['start_time', 'end_time', 'bucket_width', 'group_by', 'api_key_ids', 'models', 'sizes', 'sources', 'limit', 'page'],
      groups: USAGE_GROUPS,
      limits: USAGE_LIMITS,
    });
    const models = list(req, 'models');
    const sizes = list(req, 'sizes');
    const sources = list(req, 'sources');
    const badSource = sources?.find((s) => !SOURCES.includes(s));
    if (badSource !== undefined) throw invalidRequest(`sources: '${badSource}' is not one of ${SOURCES.join(', ')}`, 'sources', 'invalid_value');
    const rows = await usageBuckets(deps.db, { start: q.from, end: q.to, width: q.width, groupBy: q.groupBy, apiKeyIds: q.apiKeyIds, models, sizes, sources });
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
    const q = parseQuery(req, res, {
      params: ['start_time', 'end_time', 'bucket_width', 'group_by', 'api_key_ids', 'limit', 'page'],
      groups: ['line_item', 'api_key_id'] as const,
      limits: COST_LIMITS,
    });
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

/** Every query parameter checked, each refusal a 400 naming it; a key that is not admin sees only itself (403 otherwise). */
function parseQuery<G extends string>(
  req: Request,
  res: Response,
  spec: { params: string[]; groups: readonly G[]; limits: Record<Width, { def: number; max: number }> },
): Query<G> {
  for (const name of Object.keys(req.query)) {
    const base = name.endsWith('[]') ? name.slice(0, -2) : name;
    if (!spec.params.includes(base)) throw invalidRequest(`Unknown parameter: '${name}'. This endpoint takes ${spec.params.join(', ')}`, name, 'unknown_parameter');
  }
  const start = unix(req, 'start_time', true)!;
  const end = unix(req, 'end_time', false) ?? Math.ceil(Date.now() / 1000);
  if (end <= start) throw invalidRequest('end_time must be after start_time', 'end_time', 'invalid_value');
  const widthName = single(req, 'bucket_width') ?? '1d';
  if (!(widthName in WIDTHS)) throw invalidRequest(`bucket_width must be one of ${Object.keys(WIDTHS).join(', ')}`, 'bucket_width', 'invalid_value');
  const width = WIDTHS[widthName as Width];
  const bounds = spec.limits[widthName as Width];
  const limitText = single(req, 'limit');
  let limit = bounds.def;
  if (limitText !== undefined) {
    if (!/^\d{1,6}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > bounds.max) {
      throw invalidRequest(`limit must be an integer from 1 to ${bounds.max} with bucket_width ${widthName}`, 'limit', 'invalid_value');
    }
    limit = Number(limitText);
  }
  const groupBy = (list(req, 'group_by') ?? []) as G[];
  for (const g of groupBy) if (!spec.groups.includes(g)) throw invalidRequest(`group_by: '${g}' is not one of ${spec.groups.join(', ')}`, 'group_by', 'invalid_value');

  const own = apiKeyId(res.locals);
  const admin = apiKeySettings(res.locals)?.admin === true;
  const asked = list(req, 'api_key_ids');
  for (const id of asked ?? []) if (!/^key_[0-9a-z]+$/.test(id)) throw invalidRequest(`api_key_ids: '${id}' is not an API key id`, 'api_key_ids', 'invalid_value');
  if (!admin && asked?.some((id) => id !== own)) {
    throw new ServiceError(403, 'permission_error', "This API key may only read its own usage; an admin key (npm run keys -- create --admin) reads other keys'", { param: 'api_key_ids', code: 'forbidden' });
  }
  const apiKeyIds = asked ?? (admin ? null : [own]);

  // buckets: multiples of the width, the first one holding start_time
  const first = Math.floor(start / width) * width;
  let at = first;
  const cursor = single(req, 'page');
  if (cursor !== undefined) {
    const m = /^page_(\d{1,15})$/.exec(cursor);
    const t = m ? Number(m[1]) : Number.NaN;
    if (!m || t < first || t >= end || (t - first) % width !== 0) throw invalidRequest('page must be the next_page of an earlier answer to the same query', 'page', 'invalid_value');
    at = t;
  }
  const buckets: number[] = [];
  for (let b = at; b < end && buckets.length < limit; b += width) buckets.push(b);
  const after = buckets.at(-1)! + width;
  return {
    start,
    end,
    width,
    limit,
    from: Math.max(start, buckets[0]!),
    to: Math.min(end, after),
    buckets,
    next: after < end ? after : null,
    groupBy,
    apiKeyIds,
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

/** A parameter given once (a repeated one is a 400). */
function single(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidRequest(`${name} must be given once`, name, 'invalid_value');
  return v;
}

/** A list parameter: repeated (`x=a&x=b`), with brackets (`x[]=a`), or comma separated; undefined when absent. */
function list(req: Request, name: string): string[] | undefined {
  const values = [req.query[name], req.query[`${name}[]`]].flatMap((v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]));
  if (values.length === 0) return undefined;
  const out: string[] = [];
  for (const v of values) {
    if (typeof v !== 'string') throw invalidRequest(`${name} must be a list of strings`, name, 'invalid_value');
    for (const part of v.split(',')) {
      const item = part.trim();
      if (!item || item.length > 200) throw invalidRequest(`${name} has an empty or overlong item`, name, 'invalid_value');
      out.push(item);
    }
  }
  if (out.length > 100) throw invalidRequest(`${name} takes at most 100 items`, name, 'invalid_value');
  return [...new Set(out)];
}

/** Unix seconds, an integer from 0 to the end of year 9999. */
function unix(req: Request, name: string, required: boolean): number | undefined {
  const v = single(req, name);
  if (v === undefined || v === '') {
    if (required) throw invalidRequest(`${name} is required (unix seconds)`, name, 'missing_required_parameter');
    return undefined;
  }
  if (!/^\d{1,12}$/.test(v) || Number(v) > MAX_UNIX_SECONDS) throw invalidRequest(`${name} must be a time in unix seconds (an integer from 0 to ${MAX_UNIX_SECONDS})`, name, 'invalid_value');
  return Number(v);
}
