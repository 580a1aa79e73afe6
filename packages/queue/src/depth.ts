import type { Redis } from 'ioredis';
import { editQueueName } from './contract';
import { LANE_PRIORITIES } from './fairness';
import { luaScript } from './lua';

/**
 * How many jobs one provider's edit queue holds, by BullMQ state; `prioritized` (waiting in line:
 * every edit is enqueued with a fair priority) and `active` by lane. `waiting` (the plain wait list:
 * jobs without a priority) and `delayed` (retries' backoff, jobs parked for their key's cap, outages
 * waited out) are kept by BullMQ in arrival or due order, not by priority: telling their lanes apart
 * would mean reading every job, so they are totals.
 */
export interface EditQueueDepth {
  waiting: number;
  delayed: number;
  prioritized: { direct: number; batch: number };
  active: { direct: number; batch: number };
}

// One round trip, O(1) per state but the active list (as long as the running jobs of every worker:
// each one's priority is read). Sorted-set scores of priorities are priority × 2^32 (+ a counter);
// they go in as strings (Lua prints numbers with 14 significant digits).
const depthScript = luaScript(`
local rcall = redis.call
local base = ARGV[1]
local split = tonumber(ARGV[2])
local waiting = rcall('LLEN', base .. 'wait') + rcall('LLEN', base .. 'paused')
local delayed = rcall('ZCARD', base .. 'delayed')
local pDirect = rcall('ZCOUNT', base .. 'prioritized', '-inf', '(' .. ARGV[3])
local pBatch = rcall('ZCOUNT', base .. 'prioritized', ARGV[3], '+inf')
local aDirect, aBatch = 0, 0
for _, id in ipairs(rcall('LRANGE', base .. 'active', 0, -1)) do
  local p = tonumber(rcall('HGET', base .. id, 'priority') or '0') or 0
  if p >= split then aBatch = aBatch + 1 else aDirect = aDirect + 1 end
end
return {waiting, delayed, pDirect, pBatch, aDirect, aBatch}
`);

/** The first batch-lane priority as a sorted-set score: exact (2^52 fits a double). */
const BATCH_SCORE = (BigInt(LANE_PRIORITIES.batch.lo) * 2n ** 32n).toString();

/** Reads the depth of `provider`'s edit queue under `prefix` (for metrics: cheap enough to run at every scrape). */
export async function readEditQueueDepth(connection: Redis, prefix: string, provider: string): Promise<EditQueueDepth> {
  const base = `${prefix}:${editQueueName(provider)}:`;
  const [waiting = 0, delayed = 0, pDirect = 0, pBatch = 0, aDirect = 0, aBatch = 0] = (await depthScript(connection, [], [base, LANE_PRIORITIES.batch.lo, BATCH_SCORE])) as number[];
  return { waiting, delayed, prioritized: { direct: pDirect, batch: pBatch }, active: { direct: aDirect, batch: aBatch } };
}
