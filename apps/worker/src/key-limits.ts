import { type Db, getKeyConcurrencyLimit, getKeySettings } from '@image-edits/db';

/** A key's cap is read again after this long, so `npm run keys -- set` reaches every worker within seconds. */
export const KEY_LIMIT_CACHE_MS = 5_000;
const CACHE_MAX = 10_000;

/**
 * How many of a key's jobs may run at once per provider (0 = no cap): the key's own
 * `max_concurrent_jobs`, else the deployment's default. Remembered briefly in this process (a
 * cache of configuration, not shared state), sparing a query per job start.
 */
export function keyConcurrencyLimits(db: Db, defaultLimit: number, ttlMs = KEY_LIMIT_CACHE_MS): (apiKeyId: string) => Promise<number> {
  const known = new Map<string, { limit: number; until: number }>();
  return async (apiKeyId) => {
    const now = Date.now();
    const hit = known.get(apiKeyId);
    if (hit && hit.until > now) return hit.limit;
    const own = await getKeyConcurrencyLimit(db, apiKeyId);
    const limit = own ?? defaultLimit;
    if (known.size >= CACHE_MAX) known.clear();
    known.set(apiKeyId, { limit, until: now + ttlMs });
    return limit;
  };
}

/**
 * A key's images per minute (0 = no limit): its own `images_per_minute`, else KEY_IPM. Its batch
 * children are paced by it (packages/queue/src/rate-limits.ts). Cached as the caps are.
 */
export function keyImagesPerMinute(db: Db, defaultLimit: number, ttlMs = KEY_LIMIT_CACHE_MS): (apiKeyId: string) => Promise<number> {
  const known = new Map<string, { limit: number; until: number }>();
  return async (apiKeyId) => {
    const now = Date.now();
    const hit = known.get(apiKeyId);
    if (hit && hit.until > now) return hit.limit;
    const own = (await getKeySettings(db, apiKeyId))?.imagesPerMinute ?? null;
    const limit = own ?? defaultLimit;
    if (known.size >= CACHE_MAX) known.clear();
    known.set(apiKeyId, { limit, until: now + ttlMs });
    return limit;
  };
}
