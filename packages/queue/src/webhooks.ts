import { type MinimalJob, Queue, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { QueueConfig } from './connection';

/** Queue names. Never rename one: deliveries waiting in Redis under the old name would be orphaned. */
export const WEBHOOK_QUEUES = {
  deliveries: 'webhook-deliveries',
} as const;

/** Payloads carry ids: the delivery row says where, what and with which secret. Schemas only grow. */
export const webhookDeliveryPayload = z.object({
  deliveryId: z.string().regex(/^whd_[0-9a-z]+$/),
});
export type WebhookDeliveryPayload = z.infer<typeof webhookDeliveryPayload>;

/** BullMQ job names: a manual retry is one attempt, outside the schedule. */
const SCHEDULED = 'deliver';
const MANUAL = 'retry';
const BACKOFF_TYPE = 'webhook-schedule';

/** The longest a receiver's Retry-After may push the next attempt beyond the schedule. */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/**
 * The wait before attempt `attempt + 1` of the schedule (`delaysMs[i]` is the wait before attempt
 * i + 1), never sooner than the receiver's Retry-After, which is capped at MAX_RETRY_AFTER_MS.
 */
export function webhookRetryDelay(delaysMs: readonly number[], attempt: number, retryAfterMs: number | null | undefined): number {
  const scheduled = delaysMs[Math.min(attempt, delaysMs.length - 1)] ?? 0;
  return Math.max(scheduled, Math.min(retryAfterMs ?? 0, MAX_RETRY_AFTER_MS));
}

/** The producer side: the only way to put a delivery on its queue. */
export interface WebhookQueue {
  /** the delivery's scheduled attempts; the BullMQ job id is the delivery id, so adding it twice is a no-op */
  enqueue(payload: WebhookDeliveryPayload): Promise<void>;
  /** a manual retry: one attempt, now */
  enqueueRetry(payload: WebhookDeliveryPayload): Promise<void>;
  /** adds the delivery again unless BullMQ still has it waiting, delayed or running */
  requeueIfMissing(payload: WebhookDeliveryPayload): Promise<'enqueued' | 'present'>;
  close(): Promise<void>;
}

/** `delaysMs`: the wait before each attempt, first included (WEBHOOK_RETRY_DELAYS_MS); its length is the number of attempts. */
export function createWebhookQueue(cfg: QueueConfig, connection: Redis, delaysMs: readonly number[]): WebhookQueue {
  const queue = new Queue(WEBHOOK_QUEUES.deliveries, {
    connection,
    prefix: cfg.prefix,
    defaultJobOptions: { removeOnComplete: { age: 3600, count: 10_000 }, removeOnFail: { age: 7 * 24 * 3600 } },
  });
  const scheduled = { attempts: Math.max(1, delaysMs.length), delay: delaysMs[0] ?? 0, backoff: { type: BACKOFF_TYPE } };
  const add = (data: WebhookDeliveryPayload) => queue.add(SCHEDULED, data, { ...scheduled, jobId: data.deliveryId });
  return {
    async enqueue(payload) {
      await add(webhookDeliveryPayload.parse(payload));
    },
    async enqueueRetry(payload) {
      const data = webhookDeliveryPayload.parse(payload);
      await queue.add(MANUAL, data, { attempts: 1, jobId: `${data.deliveryId}.retry.${Date.now().toString(36)}` });
    },
    async requeueIfMissing(payload) {
      const data = webhookDeliveryPayload.parse(payload);
      const old = await queue.getJob(data.deliveryId);
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

export interface WebhookJobContext {
  payload: WebhookDeliveryPayload;
  /** 1 on the first attempt of this run of the schedule */
  attempt: number;
  /** no retry follows this attempt (the schedule is spent, or it is a manual retry) */
  isLastAttempt: boolean;
  manual: boolean;
}

/** Thrown by the processor to have the delivery tried again after `delayMs`. */
export class RetryDelivery extends Error {
  constructor(readonly delayMs: number) {
    super(`delivery will be retried in ${delayMs} ms`);
    this.name = 'RetryDelivery';
  }
}

export interface WebhookWorkerOptions {
  concurrency: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
}

export const DEFAULT_WEBHOOK_WORKER_OPTIONS: WebhookWorkerOptions = { concurrency: 16, lockDurationMs: 30_000, stalledIntervalMs: 30_000 };

/** The consumer side; the payload is checked again on arrival. */
export function createWebhookWorker(
  cfg: QueueConfig,
  connection: Redis,
  process: (ctx: WebhookJobContext) => Promise<void>,
  opts: WebhookWorkerOptions = DEFAULT_WEBHOOK_WORKER_OPTIONS,
): Worker {
  return new Worker(
    WEBHOOK_QUEUES.deliveries,
    async (job: BullJob) => {
      const parsed = webhookDeliveryPayload.safeParse(job.data);
      if (!parsed.success) throw new UnrecoverableError(`invalid payload for webhook job ${job.id}: ${parsed.error.message}`);
      const attempts = job.opts.attempts ?? 1;
      await process({ payload: parsed.data, attempt: job.attemptsMade + 1, isLastAttempt: job.attemptsMade + 1 >= attempts, manual: job.name === MANUAL });
    },
    {
      connection,
      prefix: cfg.prefix,
      concurrency: opts.concurrency,
      lockDuration: opts.lockDurationMs,
      stalledInterval: opts.stalledIntervalMs,
      settings: {
        // the processor computed the wait (schedule and Retry-After) and recorded it on the row
        backoffStrategy: (_attemptsMade: number, _type?: string, err?: Error, _job?: MinimalJob) => (err instanceof RetryDelivery ? err.delayMs : 0),
      },
    },
  );
}
