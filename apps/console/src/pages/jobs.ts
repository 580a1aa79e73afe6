import { api, type Job, JOB_STATUSES, type List, toApiError } from '../api';
import { errorBox, field, h, notice, replace, select } from '../dom';
import { dateInputToUnix, dateTime, duration, shortId, usd } from '../format';
import { loadModels } from '../models';
import { navigate, type Route } from '../router';

const PAGE_SIZE = 20;

/** A status as a badge: the word is always there (colour is only a second cue). */
export function statusBadge(status: string): HTMLElement {
  return h('span', { class: `badge badge-${status}` }, status.replace('_', ' '));
}

/**
 * Jobs of the key, newest first: filters (status and dates by the API, model on the page), pages
 * by the `after` cursor. The filters and the cursors live in the URL, so Back and reload work.
 */
export async function jobsPage(root: HTMLElement, route: Route, signal: AbortSignal): Promise<void> {
  const q = route.query;
  const status = q.get('status') ?? '';
  const model = q.get('model') ?? '';
  const from = q.get('from') ?? '';
  const to = q.get('to') ?? '';
  const cursors = (q.get('cursors') ?? '').split(',').filter(Boolean);

  root.append(h('h1', { tabindex: -1 }, 'Jobs'));

  const statusSelect = select([['', 'Any'], ...JOB_STATUSES.map((s): [string, string] => [s, s.replace('_', ' ')])], status, { name: 'status' });
  const modelSelect = select([['', 'Any']], model, { name: 'model' });
  const fromInput = h('input', { type: 'date', name: 'from', value: from });
  const toInput = h('input', { type: 'date', name: 'to', value: to });
  const filters = h(
    'form',
    { class: 'filters', 'aria-label': 'Filter jobs', role: 'search' },
    field('Status', statusSelect),
    field('Model', modelSelect),
    field('Created from', fromInput),
    field('Created until', toInput),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Apply'), h('a', { class: 'button', href: '/jobs' }, 'Reset')),
  );
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    navigate(`/jobs${queryString({ status: statusSelect.value, model: modelSelect.value, from: fromInput.value, to: toInput.value })}`);
  });
  root.append(filters);
  void loadModels()
    .then((models) => {
      for (const m of models) modelSelect.append(h('option', { value: m.id, selected: m.id === model }, m.id));
    })
    .catch(() => undefined);

  const results = h('div', { class: 'table-wrap', 'aria-live': 'polite', 'aria-busy': 'true' }, h('p', null, 'Loading…'));
  root.append(results);

  let page: List<Job>;
  try {
    page = await api<List<Job>>('/v1/jobs', {
      query: { limit: PAGE_SIZE, status, after: cursors.at(-1), created_after: from ? dateInputToUnix(from) : undefined, created_before: to ? dateInputToUnix(to, true) : undefined },
      signal,
    });
  } catch (err) {
    if (signal.aborted) return;
    replace(results, errorBox('The jobs could not be loaded.', toApiError(err).describe()));
    results.setAttribute('aria-busy', 'false');
    return;
  }
  const shown = model ? page.data.filter((j) => j.model === model) : page.data;
  const base = { status, model, from, to };
  const pager = h(
    'nav',
    { class: 'pager', 'aria-label': 'Pages' },
    cursors.length > 0 ? h('a', { class: 'button', href: `/jobs${queryString({ ...base, cursors: cursors.slice(0, -1).join(',') })}` }, '← Newer') : null,
    page.has_more && page.last_id ? h('a', { class: 'button', href: `/jobs${queryString({ ...base, cursors: [...cursors, page.last_id].join(',') })}` }, 'Older →') : null,
  );
  replace(
    results,
    model && shown.length !== page.data.length ? notice(`${shown.length} of the ${page.data.length} jobs of this page are ${model} (the model filter applies to each page).`) : null,
    shown.length === 0
      ? h('p', null, page.data.length === 0 ? 'No jobs match. Run one in the ' : 'None on this page. ', page.data.length === 0 ? h('a', { href: '/playground' }, 'playground') : null, page.data.length === 0 ? '.' : null)
      : h(
          'table',
          { class: 'data' },
          h('caption', { class: 'visually-hidden' }, 'Jobs, newest first'),
          h(
            'thead',
            null,
            h('tr', null, ...['Job', 'Status', 'Model', 'Provider', 'Created', 'Took', 'Cost'].map((c) => h('th', { scope: 'col' }, c))),
          ),
          h(
            'tbody',
            null,
            ...shown.map((j) =>
              h(
                'tr',
                null,
                h('td', null, h('a', { href: `/jobs/${j.id}`, title: j.id }, shortId(j.id))),
                h('td', null, statusBadge(j.status)),
                h('td', null, j.model),
                h('td', null, j.provider),
                h('td', null, dateTime(j.created_at)),
                h('td', null, j.started_at ? duration(j.created_at, j.completed_at) : '—'),
                h('td', { class: 'num' }, usd(j.usage?.cost_usd)),
              ),
            ),
          ),
        ),
    pager,
  );
  results.setAttribute('aria-busy', 'false');
}

function queryString(params: Record<string, string>): string {
  const s = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '')).toString();
  return s ? `?${s}` : '';
}
