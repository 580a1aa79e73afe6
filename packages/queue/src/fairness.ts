import { PRIORITY_LIMIT } from 'bullmq';
import type { Redis } from 'ioredis';
import { luaScript } from './lua';

/**
 * Fairness between API keys on one provider's queue, with every bit of shared state in Redis (any
 * number of API and worker processes, no coordinator).
 *
 * Order: start-time fair queueing mapped onto BullMQ priorities (lower runs first, ties in arrival
 * order). Each lane of each provider queue keeps a virtual time `v` (the highest tag started so far)
 * and, per API key, the tag its next job gets. A new job's tag is max(v, the key's next tag): a key's
 * jobs take consecutive tags (first in, first out within the key), and a key with nothing waiting
 * starts level with the job being served now. So every key with work gets one job per round, and a
 * newcomer's first job overtakes any backlog. Two lanes: direct submissions get priorities in
 * [1, 2^20), batch children [2^20, PRIORITY_LIMIT], so any direct job runs before any batch child.
 * The state is two numbers per lane and one per key: nothing is counted up at enqueue and down at
 * start, so nothing drifts when a process dies between the two. A lane with nothing waiting, running
 * or delayed starts again at 0 (after a quiet moment, so a job tagged just before cannot land behind
 * the restart); a lane that never empties for a million rounds saturates at its last priority (then
 * first in, first out) rather than overflowing.
 *
 * Caps: at most `cap` jobs of one key run at once on one provider, across all workers. A job takes a
 * lease before it runs (a sorted set of BullMQ job ids by expiry: renewed while the job runs, pruned
 * on every use, so a killed worker's lease lapses by itself). A job over its key's cap is parked:
 * moved to delayed without spending an attempt, and noted in the key's parked set; the key's next
 * release, or any worker's sweep, wakes parked jobs as its slots free up. Parking takes the job out
 * of the line, so a capped key's backlog never stands in front of other keys' jobs.
 */

export type Lane = 'direct' | 'batch';

/** Priorities per lane: a tag is a round number within its lane. */
export const LANE_SPAN = 2 ** 20;
export const LANE_PRIORITIES: Record<Lane, { lo: number; hi: number }> = {
  direct: { lo: 1, hi: LANE_SPAN - 1 },
  batch: { lo: LANE_SPAN, hi: PRIORITY_LIMIT },
};

/** The BullMQ priority of a job with this tag: 0 is never used (BullMQ runs unprioritized jobs first). */
export function fairPriority(lane: Lane, tag: number): number {
  const { lo, hi } = LANE_PRIORITIES[lane];
  return lo + Math.min(Math.max(0, Math.floor(tag)), hi - lo);
}

/** The lane and tag behind a priority; null for a job enqueued without one (before fairness existed). */
export function tagOfPriority(priority: number | undefined): { lane: Lane; tag: number } | null {
  if (!priority || priority < 1) return null;
  const lane: Lane = priority >= LANE_PRIORITIES.batch.lo ? 'batch' : 'direct';
  return { lane, tag: priority - LANE_PRIORITIES[lane].lo };
}

/**
 * The ordering rule on one provider queue, in memory: the reference that the Redis scripts below
 * apply atomically for every process. Used by the unit tests and to explain the rule.
 */
export class LaneModel {
  /** per lane, the highest tag started so far */
  readonly v: Record<Lane, number> = { direct: 0, batch: 0 };
  /** per lane and key, the tag of the key's next job */
  readonly next = new Map<string, number>();
  /** priorities of `count` new jobs of a key */
  enqueue(lane: Lane, apiKeyId: string, count = 1): number[] {
    const first = Math.max(this.v[lane], this.next.get(`${lane}:${apiKeyId}`) ?? 0);
    this.next.set(`${lane}:${apiKeyId}`, first + count);
    return Array.from({ length: count }, (_, i) => fairPriority(lane, first + i));
  }
  /** a job with this priority started running */
  started(priority: number): void {
    const t = tagOfPriority(priority);
    if (t && t.tag > this.v[t.lane]) this.v[t.lane] = t.tag;
  }
}

/** The fairness key of jobs enqueued without an API key id (one shared line). */
export const ANONYMOUS_KEY = '-';

