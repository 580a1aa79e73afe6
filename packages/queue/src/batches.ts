import { type Job as BullJob, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { QueueConfig } from './connection';

/** Queue names. Never rename one: steps waiting in Redis under the old name would be orphaned. */
export const BATCH_QUEUES = {
  batches: 'batches',
} as const;

/**
 * The durable steps of a batch (POST /v1/batches), each a BullMQ job whose id is `{batchId}.{step}`,
 * so asking for a step twice runs it once:
 * - fanout: validate the input file, then one job (or request error) per line, in chunks, resumable;
 * - stop: the batch is cancelling or expired: its children that have not started are taken off their queues;
 * - finalize: every request is final: the output and error files, then the final status and its webhook.
 */
export const BATCH_STEPS = ['fanout', 'stop', 'finalize'] as const;
export type BatchStep = (typeof BATCH_STEPS)[number];

/** Payloads carry ids. Schemas only grow, with optional fields. */
export const batchStepPayload = z.object({
  batchId: z.string().regex(/^batch_[0-9a-z]+$/),
  step: z.enum(BATCH_STEPS),
});
export type BatchStepPayload = z.infer<typeof batchStepPayload>;

export const batchStepJobId = (p: BatchStepPayload) => `${p.batchId}.${p.step}`;

/** A step that fails on our side (S3, Postgres) is tried again; the reconciler queues it again after that. */
const STEP_RETRY = { attempts: 8, backoff: { type: 'exponential', delay: 1000 } };

/** The producer side: the only way to put a batch step on its queue. */
export interface BatchQueue {
  enqueue(payload: BatchStepPayload): Promise<void>;
  /** adds the step again unless BullMQ still has it waiting, delayed or running */
  requeueIfMissing(payload: BatchStepPayload): Promise<'enqueued' | 'present'>;
  close(): Promise<void>;
}

export function createBatchQueue(cfg: QueueConfig, connection: Redis): BatchQueue {
  const queue = new Queue(BATCH_QUEUES.batches, {
    connection,
    prefix: cfg.prefix,
    defaultJobOptions: { ...STEP_RETRY, removeOnComplete: { age: 3600, count: 10_000 }, removeOnFail: { age: 7 * 24 * 3600 } },
  });
  const add = (data: BatchStepPayload) => queue.add(data.step, data, { jobId: batchStepJobId(data) });
  return {
    async enqueue(payload) {
      await add(batchStepPayload.parse(payload));
    },
    async requeueIfMissing(payload) {
      const data = batchStepPayload.parse(payload);
      const old = await queue.getJob(batchStepJobId(data));
      if (old) {
        const state = await old.getState();
        if (state !== 'completed' && state !== 'failed' && state !== 'unknown') return 'present';
        await old.remove();
      }
      await add(data);
      return 'enqueued';
    },
    async close() {
      await queue.close();
    },
  };
}

export interface BatchJobContext {
  payload: BatchStepPayload;
  attempt: number;
  /** the worker is closing: a long step stops at its next checkpoint and is resumed later */
  signal: AbortSignal;
}

export interface BatchWorkerOptions {
  concurrency: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
}

/** The consumer side; the payload is checked again on arrival. */
export function createBatchWorker(cfg: QueueConfig, connection: Redis, process: (ctx: BatchJobContext) => Promise<void>, opts: BatchWorkerOptions): Worker {
  return new Worker(
    BATCH_QUEUES.batches,
    async (job: BullJob, _token?: string, signal?: AbortSignal) => {
      const parsed = batchStepPayload.safeParse(job.data);
      if (!parsed.success) throw new UnrecoverableError(`invalid payload for batch job ${job.id}: ${parsed.error.message}`);
      await process({ payload: parsed.data, attempt: job.attemptsMade + 1, signal: signal ?? new AbortController().signal });
    },
    {
      connection,
      prefix: cfg.prefix,
      concurrency: opts.concurrency,
      lockDuration: opts.lockDurationMs,
      stalledInterval: opts.stalledIntervalMs,
      // a fan-out whose worker died resumes from its recorded progress, however many times
      maxStalledCount: 10,
    },
  );
}
