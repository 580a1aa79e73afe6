import { api, type CostResult, type ImageUsageResult, type Page, toApiError } from '../api';
import { stackedBars } from '../chart';
import { errorBox, field, h, notice, replace } from '../dom';
import { money } from '../format';
import { navigate, type Route } from '../router';
import { costSeries, imageSeries, type Series, utcMidnight } from '../usage-data';

/** At most this many pages are followed per report (a page is up to 31 days of usage). */
const MAX_PAGES = 20;
const DAY = 86_400;

/** Every page of a usage/costs query, following `next_page`. */
async function allPages<R>(path: string, query: Record<string, string | number>, signal: AbortSignal): Promise<Page<R>[]> {
  const pages: Page<R>[] = [];
  let next: string | null = null;
  do {
    const p: Page<R> = await api<Page<R>>(path, { query: { ...query, ...(next ? { page: next } : {}) }, signal });
    pages.push(p);
    next = p.has_more ? p.next_page : null;
  } while (next && pages.length < MAX_PAGES);
  return pages;
}

const isoDay = (unix: number) => new Date(unix * 1000).toISOString().slice(0, 10);

/**
 * Usage of the key (an admin key: every key's): images by day and model from
 * `/v1/organization/usage/images`, cost from `/v1/organization/costs`, as charts and tables.
 */
export async function usagePage(root: HTMLElement, route: Route, signal: AbortSignal): Promise<void> {
  const today = Math.floor(Date.now() / 1000 / DAY) * DAY;
  const from = route.query.get('from') ?? isoDay(today - 29 * DAY);
  const to = route.query.get('to') ?? isoDay(today);
  const fromInput = h('input', { type: 'date', value: from, name: 'from' });
  const toInput = h('input', { type: 'date', value: to, name: 'to' });
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Date range' },
    field('From (UTC day)', fromInput),
    field('To (UTC day, included)', toInput),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Show')),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    navigate(`/usage?from=${encodeURIComponent(fromInput.value)}&to=${encodeURIComponent(toInput.value)}`);
  });
  const out = h('div', { 'aria-live': 'polite', 'aria-busy': 'true' }, h('p', null, 'Loading…'));
  root.append(h('h1', { tabindex: -1 }, 'Usage'), h('p', { class: 'lead' }, 'Images and cost by day and model, for this key (an admin key sees every key).'), form, out);

  const start = utcMidnight(from);
  const endDay = utcMidnight(to);
  if (start === undefined || endDay === undefined || endDay < start) {
    replace(out, errorBox('Choose a valid range: the start on or before the end.'));
    out.setAttribute('aria-busy', 'false');
    return;
  }
  const range = { start_time: start, end_time: endDay + DAY, bucket_width: '1d' };

  const [usage, costs] = await Promise.allSettled([
    allPages<ImageUsageResult>('/v1/organization/usage/images', { ...range, group_by: 'model', limit: 31 }, signal),
    allPages<CostResult>('/v1/organization/costs', { ...range, group_by: 'line_item', limit: 180 }, signal),
  ]);
  if (signal.aborted) return;
  const sections: HTMLElement[] = [];

  if (usage.status === 'fulfilled') {
    const { images, requests } = imageSeries(usage.value);
    sections.push(
      h(
        'section',
        { 'aria-labelledby': 'images-heading' },
        h('h2', { id: 'images-heading' }, 'Images'),
        h('p', { class: 'total' }, `${images.total} images from ${requests.total} requests.`),
        images.total ? stackedBars(images, { title: 'Images per day, by model', format: (v) => String(Math.round(v * 100) / 100) }) : notice('No images in this range.'),
        seriesTable(images, 'Images per day and model', (v) => String(v), requests),
      ),
    );
  } else sections.push(missing('Image usage', '/v1/organization/usage/images', usage.reason));

  if (costs.status === 'fulfilled') {
    const { byModel, byLineItem, currency } = costSeries(costs.value);
    const fmt = (v: number) => money(v, currency);
    sections.push(
      h(
        'section',
        { 'aria-labelledby': 'costs-heading' },
        h('h2', { id: 'costs-heading' }, 'Cost'),
        h('p', { class: 'total' }, `${fmt(byModel.total)} in this range.`),
        byModel.total ? stackedBars(byModel, { title: 'Cost per day, by model', format: fmt }) : notice('No cost in this range.'),
        seriesTable(byLineItem, 'Cost per day and line item', fmt),
      ),
    );
  } else sections.push(missing('Costs', '/v1/organization/costs', costs.reason));

  replace(out, ...sections);
  out.setAttribute('aria-busy', 'false');
}

function missing(what: string, path: string, reason: unknown): HTMLElement {
  const e = toApiError(reason);
  if (e.routeMissing) return h('section', null, h('h2', null, what), notice(`${what} reporting is not available on this server yet: GET ${path} answered ${e.status}.`, 'warn'));
  return h('section', null, h('h2', null, what), errorBox(`${what} could not be loaded.`, e.describe()));
}

/** Days as rows, series as columns, totals in the last row and column; the requests beside images when given. */
function seriesTable(s: Series, caption: string, fmt: (v: number) => string, requests?: Series): HTMLElement {
  const days = s.days.filter((d) => s.dayTotal(d) > 0 || (requests?.dayTotal(d) ?? 0) > 0);
  if (days.length === 0) return h('p', { class: 'hint' }, 'Nothing to list.');
  const cell = (v: number, r?: number) => h('td', { class: 'num' }, v || r ? `${fmt(v)}${r !== undefined ? ` (${r} req.)` : ''}` : '—');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'data' },
      h('caption', null, caption),
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Day (UTC)'), ...s.names.map((n) => h('th', { scope: 'col' }, n)), h('th', { scope: 'col' }, 'Total'))),
      h(
        'tbody',
        null,
        ...days.map((d) =>
          h('tr', null, h('th', { scope: 'row' }, d), ...s.names.map((n) => cell(s.value(d, n), requests?.value(d, n))), cell(s.dayTotal(d), requests?.dayTotal(d))),
        ),
      ),
      h('tfoot', null, h('tr', null, h('th', { scope: 'row' }, 'Total'), ...s.names.map((n) => cell(s.totalOf(n), requests?.totalOf(n))), cell(s.total, requests?.total))),
    ),
  );
}
