import { type MinimalJob, Queue, RateLimitError, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import type { QueueConfig } from './connection';
import { bullJobId, editQueueName, type ImageEditPayload, imageEditPayload } from './contract';

export interface RetryPolicy {
  /** total tries, first included */
  attempts: number;
  /** base of the exponential backoff */
  backoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, backoffMs: 2000 };

/** The producer side: the only way to put an edit job on a provider's queue. */
export interface EditQueue {
  enqueue(provider: string, payload: ImageEditPayload): Promise<void>;
  /**
   * Enqueues the job again unless BullMQ still has it to run (waiting, active, delayed, ...): a lost
   * job is added (a completed entry is removed first: it would make add a no-op). A job BullMQ
   * failed (its worker died on it more than maxStalledCount times) is left alone: 'failed' tells
   * the caller to give it up rather than feed it to the next worker.
   */
  requeueIfMissing(provider: string, payload: ImageEditPayload): Promise<'enqueued' | 'present' | 'failed'>;
  /** Takes a job that has not started off its queue (a running one is left to its worker). */
  remove(provider: string, payload: ImageEditPayload): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

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
  return {
    async enqueue(provider, payload) {
      const data = imageEditPayload.parse(payload);
      await queueFor(provider).add('edit', data, { jobId: bullJobId(data) });
    },
    async requeueIfMissing(provider, payload) {
      const data = imageEditPayload.parse(payload);
      const queue = queueFor(provider);
      const old = await queue.getJob(bullJobId(data));
      if (old) {
        const state = await old.getState();
        if (state === 'failed') return 'failed';
        if (state !== 'completed' && state !== 'unknown') return 'present';
        await old.remove();
      }
      await queue.add('edit', data, { jobId: bullJobId(data) });
      return 'enqueued';
    },
    async remove(provider, payload) {
      const data = imageEditPayload.parse(payload);
      // a locked (active) job is not removed: 0, and its worker stops on the canceled event
      await queueFor(provider).remove(bullJobId(data));
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
  const worker: Worker = new Worker(
    editQueueName(provider),
    async (job: BullJob, _token?: string, signal?: AbortSignal) => {
      const parsed = imageEditPayload.safeParse(job.data);
      if (!parsed.success) throw new UnrecoverableError(`invalid payload for job ${job.id}: ${parsed.error.message}`);
      const attempts = job.opts.attempts ?? 1;
      try {
        await process({
          payload: parsed.data,
          attempt: job.attemptsMade + 1,
          isLastAttempt: job.attemptsMade + 1 >= attempts,
          starts: job.attemptsStarted,
          signal: signal ?? new AbortController().signal,
        });
      } catch (err) {
        if (err instanceof ProviderThrottled) {
          await worker.rateLimit(err.waitMs);
          throw new RateLimitError();
        }
        throw err;
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
  return worker;
}
