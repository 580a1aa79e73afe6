import type { CostResult, ImageUsageResult, Page } from './api';

/**
 * Usage and costs pages (OpenAI's shapes) → a table of days × series. Pure: unit-tested in Node.
 */

export interface Series {
  /** UTC days (`YYYY-MM-DD`), in order, every bucket of the range (empty days too) */
  days: string[];
  /** series names, largest total first */
  names: string[];
  /** value of a series on a day (0 when absent) */
  value(day: string, name: string): number;
  totalOf(name: string): number;
  dayTotal(day: string): number;
  total: number;
}

const day = (unix: number) => new Date(unix * 1000).toISOString().slice(0, 10);

export function buildSeries(buckets: { start_time: number; items: { name: string; value: number }[] }[]): Series {
  const days: string[] = [];
  const cells = new Map<string, number>();
  const totals = new Map<string, number>();
  const dayTotals = new Map<string, number>();
  for (const b of buckets) {
    const d = day(b.start_time);
    if (!days.includes(d)) days.push(d);
    for (const item of b.items) {
      const key = `${d}\0${item.name}`;
      cells.set(key, (cells.get(key) ?? 0) + item.value);
      totals.set(item.name, (totals.get(item.name) ?? 0) + item.value);
      dayTotals.set(d, (dayTotals.get(d) ?? 0) + item.value);
    }
  }
  days.sort();
  const names = [...totals.keys()].sort((a, b) => (totals.get(b) ?? 0) - (totals.get(a) ?? 0) || a.localeCompare(b));
  return {
    days,
    names,
    value: (d, n) => cells.get(`${d}\0${n}`) ?? 0,
    totalOf: (n) => totals.get(n) ?? 0,
    dayTotal: (d) => dayTotals.get(d) ?? 0,
    total: [...totals.values()].reduce((a, b) => a + b, 0),
  };
}

/** Images per day and model (requests alongside). */
export function imageSeries(pages: Page<ImageUsageResult>[]): { images: Series; requests: Series } {
  const buckets = pages.flatMap((p) => p.data);
  const name = (r: ImageUsageResult) => r.model ?? 'all models';
  return {
    images: buildSeries(buckets.map((b) => ({ start_time: b.start_time, items: b.results.map((r) => ({ name: name(r), value: r.images })) }))),
    requests: buildSeries(buckets.map((b) => ({ start_time: b.start_time, items: b.results.map((r) => ({ name: name(r), value: r.num_model_requests })) }))),
  };
}

/**
 * Cost per day by model: a line item is the model, or `model, size`; the chart groups by model, the
 * table keeps the line items. Amounts in one currency (the first seen; others are left out and counted).
 */
export function costSeries(pages: Page<CostResult>[]): { byModel: Series; byLineItem: Series; currency: string; otherCurrencies: number } {
  const buckets = pages.flatMap((p) => p.data);
  const currency = buckets.flatMap((b) => b.results)[0]?.amount.currency ?? 'usd';
  let otherCurrencies = 0;
  const items = (b: (typeof buckets)[number], nameOf: (line: string) => string) =>
    b.results.flatMap((r) => {
      if (r.amount.currency !== currency) {
        otherCurrencies++;
        return [];
      }
      return [{ name: nameOf(r.line_item ?? 'all'), value: Number(r.amount.value) || 0 }];
    });
  const byModel = buildSeries(buckets.map((b) => ({ start_time: b.start_time, items: items(b, (l) => l.split(', ')[0] ?? l) })));
  otherCurrencies = 0;
  const byLineItem = buildSeries(buckets.map((b) => ({ start_time: b.start_time, items: items(b, (l) => l) })));
  return { byModel, byLineItem, currency, otherCurrencies };
}

/** UTC midnight of a `YYYY-MM-DD`, in unix seconds. */
export function utcMidnight(date: string): number | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  return m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) / 1000 : undefined;
}
