import { describe, expect, it } from '@jest/globals';
import { backoffDelay } from './image-edits';

describe('retry backoff', () => {
  it('grows exponentially with jitter on the upper half', () => {
    for (let i = 0; i < 200; i++) {
      const first = backoffDelay(1, 1000, null);
      const third = backoffDelay(3, 1000, null);
      expect(first).toBeGreaterThanOrEqual(500);
      expect(first).toBeLessThanOrEqual(1000);
      expect(third).toBeGreaterThanOrEqual(2000);
      expect(third).toBeLessThanOrEqual(4000);
    }
    // jitter: not every delay is the same
    expect(new Set(Array.from({ length: 50 }, () => backoffDelay(2, 1000, null))).size).toBeGreaterThan(1);
  });
  it('never retries sooner than the upstream Retry-After', () => {
    expect(backoffDelay(1, 100, 5000)).toBe(5000);
    expect(backoffDelay(5, 1000, 10)).toBeGreaterThanOrEqual(8000);
  });
});
