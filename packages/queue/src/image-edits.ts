import { DelayedError, Job, type MinimalJob, Queue, RateLimitError, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import type { QueueConfig } from './connection';
import { bullJobId, editQueueName, type ImageEditPayload, imageEditPayload } from './contract';
import { ANONYMOUS_KEY, createFairness, fairPriority, type Lane, PARK_MS, SWEEP_INTERVAL_MS, tagOfPriority } from './fairness';
import { createBatchPacer } from './rate-limits';

export interface RetryPolicy {
  /** total tries, first included */
  attempts: number;
  /** base of the exponential backoff */
  backoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, backoffMs: 2000 };

/** The producer side: the only way to put an edit job on a provider's queue. */
export interface EditQueue {
  /**
   * Adds the job at its fair place (see fairness.ts): after the jobs its API key already has waiting,
   * level with every other key's; a batch child (`batch: true`) after every direct submission.
   */
  enqueue(provider: string, payload: ImageEditPayload): Promise<void>;
  /** Many jobs at once (one tag lookup per key and one `addBulk`), as a batch's fan-out does. */
  enqueueMany(provider: string, payloads: ImageEditPayload[]): Promise<void>;
  /**
   * Enqueues the job again unless BullMQ still has it to run (waiting, active, delayed, ...): a lost
   * job is added (a completed or failed entry is removed first: it would make add a no-op). A job
   * BullMQ failed because its worker died on it more than maxStalledCount times is left alone:
   * 'crashed' tells the caller to give it up rather than feed it to the next worker. Any other
   * failure BullMQ recorded while the row is unfinished (an error of ours, not the provider's: the
   * provider's final failures end the row) is enqueued again.
   */
  requeueIfMissing(provider: string, payload: ImageEditPayload): Promise<'enqueued' | 'present' | 'crashed'>;
  /** Takes a job that has not started off its queue (a running one is left to its worker); its key's line gets shorter. */
  remove(provider: string, payload: ImageEditPayload): Promise<void>;
  /**
   * How many jobs are ahead of this one on its provider's queue; null when it is not waiting in line
   * (running, delayed for a retry or its key's cap, or unknown to BullMQ).
   */
  position(provider: string, payload: ImageEditPayload): Promise<number | null>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** BullMQ's failedReason for a job whose lock lapsed more than maxStalledCount times (its worker kept dying) */
const STALLED_TOO_OFTEN = /stalled more than allowable limit/;

/** Queue objects are made on first use, one per provider, all on the one connection. */
export function createEditQueue(cfg: QueueConfig, connection: Redis, retryFor: (provider: string) => RetryPolicy = () => DEFAULT_RETRY): EditQueue {
  const queues = new Map<string, Queue>();
  const queueFor = (provider: string): Queue => {
    let queue = queues.get(provider);
    if (!queue) {
      const retry = retryFor(provider);
      queue = new Queue(editQueueName(provider), {
        connection,
        prefix: cfg.prefix,
        defaultJobOptions: {
          attempts: retry.attempts,
          backoff: { type: BACKOFF_TYPE, delay: retry.backoffMs },
          removeOnComplete: { age: 3600, count: 10_000 },
          removeOnFail: { age: 7 * 24 * 3600 },
        },
      });
      queues.set(provider, queue);
    }
    return queue;
  };
  const fair = createFairness(connection, cfg.prefix);
  /** Each key's jobs take consecutive tags in their lane; the priorities go on the jobs. */
  const addFairly = async (provider: string, jobs: ImageEditPayload[]) => {
    const queue = queueFor(provider);
    const groups = new Map<string, { lane: Lane; apiKeyId: string; jobs: ImageEditPayload[] }>();
    for (const data of jobs) {
      const lane: Lane = data.batch ? 'batch' : 'direct';
      const apiKeyId = data.apiKeyId ?? ANONYMOUS_KEY;
      const group = groups.get(`${lane}:${apiKeyId}`) ?? { lane, apiKeyId, jobs: [] };
      group.jobs.push(data);
      groups.set(`${lane}:${apiKeyId}`, group);
    }
    const priority = new Map<ImageEditPayload, number>();
    for (const g of groups.values()) {
      const first = await fair.takeTags(queue, g.lane, g.apiKeyId, g.jobs.length);
      for (const [i, data] of g.jobs.entries()) priority.set(data, fairPriority(g.lane, first + i));
    }
    const entries = jobs.map((data) => ({ name: 'edit', data, opts: { jobId: bullJobId(data), priority: priority.get(data)! } }));
    if (entries.length === 1) await queue.add('edit', entries[0]!.data, entries[0]!.opts);
    else if (entries.length > 1) await queue.addBulk(entries);
  };
  return {
    async enqueue(provider, payload) {
      await addFairly(provider, [imageEditPayload.parse(payload)]);
    },
    async enqueueMany(provider, payloads) {
      await addFairly(provider, payloads.map((p) => imageEditPayload.parse(p)));
    },
    async requeueIfMissing(provider, payload) {
      const data = imageEditPayload.parse(payload);
      const queue = queueFor(provider);
      const old = await queue.getJob(bullJobId(data));
      if (old) {
        const state = await old.getState();
        if (state === 'failed' && STALLED_TOO_OFTEN.test(old.failedReason ?? '')) return 'crashed';
        if (state !== 'completed' && state !== 'failed' && state !== 'unknown') return 'present';
        await old.remove();
      }
      await addFairly(provider, [data]);
      return 'enqueued';
    },
    async remove(provider, payload) {
      const data = imageEditPayload.parse(payload);
      const queue = queueFor(provider);
      const job = await queue.getJob(bullJobId(data));
      // a locked (active) job is not removed: 0, and its worker stops on the canceled event
      if ((await queue.remove(bullJobId(data))) !== 1 || !job) return;
      const tag = tagOfPriority(job.priority);
      const owner = imageEditPayload.safeParse(job.data);
      if (tag && owner.success) await fair.refund(queue.name, tag.lane, owner.data.apiKeyId ?? ANONYMOUS_KEY, tag.tag);
    },
    async position(provider, payload) {
      const queue = queueFor(provider);
      const id = bullJobId(imageEditPayload.parse(payload));
      // BullMQ hands out the plain wait list (taken from its right end) before the prioritized set
      const [[, rank], [, waiting], [, index]] = (await connection
        .multi()
        .zrank(queue.keys.prioritized!, id)
        .llen(queue.keys.wait!)
        .lpos(queue.keys.wait!, id)
        .exec()) as [[unknown, number | null], [unknown, number], [unknown, number | null]];
      if (rank !== null) return waiting + rank;
      if (index !== null) return waiting - 1 - index;
      return null;
    },
    async ping() {
      await connection.ping();
    },
    async close() {
      await Promise.all([...queues.values()].map((q) => q.close()));
    },
  };
}

export interface EditJobContext {
  payload: ImageEditPayload;
  /** the provider whose queue this run came from */
  provider: string;
  /** 1 on the first try on this target (waits for a rate limit do not count) */
  attempt: number;
  isLastAttempt: boolean;
  /** how many times BullMQ has started this job on this target, rate-limit waits and crashes included */
  starts: number;
  signal: AbortSignal;
}

export interface WorkerOptions {
  concurrency: number;
  /** how long a job's lock lives without renewal: after a crash, the job is retried this much later */
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** at most `max` jobs started per `durationMs`, across every worker of this provider */
  rateLimit?: { max: number; durationMs: number } | null;
  /** per-key concurrency caps (see fairness.ts); without it every job runs when BullMQ hands it out */
  fairness?: WorkerFairness | undefined;
}

export interface WorkerFairness {
  /** how many of this key's jobs may run at once on this provider, across every worker (0 = no cap) */
  capFor(apiKeyId: string): Promise<number>;
  /** the key's images per minute (0 = no limit): its batch children are paced by it (rate-limits.ts), never refused */
  imagesPerMinuteFor?(apiKeyId: string): Promise<number>;
}

export const DEFAULT_WORKER_OPTIONS: WorkerOptions = { concurrency: 8, lockDurationMs: 30_000, stalledIntervalMs: 30_000 };

/** A failure that must not be retried. */
export const permanent = (message: string) => new UnrecoverableError(message);

/**
 * Thrown by a processor when the provider said 429: the whole provider queue pauses for `waitMs`
 * (every worker, through Redis) and the job goes back to waiting without spending an attempt.
 */
export class ProviderThrottled extends Error {
  constructor(readonly waitMs: number) {
    super(`provider rate limited; queue paused for ${waitMs} ms`);
    this.name = 'ProviderThrottled';
  }
}

/**
 * Thrown by a processor to run the job again after `delayMs` without spending an attempt (our own
 * Postgres, Redis or S3 was down: not the provider's failure). `payload` replaces the job's data, so
 * the next run knows how long the outage has lasted.
 */
export class RetryLater extends Error {
  constructor(
    readonly delayMs: number,
    readonly payload: ImageEditPayload,
    readonly reason: string,
  ) {
    super(`retry in ${delayMs} ms: ${reason}`);
    this.name = 'RetryLater';
  }
}

const BACKOFF_TYPE = 'exponential-retry-after';

/**
 * Exponential backoff with full jitter on the upper half (base × 2^(n-1) × [0.5, 1)), but never
 * sooner than the upstream's Retry-After when the error carries one.
 */
export function backoffDelay(attemptsMade: number, baseMs: number, retryAfterMs: number | null | undefined): number {
  const exp = baseMs * 2 ** Math.max(0, attemptsMade - 1);
  const jittered = Math.round(exp * (0.5 + Math.random() * 0.5));
  return Math.max(jittered, retryAfterMs ?? 0);
}

/** Without a limiter BullMQ ignores manual rate limits: this one never limits by itself. */
const NO_LIMIT = { max: 1_000_000, duration: 1000 };

/** The consumer side for one provider's queue; the payload is checked again on arrival. */
export function createEditWorker(
  cfg: QueueConfig,
  connection: Redis,
  provider: string,
  process: (ctx: EditJobContext) => Promise<void>,
  opts: WorkerOptions = DEFAULT_WORKER_OPTIONS,
): Worker {
  const queueName = editQueueName(provider);
  const fair = createFairness(connection, cfg.prefix);
  const pacer = createBatchPacer(connection, cfg.prefix);
  const fairness = opts.fairness;
  const leaseMs = opts.lockDurationMs;
  /** parked jobs whose key has a free slot again go back in line, at the place they had */
  const wake = async (apiKeyId: string, bullJobIds: string[]) => {
    for (const id of bullJobIds) {
      const job = await Job.fromId(worker, id);
      if (!job) continue; // canceled meanwhile
      try {
        await job.promote();
      } catch (err) {
        // not delayed any more (its park delay ran out, or it was canceled): nothing to wake; else the sweep tries again
        if (!(await job.isDelayed())) continue;
        await fair.park(queueName, apiKeyId, id);
        throw err;
      }
    }
  };
  /**
   * A lease on one of the key's slots on this provider, or the job is parked (delayed without
   * spending an attempt; a free slot wakes it) and DelayedError hands the worker its next job.
   */
  const enter = async (job: BullJob, token: string | undefined, payload: ImageEditPayload) => {
    const apiKeyId = payload.apiKeyId ?? ANONYMOUS_KEY;
    const bullId = job.id!;
    // a batch child over its key's images per minute waits for tokens (parked: no attempt spent; the sweep wakes it)
    const ipm = payload.batch && payload.apiKeyId && fairness?.imagesPerMinuteFor ? await fairness.imagesPerMinuteFor(apiKeyId) : 0;
    if (ipm > 0 && !(await pacer.take(apiKeyId, payload.images ?? 1, ipm))) {
      await job.moveToDelayed(Date.now() + PARK_MS, token);
      await pacer.park(queueName, apiKeyId, bullId);
      throw new DelayedError(`key ${apiKeyId}'s batch children are at its ${ipm} images per minute; paced`);
    }
    const cap = fairness && payload.apiKeyId ? await fairness.capFor(apiKeyId) : 0;
    const slot = await fair.acquire(queueName, { apiKeyId, bullJobId: bullId, priority: job.priority }, cap, leaseMs);
    if (!slot.acquired) {
      await job.moveToDelayed(Date.now() + PARK_MS, token);
      await fair.park(queueName, apiKeyId, bullId);
      throw new DelayedError(`key ${apiKeyId} already runs ${cap} jobs on ${provider}; parked until one ends`);
    }
    const renew = setInterval(() => fair.renew(queueName, apiKeyId, bullId, leaseMs).catch((err: Error) => worker.emit('error', err)), Math.max(100, Math.floor(leaseMs / 3)));
    renew.unref();
    return {
      deferrals: slot.deferrals,
      async leave() {
        clearInterval(renew);
        // the job's outcome stands whatever happens here: a lost release lapses with its lease, a lost wake-up is the sweep's
        await fair
          .release(queueName, apiKeyId, bullId, cap)
          .then((woken) => wake(apiKeyId, woken))
          .catch((err: Error) => worker.emit('error', err));
      },
    };
  };
  const worker: Worker = new Worker(
    queueName,
    async (job: BullJob, token?: string, signal?: AbortSignal) => {
      const parsed = imageEditPayload.safeParse(job.data);
      if (!parsed.success) throw new UnrecoverableError(`invalid payload for job ${job.id}: ${parsed.error.message}`);
      const attempts = job.opts.attempts ?? 1;
      const slot = await enter(job, token, parsed.data);
      try {
        await process({
          payload: parsed.data,
          provider,
          attempt: job.attemptsMade + 1,
          isLastAttempt: job.attemptsMade + 1 >= attempts,
          // times it was parked for its key's cap are not starts
          starts: job.attemptsStarted - slot.deferrals,
          signal: signal ?? new AbortController().signal,
        });
      } catch (err) {
        if (err instanceof ProviderThrottled) {
          await worker.rateLimit(err.waitMs);
          throw new RateLimitError();
        }
        if (err instanceof RetryLater) {
          // back to delayed with no attempt spent (if Redis itself is down this fails: the lock lapses,
          // the stalled check hands the job out again, and that costs no attempt either)
          await job.updateData(err.payload);
          await job.moveToDelayed(Date.now() + err.delayMs, token);
          throw new DelayedError(err.message);
        }
        throw err;
      } finally {
        await slot.leave();
      }
    },
    {
      connection,
      prefix: cfg.prefix,
      concurrency: opts.concurrency,
      lockDuration: opts.lockDurationMs,
      stalledInterval: opts.stalledIntervalMs,
      // a job whose worker died twice is still retried, not failed
      maxStalledCount: 3,
      limiter: opts.rateLimit ? { max: opts.rateLimit.max, duration: opts.rateLimit.durationMs } : NO_LIMIT,
      settings: {
        backoffStrategy: (attemptsMade: number, _type?: string, err?: Error, job?: MinimalJob) => {
          const backoff = job?.opts.backoff;
          const base = typeof backoff === 'object' && backoff.delay !== undefined ? backoff.delay : DEFAULT_RETRY.backoffMs;
          return backoffDelay(attemptsMade, base, (err as { retryAfterMs?: number | null } | undefined)?.retryAfterMs);
        },
      },
    },
  );
  // every worker wakes parked jobs whose key has free slots: after a lost release, a killed worker's lapsed lease, a raised cap
  let sweeping = false;
  const sweep = setInterval(() => {
    if (sweeping) return;
    sweeping = true;
    (async () => {
      for (const apiKeyId of await fair.parkedKeys(queueName)) {
        const cap = fairness && apiKeyId !== ANONYMOUS_KEY ? await fairness.capFor(apiKeyId) : 0;
        await wake(apiKeyId, await fair.release(queueName, apiKeyId, null, cap));
      }
      // batch children paced by their key's images per minute: as many as it has tokens for
      for (const apiKeyId of await pacer.pacedKeys(queueName)) {
        const ipm = fairness?.imagesPerMinuteFor ? await fairness.imagesPerMinuteFor(apiKeyId) : 0;
        await wake(apiKeyId, await pacer.wakeable(queueName, apiKeyId, ipm));
      }
    })()
      .catch((err: Error) => worker.emit('error', err))
      .finally(() => {
        sweeping = false;
      });
  }, SWEEP_INTERVAL_MS);
  sweep.unref();
  worker.on('closing', () => clearInterval(sweep));
  return worker;
}