/** Redis key layout, under the queue prefix (so a deployment's or a test's keys go with it). */
export function fairKeys(prefix: string, queueName: string) {
  const base = `${prefix}:fair:${queueName}`;
  return {
    lane: (lane: Lane) => `${base}:lane:${lane}`,
    running: (apiKeyId: string) => `${base}:run:${apiKeyId}`,
    parked: (apiKeyId: string) => `${base}:park:${apiKeyId}`,
    parkedKeys: `${base}:parked`,
    deferrals: (bullJobId: string) => `${base}:deferred:${bullJobId}`,
  };
}

/** A lane may start again at 0 only after no tag was handed out in it for this long. */
export const LANE_RESET_QUIET_MS = 2000;
/** How long a parked job stays delayed if nothing wakes it (a safety net: releases and sweeps wake it). */
export const PARK_MS = 10 * 60 * 1000;
/** How often each worker wakes parked jobs whose key has free slots (after a lost release). */
export const SWEEP_INTERVAL_MS = 1000;
/** Parked jobs woken per key per release or sweep. */
const WAKE_MOST = 20;
/** Deferral counts outlive any job's time on one target. */
const DEFERRALS_TTL_MS = 2 * 24 * 3600 * 1000;

// Times are Redis's own clock (no skew between hosts). Lua numbers print with 14 significant digits:
// sorted-set scores of priorities (priority × 2^32) go in as strings.
const NOW = `local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)`;

const TAG_LUA = `
local rcall = redis.call
${NOW}
local state = KEYS[1]
local last = tonumber(rcall('HGET', state, 't') or '0')
if now - last > tonumber(ARGV[3]) and rcall('EXISTS', state) == 1 then
  local lo, hi = tonumber(ARGV[4]), tonumber(ARGV[5])
  local function anyInLane(ids)
    for _, id in ipairs(ids) do
      local p = tonumber(rcall('HGET', ARGV[8] .. id, 'priority') or '0')
      if p >= lo and p <= hi then return true end
    end
    return false
  end
  local busy = rcall('ZCOUNT', KEYS[2], ARGV[6], ARGV[7]) > 0
  if not busy then busy = rcall('ZCARD', KEYS[3]) > 1000 or anyInLane(rcall('ZRANGE', KEYS[3], 0, -1)) end
  if not busy then busy = rcall('LLEN', KEYS[4]) > 1000 or anyInLane(rcall('LRANGE', KEYS[4], 0, -1)) end
  if not busy then rcall('DEL', state) end
end
local v = tonumber(rcall('HGET', state, 'v') or '0')
local field = 'k:' .. ARGV[1]
local first = math.max(v, tonumber(rcall('HGET', state, field) or '0'))
rcall('HSET', state, field, first + tonumber(ARGV[2]), 't', now)
return first
`;

const REFUND_LUA = `
local rcall = redis.call
local v = tonumber(rcall('HGET', KEYS[1], 'v') or '0')
local field = 'k:' .. ARGV[1]
local n = tonumber(rcall('HGET', KEYS[1], field) or '0')
if tonumber(ARGV[2]) >= v and n > v then rcall('HSET', KEYS[1], field, n - 1) end
return 0
`;

const ACQUIRE_LUA = `
local rcall = redis.call
${NOW}
local lease, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
rcall('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if cap > 0 and not rcall('ZSCORE', KEYS[1], ARGV[1]) and rcall('ZCARD', KEYS[1]) >= cap then
  local d = rcall('INCR', KEYS[2])
  rcall('PEXPIRE', KEYS[2], ARGV[5])
  return {0, d}
end
rcall('ZADD', KEYS[1], now + lease, ARGV[1])
rcall('PEXPIRE', KEYS[1], lease * 2)
local tag = tonumber(ARGV[4])
if tag >= 0 and tag > tonumber(rcall('HGET', KEYS[3], 'v') or '-1') then rcall('HSET', KEYS[3], 'v', tag) end
return {1, tonumber(rcall('GET', KEYS[2]) or '0')}
`;

const RENEW_LUA = `
${NOW}
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 0
`;

const RELEASE_LUA = `
local rcall = redis.call
${NOW}
if ARGV[1] ~= '' then rcall('ZREM', KEYS[1], ARGV[1]) end
rcall('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap, free = tonumber(ARGV[2]), tonumber(ARGV[4])
if cap > 0 then free = math.min(free, cap - rcall('ZCARD', KEYS[1])) end
local woken = {}
if free > 0 then
  local popped = rcall('ZPOPMIN', KEYS[2], free)
  for i = 1, #popped, 2 do woken[#woken + 1] = popped[i] end
end
if rcall('ZCARD', KEYS[2]) == 0 then rcall('SREM', KEYS[3], ARGV[3]) end
return woken
`;

