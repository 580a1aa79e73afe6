import { describe, expect, it } from '@jest/globals';
import { newWebhookSecret, retryDelaysSchema, wantsEvent } from './webhooks';

describe('webhook rules', () => {
  it('an empty filter means the final events; job.started only when listed', () => {
    expect(wantsEvent([], 'job.succeeded')).toBe(true);
    expect(wantsEvent([], 'job.expired')).toBe(true);
    expect(wantsEvent([], 'job.started')).toBe(false);
    expect(wantsEvent(['job.started'], 'job.started')).toBe(true);
    expect(wantsEvent(['job.failed'], 'job.succeeded')).toBe(false);
  });

  it('secrets are Standard Webhooks secrets (whsec_ + base64 of 32 bytes)', () => {
    const s = newWebhookSecret();
    expect(s).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(Buffer.from(s.slice(6), 'base64')).toHaveLength(32);
    expect(newWebhookSecret()).not.toBe(s);
  });

  it('WEBHOOK_RETRY_DELAYS_MS is a comma list of milliseconds', () => {
    expect(retryDelaysSchema.parse(undefined)).toEqual([0, 5000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000]);
    expect(retryDelaysSchema.parse('0, 100,200')).toEqual([0, 100, 200]);
    for (const bad of ['', 'a', '0,,1', '-1', '1.5']) expect(retryDelaysSchema.safeParse(bad).success).toBe(false);
  });
});
