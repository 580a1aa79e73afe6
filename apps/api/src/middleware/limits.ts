import type { Request, RequestHandler, Response } from 'express';
import { type Env, ServiceError } from '@image-edits/core';
import { type KeySettings, spentSince } from '@image-edits/db';
import { type BucketName, type BucketRequest, type BucketState, createRateLimiter } from '@image-edits/queue';
import type { ApiDeps } from '../deps';
import { apiKeyId, apiKeySettings } from './auth';

/**
 * Per-key limits of the creating endpoints (POST /v1/images/edits, POST /v1/batches), shared by
 * every API process through Redis (token buckets, packages/queue/src/rate-limits.ts):
 *
 * - the monthly budget (USD, calendar month in UTC), checked at submission against the month's
 *   usage rows (the figure cached in Redis for BUDGET_CACHE_MS). Jobs accepted but not finished
 *   are not counted yet, so a key may overshoot its budget by what it has in flight (and by what
 *   it submits within BUDGET_CACHE_MS): 429 `insufficient_quota`;
 * - requests per minute, one per request, before its body is read: 429 `rate_limit_exceeded`;
 * - images per minute, the edit's n, once its body is read (given back when no job comes of the
 *   request): 429 `rate_limit_exceeded`. A batch is admitted whole (one request); its children
 *   are paced by the worker.
 *
 * OpenAI's headers go on every answer: x-ratelimit-{limit,remaining,reset}-{requests,images}, and
 * retry-after on a 429. Redis not answering (REDIS_TIMEOUT_MS) lets the request through, with a
 * warning: an outage of the limiter is not an outage of the service.
 */

/** How long the month-to-date spend is reused (every API process reads the same cached figure). */
export const BUDGET_CACHE_MS = 10_000;
/** Longest wait for Redis before a limit is let through (fail open). */
const REDIS_TIMEOUT_MS = 500;
/** Fail-open warnings: at most one per this long per process. */
const WARN_EVERY_MS = 10_000;

export interface KeyLimits {
  /** 0 = no limit */
  rpm: number;
  ipm: number;
  budgetUsd: number;
}

/** The key's own limits, else the deployment's defaults (KEY_RPM, KEY_IPM, KEY_MONTHLY_BUDGET_USD); 0 = none. */
export function keyLimits(settings: KeySettings | undefined, env: Pick<Env, 'KEY_RPM' | 'KEY_IPM' | 'KEY_MONTHLY_BUDGET_USD'>): KeyLimits {
  return {
    rpm: settings?.requestsPerMinute ?? env.KEY_RPM ?? 0,
    ipm: settings?.imagesPerMinute ?? env.KEY_IPM ?? 0,
    budgetUsd: settings?.monthlyBudgetUsd ?? env.KEY_MONTHLY_BUDGET_USD ?? 0,
  };
}

/** The key's retention, else the deployment's: copied onto each job it submits. */
export function keyRetention(locals: Record<string, unknown>, env: Pick<Env, 'INPUT_RETENTION_SECONDS' | 'RESULT_RETENTION_SECONDS'>): { inputSeconds: number; resultSeconds: number } {
  const s = apiKeySettings(locals) as KeySettings | undefined;
  return { inputSeconds: s?.inputRetentionSeconds ?? env.INPUT_RETENTION_SECONDS, resultSeconds: s?.resultRetentionSeconds ?? env.RESULT_RETENTION_SECONDS };
}

type LimitDeps = Pick<ApiDeps, 'config' | 'db' | 'redis' | 'logger'>;

/** Before the body: the budget, then one request of the key's requests per minute (and the images headers). */
export function limitRequests(deps: LimitDeps): RequestHandler {
  const env = deps.config.env;
  const limiter = createRateLimiter(deps.redis, env.QUEUE_PREFIX);
  const guard = failOpen(deps);
  return async (_req, res, next) => {
    const key = apiKeyId(res.locals);
    const limits = keyLimits(apiKeySettings(res.locals), env);
    if (limits.budgetUsd > 0) await checkBudget(deps, guard, res, key, limits.budgetUsd);
    const buckets: BucketRequest[] = [];
    if (limits.rpm > 0) buckets.push({ name: 'requests', limit: limits.rpm, cost: 1 });
    if (limits.ipm > 0) buckets.push({ name: 'images', limit: limits.ipm, cost: 0 });
    if (buckets.length === 0) return next();
    const taken = await guard(() => limiter.take(key, buckets));
    if (!taken) return next();
    setHeaders(res, taken.states);
    if (!taken.allowed) throw rateLimited(res, 'requests', taken.states.get('requests')!, 1);
    next();
  };
}

