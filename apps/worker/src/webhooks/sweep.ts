import { type Db, findOverdueWebhookDeliveries } from '@image-edits/db';
import type { WebhookQueue } from '@image-edits/queue';
import type { Logger } from 'pino';
import { type Periodic, runEvery } from '../periodic';

/**
 * Postgres is the source of truth for deliveries too: a pending one whose next attempt is overdue
 * and that BullMQ no longer has (an enqueue that failed after the row was written, Redis lost its
 * data) is queued again. Duplicates collapse on the BullMQ job id (the delivery id); a rare second
 * send carries the same webhook-id, which is what receivers dedupe on.
 */
export async function sweepWebhookDeliveries(deps: { db: Db; webhookQueue: WebhookQueue; logger: Logger }, graceMs: number, batch = 500): Promise<number> {
  let requeued = 0;
  for (const d of await findOverdueWebhookDeliveries(deps.db, new Date(Date.now() - graceMs), batch)) {
    if ((await deps.webhookQueue.requeueIfMissing({ deliveryId: d.id })) === 'enqueued') {
      requeued++;
      deps.logger.warn({ deliveryId: d.id }, 'webhook delivery missing from its queue; enqueued again');
    }
  }
  return requeued;
}

export function startWebhookSweeper(deps: { db: Db; webhookQueue: WebhookQueue; logger: Logger }, intervalMs: number, graceMs: number): Periodic {
  return runEvery(intervalMs, () => sweepWebhookDeliveries(deps, graceMs), deps.logger, 'webhook sweep');
}
