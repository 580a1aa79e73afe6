import type { ModelRoute, ServiceConfig } from '@image-edits/core';
import type { Db } from '@image-edits/db';
import type { BatchQueue, EditQueue, JobEventHub, WebhookQueue } from '@image-edits/queue';
import type { ObjectStore } from '@image-edits/storage';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

/** Everything a route or use case may touch, built once per process in server.ts. */
export interface ApiDeps {
  config: ServiceConfig;
  db: Db;
  store: ObjectStore;
  queue: EditQueue;
  /** webhook deliveries: job events (emitJobEvent) and manual retries */
  webhookQueue: WebhookQueue;
  /** batch steps: a new batch's fan-out, a cancelled one's stop, a batch whose last child was canceled here: its finalize */
  batchQueue: BatchQueue;
  hub: JobEventHub;
  redis: Redis;
  routes: Map<string, ModelRoute>;
  logger: Logger;
  uploadDir: string;
  /** the process is shutting down: `draining` flips at SIGTERM; `waitDeadline` aborts when waiting requests must answer (SHUTDOWN_TIMEOUT_MS minus a margin of ~2 s after the SIGTERM), so a sync waiter can still answer 504 + Location before the process exits */
  lifecycle: { draining: boolean; waitDeadline: AbortSignal };
}