/** After the body of an edit: its n images of the key's images per minute, given back if the request creates no job. */
export function limitImages(deps: LimitDeps): RequestHandler {
  const env = deps.config.env;
  const limiter = createRateLimiter(deps.redis, env.QUEUE_PREFIX);
  const guard = failOpen(deps);
  return async (req, res, next) => {
    const key = apiKeyId(res.locals);
    const ipm = keyLimits(apiKeySettings(res.locals), env).ipm;
    if (ipm <= 0) return next();
    const n = requestedImages(req);
    if (n > ipm) {
      res.set({ 'retry-after': '60', 'x-should-retry': 'false' });
      throw new ServiceError(429, 'images', `Request too large for images per minute (IPM): Limit ${ipm}, Requested ${n}. Ask for at most ${ipm} images (n) in one request.`, {
        param: 'n',
        code: 'rate_limit_exceeded',
      });
    }
    const bucket: BucketRequest = { name: 'images', limit: ipm, cost: n };
    const taken = await guard(() => limiter.take(key, [bucket]));
    if (!taken) return next();
    setHeaders(res, taken.states);
    if (!taken.allowed) throw rateLimited(res, 'images', taken.states.get('images')!, n);
    res.once('close', () => {
      // a refused or replayed request created nothing: its images go back
      if (res.getHeader('x-job-id') && !res.getHeader('x-retry-attached')) return;
      guard(() => limiter.refund(key, [bucket])).catch(() => undefined);
    });
    next();
  };
}

/** The edit's n as sent (multipart: a string; JSON: a number); the edit's own validation judges it later. */
function requestedImages(req: Request): number {
  const body = req.body as Record<string, unknown> | undefined;
  const raw = Array.isArray(body?.n) ? body.n[0] : body?.n;
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d{1,9}$/.test(raw.trim()) ? Number(raw) : 1;
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

const LABEL: Record<BucketName, string> = { requests: 'requests per minute (RPM)', images: 'images per minute (IPM)', 'batch-images': 'batch images per minute' };

function rateLimited(res: Response, name: 'requests' | 'images', state: BucketState, requested: number): ServiceError {
  const seconds = Math.max(1, Math.ceil(state.waitMs / 1000));
  res.set('retry-after', String(seconds));
  return new ServiceError(
    429,
    name,
    `Rate limit reached for ${LABEL[name]} of this API key: Limit ${state.limit}, Used ${state.limit - state.remaining}, Requested ${requested}. Please try again in ${duration(state.waitMs)}.`,
    { code: 'rate_limit_exceeded' },
  );
}

/** 429 insufficient_quota once the month's spend reached the budget. */
async function checkBudget(deps: LimitDeps, guard: Guard, res: Response, key: string, budgetUsd: number): Promise<void> {
  const now = new Date();
  const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const next = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  const cacheKey = `${deps.config.env.QUEUE_PREFIX}:spend:${key}:${month.toISOString().slice(0, 7)}`;
  const cached = await guard(() => deps.redis.get(cacheKey));
  let spent = cached === undefined || cached === null ? undefined : Number(cached);
  if (spent === undefined || !Number.isFinite(spent)) {
    spent = await spentSince(deps.db, key, month);
    const figure = spent;
    void guard(() => deps.redis.set(cacheKey, String(figure), 'PX', BUDGET_CACHE_MS));
  }
  if (spent < budgetUsd) return;
  res.set({ 'retry-after': String(Math.ceil((next.getTime() - now.getTime()) / 1000)), 'x-should-retry': 'false' });
  throw new ServiceError(
    429,
    'insufficient_quota',
    `You exceeded your current quota: this API key's monthly budget of $${budgetUsd.toFixed(2)} is spent ($${spent.toFixed(2)} so far this month). It renews on ${next.toISOString().slice(0, 10)} (UTC); an operator can raise it with npm run keys -- set --id ${key} --monthly-budget-usd X.`,
    { code: 'insufficient_quota' },
  );
}

function setHeaders(res: Response, states: Map<BucketName, BucketState>): void {
  for (const [name, s] of states) {
    if (name === 'batch-images') continue;
    res.set({ [`x-ratelimit-limit-${name}`]: String(s.limit), [`x-ratelimit-remaining-${name}`]: String(s.remaining), [`x-ratelimit-reset-${name}`]: duration(s.resetMs) });
  }
}

/** OpenAI's duration format: 20ms, 1s, 6m0s, 1h2m3s. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  const total = Math.ceil(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

type Guard = <T>(work: () => Promise<T>) => Promise<T | undefined>;

/** Runs a Redis call of the limiter; if Redis fails or does not answer in time: undefined (the limit lets the request through) and a warning. */
function failOpen(deps: Pick<ApiDeps, 'logger'>): Guard {
  let warned = 0;
  return async <T>(work: () => Promise<T>): Promise<T | undefined> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        work(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`Redis did not answer within ${REDIS_TIMEOUT_MS} ms`)), REDIS_TIMEOUT_MS);
        }),
      ]);
    } catch (err) {
      if (Date.now() - warned > WARN_EVERY_MS) {
        warned = Date.now();
        deps.logger.warn({ err }, 'per-key limits unavailable (Redis): requests are let through unlimited meanwhile');
      }
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  };
}
