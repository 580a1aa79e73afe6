import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { WEBHOOK_EVENTS, type WebhookEvent } from './edit-request';

/** Standard Webhooks' schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. */
export const DEFAULT_WEBHOOK_RETRY_DELAYS_MS = [0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];

/** `WEBHOOK_RETRY_DELAYS_MS`: the delay before each attempt, first one included ("0,5000,300000"). */
export const retryDelaysSchema = z
  .string()
  .regex(/^\s*\d+(\s*,\s*\d+)*\s*$/, 'must be a comma-separated list of milliseconds, e.g. 0,5000,300000')
  .default(DEFAULT_WEBHOOK_RETRY_DELAYS_MS.join(','))
  .transform((s) => s.split(',').map((p) => Number(p.trim())))
  .pipe(z.array(z.number().int().max(7 * 24 * 3600 * 1000, 'each delay must be at most 7 days')).max(50, 'at most 50 attempts'));

/** A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes (the spec asks for 24 or more). */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/** The events a job or a batch ends with: what an empty filter means. `job.started` is sent only when asked for. */
export const FINAL_WEBHOOK_EVENTS: readonly WebhookEvent[] = ['job.succeeded', 'job.failed', 'job.canceled', 'job.expired', 'batch.completed', 'batch.failed', 'batch.cancelled', 'batch.expired'];

export function wantsEvent(filter: readonly string[], type: WebhookEvent): boolean {
  return filter.length === 0 ? FINAL_WEBHOOK_EVENTS.includes(type) : filter.includes(type);
}

export function isWebhookEvent(value: string): value is WebhookEvent {
  return (WEBHOOK_EVENTS as readonly string[]).includes(value);
}
