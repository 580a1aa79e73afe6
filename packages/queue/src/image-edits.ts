import { Queue, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import { type ImageEditPayload, imageEditPayload, QUEUES } from './contract';
import type { QueueConfig } from './connection';

export interface RetryPolicy {
  /** total tries, first included */
  attempts: number;
  /** base of the exponential backoff */
  backoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, backoffMs: 2000 };

/** The producer side: the API's only way to put an edit job on the queue. */
export interface EditQueue {
  enqueue(payload: ImageEditPayload): Promise<void>;
  /**
   * Enqueues the job again unless BullMQ still has it to run (waiting, active, delayed, ...). A lost
   * job is added; a finished or failed entry is removed first (it would make add a no-op).
   * True when it was enqueued.
   */
  requeueIfMissing(payload: ImageEditPayload): Promise<boolean>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export function createEditQueue(cfg: QueueConfig, connection: Redis, retry: RetryPolicy = DEFAULT_RETRY): EditQueue {
  const queue = new Queue(QUEUES.imageEdits, {
    connection,
    prefix: cfg.prefix,
    defaultJobOptions: {
      attempts: retry.attempts,
      backoff: { type: 'exponential', delay: retry.backoffMs, jitter: 0.5 },
      removeOnComplete: { age: 3600, count: 10_000 },
      removeOnFail: { age: 7 * 24 * 3600 },
    },
  });
  return {
    async enqueue(payload) {
      const data = imageEditPayload.parse(payload);
      // jobId = the row's id: adding the same job twice is a no-op in BullMQ
      await queue.add('edit', data, { jobId: data.jobId });
    },
    async requeueIfMissing(payload) {
      const data = imageEditPayload.parse(payload);
      const old = await queue.getJob(data.jobId);
      if (old) {
        const state = await old.getState();
        if (state !== 'completed' && state !== 'failed' && state !== 'unknown') return false;
        await old.remove();
      }
      await queue.add('edit', data, { jobId: data.jobId });
      return true;
    },
    async ping() {
      await connection.ping();
    },
    close: () => queue.close(),
  };
}

export interface EditJobContext {
  payload: ImageEditPayload;
  /** 1 on the first try */
  attempt: number;
  isLastAttempt: boolean;
  signal: AbortSignal;
}

export interface WorkerOptions {
  concurrency: number;
  /** how long a job's lock lives without renewal: after a crash, the job is retried this much later */
  lockDurationMs: number;
  stalledIntervalMs: number;
}

export const DEFAULT_WORKER_OPTIONS: WorkerOptions = { concurrency: 8, lockDurationMs: 30_000, stalledIntervalMs: 30_000 };

/** A failure that must not be retried. */
export const permanent = (message: string) => new UnrecoverableError(message);

/** The consumer side: runs `process` for every edit job; the payload is checked again on arrival. */
export function createEditWorker(
  cfg: QueueConfig,
  connection: Redis,
  process: (ctx: EditJobContext) => Promise<void>,
  opts: WorkerOptions = DEFAULT_WORKER_OPTIONS,
): Worker {
  return new Worker(
    QUEUES.imageEdits,
    async (job: BullJob, _token?: string, signal?: AbortSignal) => {
      const parsed = imageEditPayload.safeParse(job.data);
      if (!parsed.success) throw new UnrecoverableError(`invalid payload for job ${job.id}: ${parsed.error.message}`);
      const attempts = job.opts.attempts ?? 1;
      await process({
        payload: parsed.data,
        attempt: job.attemptsMade + 1,
        isLastAttempt: job.attemptsMade + 1 >= attempts,
        signal: signal ?? new AbortController().signal,
      });
    },
    {
      connection,
      prefix: cfg.prefix,
      concurrency: opts.concurrency,
      lockDuration: opts.lockDurationMs,
      stalledInterval: opts.stalledIntervalMs,
      // a job whose worker died twice is still retried, not failed
      maxStalledCount: 3,
    },
  );
}