const tagScript = luaScript(TAG_LUA);
const refundScript = luaScript(REFUND_LUA);
const acquireScript = luaScript(ACQUIRE_LUA);
const renewScript = luaScript(RENEW_LUA);
const releaseScript = luaScript(RELEASE_LUA);

/** What the tag script needs to know of a BullMQ queue (its own key names) to tell whether a lane is empty. */
export interface QueueKeyNames {
  name: string;
  keys: Record<string, string>;
  toKey(type: string): string;
}

export interface Fairness {
  /** the first of `count` consecutive tags for a key's new jobs on this queue's lane */
  takeTags(queue: QueueKeyNames, lane: Lane, apiKeyId: string, count: number): Promise<number>;
  /** a waiting job left its queue without running (canceled, expired): its key's line is one shorter */
  refund(queueName: string, lane: Lane, apiKeyId: string, tag: number): Promise<void>;
  /** a lease for a job about to run, unless its key is at its cap (0 = no cap) */
  acquire(queueName: string, job: { apiKeyId: string; bullJobId: string; priority: number | undefined }, cap: number, leaseMs: number): Promise<{ acquired: boolean; deferrals: number }>;
  renew(queueName: string, apiKeyId: string, bullJobId: string, leaseMs: number): Promise<void>;
  /** notes a job just moved to delayed for its key's cap, so a free slot wakes it */
  park(queueName: string, apiKeyId: string, bullJobId: string): Promise<void>;
  /** gives up a lease (bullJobId null: only prunes) and returns the parked jobs to wake for the key's free slots */
  release(queueName: string, apiKeyId: string, bullJobId: string | null, cap: number): Promise<string[]>;
  /** keys with parked jobs on this queue */
  parkedKeys(queueName: string): Promise<string[]>;
}

export function createFairness(redis: Redis, prefix: string): Fairness {
  return {
    async takeTags(queue, lane, apiKeyId, count) {
      const { lo, hi } = LANE_PRIORITIES[lane];
      const k = fairKeys(prefix, queue.name);
      const first = await tagScript(
        redis,
        [k.lane(lane), queue.keys.prioritized!, queue.keys.delayed!, queue.keys.active!],
        [apiKeyId, count, LANE_RESET_QUIET_MS, lo, hi, String(lo * 2 ** 32), String((hi + 1) * 2 ** 32 - 1), queue.toKey('')],
      );
      return Number(first);
    },
    async refund(queueName, lane, apiKeyId, tag) {
      await refundScript(redis, [fairKeys(prefix, queueName).lane(lane)], [apiKeyId, tag]);
    },
    async acquire(queueName, job, cap, leaseMs) {
      const k = fairKeys(prefix, queueName);
      const t = tagOfPriority(job.priority);
      const [ok, deferrals] = (await acquireScript(
        redis,
        [k.running(job.apiKeyId), k.deferrals(job.bullJobId), k.lane(t?.lane ?? 'direct')],
        [job.bullJobId, leaseMs, cap, t ? t.tag : -1, DEFERRALS_TTL_MS],
      )) as [number, number];
      return { acquired: ok === 1, deferrals: Number(deferrals) };
    },
    async renew(queueName, apiKeyId, bullJobId, leaseMs) {
      await renewScript(redis, [fairKeys(prefix, queueName).running(apiKeyId)], [bullJobId, leaseMs]);
    },
    async park(queueName, apiKeyId, bullJobId) {
      const k = fairKeys(prefix, queueName);
      await redis.multi().zadd(k.parked(apiKeyId), Date.now(), bullJobId).sadd(k.parkedKeys, apiKeyId).exec();
    },
    async release(queueName, apiKeyId, bullJobId, cap) {
      const k = fairKeys(prefix, queueName);
      return (await releaseScript(redis, [k.running(apiKeyId), k.parked(apiKeyId), k.parkedKeys], [bullJobId ?? '', cap, apiKeyId, WAKE_MOST])) as string[];
    },
    async parkedKeys(queueName) {
      return redis.smembers(fairKeys(prefix, queueName).parkedKeys);
    },
  };
}
