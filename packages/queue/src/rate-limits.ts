import type { Redis } from 'ioredis';
import { luaScript } from './lua';
import { fairKeys } from './fairness';

/**
 * Per-key rate limits shared by every API and worker process through Redis: token buckets (one
 * Lua script, so checking and taking are one atomic step whatever the number of processes). A
 * bucket holds `limit` tokens and refills `limit` per minute, continuously: a key may burst up to
 * its limit, then goes at its rate; `reset` is the time until the bucket is full again (OpenAI's
 * x-ratelimit-reset-*).
 *
 * Buckets per key: `requests` (POST /v1/images/edits and POST /v1/batches, one each), `images` (the
 * n of a direct edit), `batch-images` (batch children, paced by the worker: a running batch never
 * makes the key's direct requests 429, as OpenAI keeps batch limits apart).
 */

export type BucketName = 'requests' | 'images' | 'batch-images';

export interface BucketRequest {
  name: BucketName;
  /** tokens per minute (> 0) */
  limit: number;
  /** tokens this request takes (0: only looks) */
  cost: number;
}

export interface BucketState {
  limit: number;
  /** whole tokens left after this request */
  remaining: number;
  /** ms until the bucket is full again */
  resetMs: number;
  /** ms until `cost` tokens are there (0 when they are) */
  waitMs: number;
}

export const RATE_WINDOW_MS = 60_000;

// One script for all three uses: take (all buckets or none), refund (give tokens back), peek.
const BUCKETS_LUA = `
local rcall = redis.call
local clock = rcall('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window, mode = tonumber(ARGV[1]), ARGV[2]
local tokens, ok = {}, 1
for i = 1, #KEYS do
  local limit, cost = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local h = rcall('HMGET', KEYS[i], 't', 'ts')
  local t = tonumber(h[1])
  if t == nil then t = limit else t = math.min(limit, t + math.max(0, now - tonumber(h[2])) * limit / window) end
  tokens[i] = t
  if mode == 'take' and t < cost then ok = 0 end
end
local out = {ok}
for i = 1, #KEYS do
  local limit, cost = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local t = tokens[i]
  if mode == 'take' and ok == 1 then t = t - cost elseif mode == 'refund' then t = math.min(limit, t + cost) end
  if mode ~= 'peek' then
    rcall('HSET', KEYS[i], 't', tostring(t), 'ts', now)
    rcall('PEXPIRE', KEYS[i], window * 2)
  end
  local wait = 0
  if mode ~= 'refund' and ok == 0 and t < cost then wait = math.ceil((cost - t) * window / limit) end
  out[#out + 1] = math.floor(t)
  out[#out + 1] = math.ceil((limit - t) * window / limit)
  out[#out + 1] = wait
end
return out
`;

// Wakes as many batch children parked for their key's pace as there are whole tokens (at most `most`).
const WAKE_PACED_LUA = `
local rcall = redis.call
local clock = rcall('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window, limit, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = most
if limit > 0 then
  local h = rcall('HMGET', KEYS[1], 't', 'ts')
  local t = tonumber(h[1])
  if t == nil then t = limit else t = math.min(limit, t + math.max(0, now - tonumber(h[2])) * limit / window) end
  n = math.min(most, math.floor(t))
end
local woken = {}
if n > 0 then
  local popped = rcall('ZPOPMIN', KEYS[2], n)
  for i = 1, #popped, 2 do woken[#woken + 1] = popped[i] end
end
if rcall('ZCARD', KEYS[2]) == 0 then rcall('SREM', KEYS[3], ARGV[4]) end
return woken
`;

const bucketsScript = luaScript(BUCKETS_LUA);
const wakePacedScript = luaScript(WAKE_PACED_LUA);

export const rateLimitKey = (prefix: string, apiKeyId: string, name: BucketName) => `${prefix}:ratelimit:${apiKeyId}:${name}`;

export interface RateLimiter {
  /** takes every bucket's cost, or none of them when one is short (`allowed: false`, and each bucket's wait) */
  take(apiKeyId: string, buckets: BucketRequest[]): Promise<{ allowed: boolean; states: Map<BucketName, BucketState> }>;
  /** gives the tokens back (a request that created nothing) */
  refund(apiKeyId: string, buckets: BucketRequest[]): Promise<void>;
}

