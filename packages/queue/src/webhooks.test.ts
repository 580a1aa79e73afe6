import { describe, expect, it } from '@jest/globals';
import { MAX_RETRY_AFTER_MS, webhookDeliveryPayload, webhookRetryDelay } from './webhooks';

describe('webhook retry schedule', () => {
  const schedule = [0, 5000, 300000, 1800000];
  it('waits the scheduled delay before the next attempt', () => {
    expect(webhookRetryDelay(schedule, 1, null)).toBe(5000);
    expect(webhookRetryDelay(schedule, 2, null)).toBe(300000);
    expect(webhookRetryDelay(schedule, 3, undefined)).toBe(1800000);
  });
  it('never sooner than Retry-After, which is capped', () => {
    expect(webhookRetryDelay(schedule, 1, 60000)).toBe(60000);
    expect(webhookRetryDelay(schedule, 2, 1000)).toBe(300000);
    expect(webhookRetryDelay([0, 100], 1, 30 * 24 * 3600 * 1000)).toBe(MAX_RETRY_AFTER_MS);
  });
  it('payloads carry a delivery id only', () => {
    expect(webhookDeliveryPayload.safeParse({ deliveryId: 'whd_0abc' }).success).toBe(true);
    expect(webhookDeliveryPayload.safeParse({ deliveryId: 'job_0abc' }).success).toBe(false);
    expect(webhookDeliveryPayload.safeParse({}).success).toBe(false);
  });
});
