import { api, apiFetch, isFinal, type Job, type List, toApiError, type WebhookDelivery } from '../api';
import { announce, downloadBlob, errorBox, h, keepFocus, notice, replace } from '../dom';
import { dateTime, duration, usd } from '../format';
import { followJob } from '../follow-job';
import { b64Blob, b64Url } from '../image-file';
import { navigate } from '../router';
import { statusBadge } from './jobs';

/**
 * One job: what the API shows of it (outputs, the parameters its result carries, timings, attempts,
 * provider, cost, error), its webhook deliveries with a retry each, cancel and delete. A job still
 * running is followed live.
 */
export async function jobPage(root: HTMLElement, id: string, signal: AbortSignal): Promise<void> {
  const title = h('h1', { tabindex: -1, class: 'mono-title' }, 'Job ', h('span', { class: 'mono' }, id));
  const messages = h('div', { 'aria-live': 'polite' });
  const body = h('div', { class: 'job' }, h('p', null, 'Loading…'));
  root.append(h('p', { class: 'crumbs' }, h('a', { href: '/jobs' }, '← Jobs')), title, messages, body);

  let job: Job;
  try {
    job = await api<Job>(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
  } catch (err) {
    if (signal.aborted) return;
    const e = toApiError(err);
    replace(body, errorBox(e.status === 404 ? 'No such job for this key.' : 'The job could not be loaded.', e.describe()));
    return;
  }

  const render = (j: Job) => {
    job = j;
    keepFocus(body, () => replace(body, ...jobView(j, { cancel, remove, retryDelivery })));
    void loadDeliveries();
  };

  const cancel = async () => {
    try {
      render(await api<Job>(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' }));
      replace(messages, notice('Canceled.'));
      announce('Job canceled.');
    } catch (err) {
      const e = toApiError(err);
      replace(messages, errorBox(e.status === 409 ? 'The job had already finished: nothing to cancel.' : 'Cancel failed.', e.describe()));
    }
  };

  const remove = async () => {
    if (!window.confirm(`Delete job ${id}? Its outputs, prompt and metadata are erased.`)) return;
    try {
      await apiFetch(`/v1/jobs/${encodeURIComponent(id)}`, { method: 'DELETE' });
      announce('Job deleted.');
      navigate('/jobs');
    } catch (err) {
      const e = toApiError(err);
      if (e.routeMissing) replace(messages, notice('Deleting jobs is not available on this server yet (DELETE /v1/jobs/{id} is not there).', 'warn'));
      else if (e.status === 409) replace(messages, errorBox('Only a finished job can be deleted: cancel it first or wait.', e.describe()));
      else replace(messages, errorBox('Delete failed.', e.describe()));
    }
  };

  const retryDelivery = async (deliveryId: string) => {
    try {
      await api(`/v1/jobs/${encodeURIComponent(id)}/webhook_deliveries/${encodeURIComponent(deliveryId)}/retry`, { method: 'POST' });
      replace(messages, notice('Delivery queued again.'));
      announce('Delivery queued again.');
      await loadDeliveries();
    } catch (err) {
      replace(messages, errorBox('The delivery could not be retried.', toApiError(err).describe()));
    }
  };

  const loadDeliveries = async () => {
    const box = body.querySelector<HTMLElement>('.deliveries');
    if (!box) return;
    try {
      const list = await api<List<WebhookDelivery>>(`/v1/jobs/${encodeURIComponent(id)}/webhook_deliveries`, { signal });
      replace(box, deliveriesView(list.data, retryDelivery));
    } catch (err) {
      if (!signal.aborted) replace(box, errorBox('Webhook deliveries could not be loaded.', toApiError(err).describe()));
    }
  };

  render(job);

  if (!isFinal(job.status)) {
    const final = await followJob(
      id,
      {
        onStatus: (s, pos) => {
          if (s !== job.status || pos !== job.queue_position) render({ ...job, status: s as Job['status'], queue_position: pos ?? null });
        },
      },
      signal,
    ).catch(() => null);
    if (final && !signal.aborted) {
      render(final);
      announce(`Job ${final.status}.`);
    }
  }
}

interface Actions {
  cancel(): void;
  remove(): void;
  retryDelivery(id: string): void;
}

function jobView(j: Job, actions: Actions): HTMLElement[] {
  const row = (label: string, value: Node | string) => [h('dt', null, label), h('dd', null, value)];
  const u = j.usage;
  const tokens = u && (u.input_tokens !== null || u.output_tokens !== null) ? `${u.input_tokens ?? 0} in, ${u.output_tokens ?? 0} out (${u.total_tokens ?? 0})` : '—';
  const params = j.result ? (['size', 'quality', 'background', 'output_format'] as const).filter((k) => j.result?.[k]).map((k) => `${k}: ${j.result?.[k]}`) : [];
  const format = j.result?.output_format ?? 'png';
  const out: HTMLElement[] = [
    h(
      'div',
      { class: 'actions job-actions' },
      isFinal(j.status) ? null : h('button', { type: 'button', class: 'danger', dataset: { focusKey: 'cancel' }, onclick: () => actions.cancel() }, 'Cancel job'),
      h('button', { type: 'button', dataset: { focusKey: 'delete' }, onclick: () => actions.remove() }, 'Delete job'),
    ),
    h(
      'section',
      { 'aria-labelledby': 'job-summary' },
      h('h2', { id: 'job-summary' }, 'Summary'),
      h(
        'dl',
        { class: 'facts' },
        ...row('Status', h('span', { role: 'status' }, statusBadge(j.status), j.status === 'queued' && j.queue_position !== null && j.queue_position !== undefined ? ` ${j.queue_position} ahead` : '')),
        ...row('Model', j.model),
        ...row('Provider', j.provider),
        ...row('Created', dateTime(j.created_at)),
        ...row('Started', dateTime(j.started_at)),
        ...row('Completed', dateTime(j.completed_at)),
        ...row('Waited in queue', j.started_at ? duration(j.created_at, j.started_at) : isFinal(j.status) ? '—' : duration(j.created_at, null)),
        ...row('Ran for', j.started_at ? duration(j.started_at, j.completed_at) : '—'),
        ...row('Attempts', String(j.attempts)),
        ...row('Images', u ? String(u.images) : '—'),
        ...row('Cost', usd(u?.cost_usd)),
        ...row('Tokens', tokens),
        ...row('Parameters', params.length ? params.join(', ') : '—'),
        ...row('Metadata', Object.keys(j.metadata ?? {}).length ? Object.entries(j.metadata).map(([k, v]) => `${k}=${v}`).join(', ') : '—'),
      ),
    ),
  ];
  if (j.error) out.push(errorBox(j.error.message, [j.error.type, j.error.code, j.error.param ? `param ${j.error.param}` : ''].filter(Boolean).join(' · ')));
  out.push(
    h(
      'section',
      { 'aria-labelledby': 'job-io' },
      h('h2', { id: 'job-io' }, 'Inputs and outputs'),
      h('p', { class: 'hint' }, 'The API does not hand out a job’s inputs (they are kept only while the job needs them).'),
      j.result?.data.length
        ? h(
            'div',
            { class: 'outputs' },
            ...j.result.data.map((d, i) => {
              const src = d.b64_json ? b64Url(d.b64_json, format) : (d.url ?? '');
              return h(
                'figure',
                { class: 'output' },
                h('img', { src, alt: `Output ${i + 1} of job ${j.id}` }),
                h(
                  'figcaption',
                  null,
                  d.b64_json
                    ? h('button', { type: 'button', onclick: () => downloadBlob(b64Blob(d.b64_json!, format), `${j.id}-${i}.${format}`) }, `Download output ${i + 1}`)
                    : h('a', { href: d.url ?? '#', target: '_blank', rel: 'noopener' }, `Output ${i + 1} (presigned URL)`),
                ),
              );
            }),
          )
        : h('p', null, j.status === 'succeeded' ? 'No outputs.' : 'No outputs yet.'),
    ),
    h('section', { 'aria-labelledby': 'job-hooks' }, h('h2', { id: 'job-hooks' }, 'Webhook deliveries'), h('div', { class: 'deliveries' }, h('p', null, 'Loading…'))),
    h('details', { class: 'raw' }, h('summary', null, 'The job object (JSON)'), h('pre', null, JSON.stringify(j, elide, 2))),
  );
  return out;
}

function deliveriesView(deliveries: WebhookDelivery[], retry: (id: string) => void): HTMLElement {
  if (deliveries.length === 0) return h('p', null, 'No webhook deliveries for this job.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'data' },
      h('thead', null, h('tr', null, ...['Event', 'URL', 'Status', 'Attempts', 'Last answer', 'Next attempt', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        null,
        ...deliveries.map((d) =>
          h(
            'tr',
            null,
            h('td', null, d.event),
            h('td', { class: 'wrap' }, d.url),
            h('td', null, statusBadge(d.status)),
            h('td', { class: 'num' }, String(d.attempts.length)),
            h('td', null, d.last_status_code ? String(d.last_status_code) : (d.last_error ?? '—')),
            h('td', null, dateTime(d.next_attempt_at)),
            h('td', null, d.status === 'pending' ? '' : h('button', { type: 'button', class: 'small', onclick: () => retry(d.id), 'aria-label': `Retry delivery of ${d.event}` }, 'Retry')),
          ),
        ),
      ),
    ),
  );
}

/** base64 images would fill the page: shown by their size. */
function elide(key: string, value: unknown): unknown {
  return key === 'b64_json' && typeof value === 'string' ? `<${value.length} characters of base64>` : value;
}