export function createRateLimiter(redis: Redis, prefix: string): RateLimiter {
  const run = async (mode: 'take' | 'refund' | 'peek', apiKeyId: string, buckets: BucketRequest[]) => {
    const keys = buckets.map((b) => rateLimitKey(prefix, apiKeyId, b.name));
    const args: (string | number)[] = [RATE_WINDOW_MS, mode, ...buckets.flatMap((b) => [b.limit, b.cost])];
    const out = (await bucketsScript(redis, keys, args)) as number[];
    const states = new Map<BucketName, BucketState>();
    buckets.forEach((b, i) => {
      states.set(b.name, { limit: b.limit, remaining: Math.max(0, Number(out[1 + 3 * i])), resetMs: Math.max(0, Number(out[2 + 3 * i])), waitMs: Math.max(0, Number(out[3 + 3 * i])) });
    });
    return { allowed: Number(out[0]) === 1, states };
  };
  return {
    take: (apiKeyId, buckets) => (buckets.length === 0 ? Promise.resolve({ allowed: true, states: new Map() }) : run('take', apiKeyId, buckets)),
    async refund(apiKeyId, buckets) {
      if (buckets.length > 0) await run('refund', apiKeyId, buckets);
    },
  };
}

/** Batch children woken per key per sweep, at most. */
const WAKE_MOST = 50;
/** as fairness.ts: deferral counts outlive any job's time on one target */
const DEFERRALS_TTL_MS = 2 * 24 * 3600 * 1000;

/**
 * The pace of a key's batch children on one provider's queue: a child takes its images from the
 * key's `batch-images` bucket before it runs; one that finds it short is parked (delayed without
 * spending an attempt, noted in the key's paced set), and every worker's sweep wakes as many parked
 * children as the bucket has tokens, in the order they were parked. Nothing is refused.
 */
export interface BatchPacer {
  /** true: the child may run (its images are taken); false: park it */
  take(apiKeyId: string, images: number, imagesPerMinute: number): Promise<boolean>;
  /** notes a child just moved to delayed for its key's pace (counted as a deferral, not a start) */
  park(queueName: string, apiKeyId: string, bullJobId: string): Promise<void>;
  /** the parked children to wake now for the key's tokens (all of them, WAKE_MOST at a time, once the key has no limit) */
  wakeable(queueName: string, apiKeyId: string, imagesPerMinute: number): Promise<string[]>;
  /** keys with parked children on this queue */
  pacedKeys(queueName: string): Promise<string[]>;
}

export function pacedKeys(prefix: string, queueName: string) {
  const base = `${prefix}:pace:${queueName}`;
  return { parked: (apiKeyId: string) => `${base}:park:${apiKeyId}`, keys: `${base}:keys` };
}

export function createBatchPacer(redis: Redis, prefix: string): BatchPacer {
  const limiter = createRateLimiter(redis, prefix);
  return {
    async take(apiKeyId, images, imagesPerMinute) {
      // a child with more images than the key's minute takes a full bucket (it could never fit otherwise)
      const cost = Math.max(1, Math.min(images, imagesPerMinute));
      return (await limiter.take(apiKeyId, [{ name: 'batch-images', limit: imagesPerMinute, cost }])).allowed;
    },
    async park(queueName, apiKeyId, bullJobId) {
      const k = pacedKeys(prefix, queueName);
      const deferrals = fairKeys(prefix, queueName).deferrals(bullJobId);
      await redis.multi().incr(deferrals).pexpire(deferrals, DEFERRALS_TTL_MS).zadd(k.parked(apiKeyId), Date.now(), bullJobId).sadd(k.keys, apiKeyId).exec();
    },
    async wakeable(queueName, apiKeyId, imagesPerMinute) {
      const k = pacedKeys(prefix, queueName);
      return (await wakePacedScript(redis, [rateLimitKey(prefix, apiKeyId, 'batch-images'), k.parked(apiKeyId), k.keys], [RATE_WINDOW_MS, imagesPerMinute, WAKE_MOST, apiKeyId])) as string[];
    },
    pacedKeys(queueName) {
      return redis.smembers(pacedKeys(prefix, queueName).keys);
    },
  };
}
