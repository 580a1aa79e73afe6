import type { ModelRoute, ServiceConfig } from '@image-edits/core';
import { type BatchRecord, batchEventFor, type Db, emitBatchEvent, type Finished, type WebhookEnqueuer } from '@image-edits/db';
import type { BatchQueue, EditQueue } from '@image-edits/queue';
import type { ObjectStore } from '@image-edits/storage';
import type { Logger } from 'pino';
import type { WorkerMetrics } from '../metrics';

/** What a batch's steps touch. */
export interface BatchDeps {
  config: ServiceConfig;
  db: Db;
  store: ObjectStore;
  /** the children's provider queues: fan-out adds them (enqueueMany), a stop takes them off (remove) */
  queue: Pick<EditQueue, 'enqueueMany' | 'remove'>;
  batchQueue: Pick<BatchQueue, 'enqueue'>;
  webhookQueue: WebhookEnqueuer;
  routes: Map<string, ModelRoute>;
  /** where a line's fetched image_url is written, briefly */
  uploadDir: string;
  logger: Logger;
  metrics?: Pick<WorkerMetrics, 'batchesFinished' | 'jobsFinished'> | undefined;
}

/** Where the batch's own objects live: its snapshot of the input file and its shared copies of the files its lines name. */
export const batchPrefix = (batchId: string) => `batches/${batchId}/`;
export const batchInputKey = (batchId: string) => `batches/${batchId}/input.jsonl`;

/** A running batch asked to stop: cancelled, or past its completion window. */
export const isStopping = (b: Pick<BatchRecord, 'status' | 'expiredAt'>) => b.status === 'cancelling' || (b.status === 'in_progress' && b.expiredAt !== null);

/**
 * The hook of every path that moves a job to a final state: when that was the last request of its
 * batch, the batch's files are to be written. A lost enqueue is the reconciler's to redo.
 */
export async function onJobFinished(deps: { batchQueue: Pick<BatchQueue, 'enqueue'>; logger: Pick<Logger, 'warn'> }, finished: Finished | null): Promise<void> {
  if (!finished?.batchSettled || !finished.batchId) return;
  await deps.batchQueue
    .enqueue({ batchId: finished.batchId, step: 'finalize' })
    .catch((err: unknown) => deps.logger.warn({ err, batchId: finished.batchId }, 'finalize step not queued; the reconciler will queue it'));
}

/** The batch's final event for webhooks (and metrics); its state is committed already, so a failure here is logged, not thrown. */
export async function announceBatch(deps: Pick<BatchDeps, 'db' | 'webhookQueue' | 'logger' | 'metrics'>, batchId: string, status: 'completed' | 'failed' | 'cancelled' | 'expired'): Promise<void> {
  deps.metrics?.batchesFinished.inc({ status });
  await emitBatchEvent({ db: deps.db, webhookQueue: deps.webhookQueue, logger: deps.logger }, batchId, batchEventFor(status)).catch((err: unknown) =>
    deps.logger.error({ err, batchId, status }, 'batch webhook event not recorded; the reconciler will record it'),
  );
}
