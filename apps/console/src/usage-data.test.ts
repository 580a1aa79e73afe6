import { describe, expect, it } from '@jest/globals';
import type { CostResult, ImageUsageResult, Page } from './api';
import { costSeries, imageSeries, utcMidnight } from './usage-data';

const DAY = 86_400;
const t0 = Date.UTC(2026, 10, 1) / 1000;
const page = <R>(buckets: R[][], hasMore = false): Page<R> => ({
  object: 'page',
  data: buckets.map((results, i) => ({ object: 'bucket', start_time: t0 + i * DAY, end_time: t0 + (i + 1) * DAY, results })),
  has_more: hasMore,
  next_page: hasMore ? 'page_x' : null,
});

describe('usage series', () => {
  it('images and requests by day and model, every day of the range, largest model first', () => {
    const p = page<ImageUsageResult>([
      [{ images: 2, num_model_requests: 1, model: 'local-inpaint' }],
      [],
      [
        { images: 1, num_model_requests: 1, model: 'local-inpaint' },
        { images: 4, num_model_requests: 2, model: 'gpt-image-1' },
      ],
    ]);
    const { images, requests } = imageSeries([p]);
    expect(images.days).toEqual(['2026-11-01', '2026-11-02', '2026-11-03']);
    expect(images.names).toEqual(['gpt-image-1', 'local-inpaint']);
    expect(images.value('2026-11-03', 'gpt-image-1')).toBe(4);
    expect(images.value('2026-11-02', 'gpt-image-1')).toBe(0);
    expect(images.dayTotal('2026-11-03')).toBe(5);
    expect(images.total).toBe(7);
    expect(requests.total).toBe(4);
  });

  it('costs: line items `model, size` grouped by model for the chart, kept whole for the table', () => {
    const p = page<CostResult>([
      [
        { amount: { value: 0.011, currency: 'usd' }, line_item: 'gpt-image-1, 1024x1024' },
        { amount: { value: 0.016, currency: 'usd' }, line_item: 'gpt-image-1, 1536x1024' },
        { amount: { value: 0, currency: 'usd' }, line_item: 'local-inpaint' },
      ],
    ]);
    const { byModel, byLineItem, currency } = costSeries([p, page<CostResult>([])]);
    expect(currency).toBe('usd');
    expect(byModel.names).toEqual(['gpt-image-1', 'local-inpaint']);
    expect(byModel.totalOf('gpt-image-1')).toBeCloseTo(0.027);
    expect(byLineItem.names).toHaveLength(3);
  });

  it('UTC midnight of a date input', () => {
    expect(utcMidnight('2026-11-01')).toBe(t0);
    expect(utcMidnight('nope')).toBeUndefined();
  });
});
