import { api, apiFetch, type Batch, type FileObject, isBatchFinal, type List, toApiError } from '../api';
import { announce, downloadBlob, errorBox, field, h, keepFocus, notice, replace, select, uniqueId } from '../dom';
import { dateTime, shortId } from '../format';
import { IMAGE_TYPES } from '../image-file';
import { defaultModel, loadModels } from '../models';
import { navigate } from '../router';
import { statusBadge } from './jobs';

const POLL_MS = 2000;

/** A batch's progress: a native progress bar and the counts in words. */
export function batchProgress(b: Batch): HTMLElement {
  const { total, completed, failed } = b.request_counts;
  const done = completed + failed;
  const label = total ? `${done} of ${total} done${failed ? ` (${failed} failed)` : ''}` : b.status === 'validating' ? 'validating the input…' : 'no requests';
  return h(
    'div',
    { class: 'batch-progress' },
    h('progress', { max: Math.max(1, total), value: total ? done : 0, 'aria-label': `Batch ${b.id} progress`, 'aria-valuetext': label }),
    h('span', null, label),
  );
}

/** Creates a batch from JSONL (uploaded as it is) and goes to its page. */
async function createFromJsonl(jsonl: Blob, filename: string, metadata?: Record<string, string>): Promise<Batch> {
  const form = new FormData();
  form.set('purpose', 'batch');
  form.set('file', jsonl, filename);
  const file = await api<FileObject>('/v1/files', { form });
  return api<Batch>('/v1/batches', { json: { input_file_id: file.id, endpoint: '/v1/images/edits', completion_window: '24h', ...(metadata ? { metadata } : {}) } });
}

/** One line of a batch: the JSON form of an edit with the image by file_id. */
export function batchLine(customId: string, body: Record<string, unknown>): string {
  return JSON.stringify({ custom_id: customId, method: 'POST', url: '/v1/images/edits', body });
}

/** Unique custom_ids from file names (a folder may hold a.png in two subfolders). */
export function customIds(names: string[]): string[] {
  const seen = new Map<string, number>();
  return names.map((n) => {
    const count = (seen.get(n) ?? 0) + 1;
    seen.set(n, count);
    return count === 1 ? n : `${n}#${count}`;
  });
}

export async function batchesPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  root.append(h('h1', { tabindex: -1 }, 'Batches'), h('p', { class: 'lead' }, 'Thousands of edits in one go, run in the background: upload a JSONL file, or build one from a folder of images and one prompt.'));
  const createMessages = h('div', { 'aria-live': 'polite' });

  // ---- from a JSONL file ----
  const jsonlInput = h('input', { type: 'file', accept: '.jsonl,application/jsonl,application/x-ndjson,text/plain', required: true });
  const jsonlForm = h(
    'form',
    { class: 'card', 'aria-labelledby': 'jsonl-heading' },
    h('h2', { id: 'jsonl-heading' }, 'Upload a JSONL file'),
    field('Batch input (.jsonl)', jsonlInput, h('span', null, 'One line per edit: ', h('code', null, '{"custom_id", "method": "POST", "url": "/v1/images/edits", "body": {...}}'), '.')),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create batch')),
  );
  jsonlForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = jsonlInput.files?.[0];
    if (!f) {
      replace(createMessages, errorBox('Choose a .jsonl file first.'));
      return;
    }
    await creating(jsonlForm, async () => createFromJsonl(f, f.name));
  });

  // ---- from images and one prompt ----
  const folderInput = h('input', { type: 'file', accept: IMAGE_TYPES, multiple: true, webkitdirectory: true });
  const filesInput = h('input', { type: 'file', accept: IMAGE_TYPES, multiple: true });
  const maskInput = h('input', { type: 'file', accept: 'image/png' });
  const modelSelect = select([], '');
  const sizeSelect = select([['', 'Default']], '');
  const promptInput = h('textarea', { rows: 2, required: true });
  const picked = h('p', { class: 'hint', 'aria-live': 'polite' }, 'No images chosen.');
  const imagesForm = h(
    'form',
    { class: 'card', 'aria-labelledby': 'images-heading' },
    h('h2', { id: 'images-heading' }, 'From images and one prompt'),
    field('A folder of images', folderInput),
    field('…or some images', filesInput),
    picked,
    field('Model', modelSelect),
    field('Prompt (the same for every image)', promptInput),
    field('Size', sizeSelect),
    field('Mask for every image (optional; PNG, transparent where to edit, the images’ size)', maskInput, 'Models like local-inpaint edit only where the mask or the image’s own transparency says.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Upload and create batch')),
  );
  const chosen = (): File[] => {
    const all = [...(folderInput.files ?? []), ...(filesInput.files ?? [])];
    return all.filter((f) => /^image\/(png|jpeg|webp)$/.test(f.type));
  };
  const showPicked = () => {
    const n = chosen().length;
    picked.textContent = n ? `${n} image${n === 1 ? '' : 's'} chosen.` : 'No images chosen.';
  };
  folderInput.addEventListener('change', showPicked);
  filesInput.addEventListener('change', showPicked);
  void loadModels()
    .then((models) => {
      const first = defaultModel(models, null);
      replace(modelSelect, ...models.map((m) => h('option', { value: m.id, selected: m.id === first?.id }, m.id)));
      const sizes = () => {
        const m = models.find((x) => x.id === modelSelect.value);
        replace(sizeSelect, h('option', { value: '' }, `Default (${m?.capabilities.default_size ?? 'auto'})`), ...(m?.capabilities.sizes ?? []).map((s) => h('option', { value: s }, s)));
      };
      modelSelect.addEventListener('change', sizes);
      sizes();
    })
    .catch((err) => replace(createMessages, errorBox('The models could not be loaded.', toApiError(err).describe())));

  imagesForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const files = chosen();
    if (!files.length) {
      replace(createMessages, errorBox('Choose some images (PNG, JPEG or WEBP) first.'));
      return;
    }
    if (!promptInput.value.trim()) {
      replace(createMessages, errorBox('Write the prompt.'));
      promptInput.focus();
      return;
    }
    await creating(imagesForm, async () => {
      const upload = async (f: File) => {
        const form = new FormData();
        form.set('purpose', 'vision');
        form.set('file', f, f.name);
        return api<FileObject>('/v1/files', { form });
      };
      let mask: FileObject | undefined;
      const maskFile = maskInput.files?.[0];
      if (maskFile) mask = await upload(maskFile);
      const ids: string[] = [];
      // a few at a time: fast, without opening hundreds of uploads at once
      let next = 0;
      let done = 0;
      const worker = async () => {
        while (next < files.length) {
          const i = next++;
          ids[i] = (await upload(files[i]!)).id;
          done++;
          replace(createMessages, notice(`Uploading images: ${done} of ${files.length}…`));
        }
      };
      await Promise.all(Array.from({ length: Math.min(4, files.length) }, worker));
      const names = customIds(files.map((f) => f.webkitRelativePath || f.name));
      const lines = files.map((_, i) =>
        batchLine(names[i]!, {
          model: modelSelect.value,
          prompt: promptInput.value,
          images: [{ file_id: ids[i] }],
          ...(mask ? { mask: { file_id: mask.id } } : {}),
          ...(sizeSelect.value ? { size: sizeSelect.value } : {}),
        }),
      );
      return createFromJsonl(new Blob([`${lines.join('\n')}\n`], { type: 'application/jsonl' }), 'console-batch.jsonl', { source: 'console' });
    });
  });

  async function creating(form: HTMLFormElement, make: () => Promise<Batch>): Promise<void> {
    const button = form.querySelector<HTMLButtonElement>('button[type=submit]');
    if (button) button.disabled = true;
    replace(createMessages, notice('Uploading…'));
    try {
      const batch = await make();
      announce(`Batch ${batch.id} created.`);
      navigate(`/batches/${batch.id}`);
    } catch (err) {
      replace(createMessages, errorBox('The batch could not be created.', toApiError(err).describe()));
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- the list ----
  const list = h('div', { class: 'table-wrap' }, h('p', null, 'Loading…'));
  root.append(
    h('div', { class: 'two-cols' }, jsonlForm, imagesForm),
    createMessages,
    h('section', { 'aria-labelledby': 'batches-heading' }, h('h2', { id: 'batches-heading' }, 'Your batches'), list),
  );

  let batches: Batch[] = [];
  let hasMore = false;
  let shown = '';
  const render = () => {
    const json = JSON.stringify([batches, hasMore]);
    if (json === shown) return;
    shown = json;
    if (!batches.length) {
      replace(list, h('p', null, 'No batches yet.'));
      return;
    }
    keepFocus(list, () => replace(
      list,
      h(
        'table',
        { class: 'data' },
        h('thead', null, h('tr', null, ...['Batch', 'Status', 'Progress', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
        h(
          'tbody',
          null,
          ...batches.map((b) => h('tr', null, h('td', null, h('a', { href: `/batches/${b.id}`, title: b.id, dataset: { focusKey: b.id } }, shortId(b.id))), h('td', null, statusBadge(b.status)), h('td', null, batchProgress(b)), h('td', null, dateTime(b.created_at)))),
        ),
      ),
      hasMore ? h('div', { class: 'pager' }, h('button', { type: 'button', dataset: { focusKey: 'more' }, onclick: () => void load(batches.at(-1)?.id) }, 'Load older batches')) : null,
    ));
  };
  const load = async (after?: string) => {
    try {
      const page = await api<List<Batch>>('/v1/batches', { query: { limit: 20, after }, signal });
      batches = after ? [...batches, ...page.data] : page.data;
      hasMore = Boolean(page.has_more);
      render();
    } catch (err) {
      if (!signal.aborted) replace(list, errorBox('The batches could not be loaded.', toApiError(err).describe()));
    }
  };
  await load();
  // the running ones move: refresh the first page while any is running
  const timer = window.setInterval(() => {
    if (batches.some((b) => !isBatchFinal(b.status)) && batches.length <= 20) void load();
  }, POLL_MS * 2);
  signal.addEventListener('abort', () => window.clearInterval(timer), { once: true });
}

/** One batch: progress while it runs, cancel, its output and error files, a preview of the results. */
export async function batchPage(root: HTMLElement, id: string, signal: AbortSignal): Promise<void> {
  const messages = h('div', { 'aria-live': 'polite' });
  const body = h('div', null, h('p', null, 'Loading…'));
  const statusLine = h('p', { role: 'status', class: 'visually-hidden' });
  root.append(h('p', { class: 'crumbs' }, h('a', { href: '/batches' }, '← Batches')), h('h1', { tabindex: -1, class: 'mono-title' }, 'Batch ', h('span', { class: 'mono' }, id)), statusLine, messages, body);

  let previewed = false;
  let lastStatus = '';
  let shown = '';
  const load = async (): Promise<Batch | null> => {
    try {
      const b = await api<Batch>(`/v1/batches/${encodeURIComponent(id)}`, { signal });
      const json = JSON.stringify(b);
      if (json !== shown) {
        shown = json;
        keepFocus(body, () => replace(body, ...batchView(b, { cancel, download })));
      }
      if (b.status !== lastStatus) {
        lastStatus = b.status;
        statusLine.textContent = `Batch ${b.status}.`;
      }
      if (isBatchFinal(b.status) && b.output_file_id && !previewed) {
        previewed = true;
        void preview(b.output_file_id);
      }
      return b;
    } catch (err) {
      if (signal.aborted) return null;
      const e = toApiError(err);
      replace(body, errorBox(e.status === 404 ? 'No such batch for this key.' : 'The batch could not be loaded.', e.describe()));
      return null;
    }
  };
  const previewBox = h('section', { 'aria-labelledby': 'preview-heading', class: 'batch-preview' });
  root.append(previewBox);

  const cancel = async () => {
    try {
      await api<Batch>(`/v1/batches/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
      replace(messages, notice('Cancelling: requests already running finish, the rest are cancelled.'));
      await load();
    } catch (err) {
      replace(messages, errorBox('The batch could not be cancelled.', toApiError(err).describe()));
    }
  };
  const download = async (fileId: string, name: string) => {
    try {
      const res = await apiFetch(`/v1/files/${encodeURIComponent(fileId)}/content`);
      downloadBlob(await res.blob(), name);
    } catch (err) {
      replace(messages, errorBox('The file could not be downloaded.', toApiError(err).describe()));
    }
  };
  const preview = async (fileId: string) => {
    try {
      const res = await apiFetch(`/v1/files/${encodeURIComponent(fileId)}/content`, { signal });
      const text = await res.text();
      const items: HTMLElement[] = [];
      for (const line of text.split('\n').slice(0, 60)) {
        if (!line.trim()) continue;
        const r = JSON.parse(line) as { custom_id: string; response?: { body?: { data?: { url?: string; b64_json?: string }[] } } };
        for (const d of r.response?.body?.data ?? []) {
          const src = d.url ?? (d.b64_json ? `data:image/png;base64,${d.b64_json}` : '');
          if (src) items.push(h('figure', { class: 'output' }, h('img', { src, alt: `Result of ${r.custom_id}`, loading: 'lazy' }), h('figcaption', null, r.custom_id)));
        }
      }
      replace(previewBox, h('h2', { id: 'preview-heading' }, 'Results'), items.length ? h('div', { class: 'outputs' }, ...items) : h('p', null, 'No images in the output file.'));
    } catch (err) {
      if (!signal.aborted) replace(previewBox, errorBox('The results could not be previewed.', toApiError(err).describe()));
    }
  };

  let batch = await load();
  while (batch && !isBatchFinal(batch.status) && !signal.aborted) {
    await new Promise((r) => window.setTimeout(r, POLL_MS));
    if (signal.aborted) return;
    batch = (await load()) ?? batch;
  }
  if (batch && isBatchFinal(batch.status)) announce(`Batch ${batch.status}.`);
}

function batchView(b: Batch, actions: { cancel(): void; download(fileId: string, name: string): void }): HTMLElement[] {
  const row = (label: string, value: Node | string) => [h('dt', null, label), h('dd', null, value)];
  const cancellable = b.status === 'validating' || b.status === 'in_progress';
  const errors = b.errors?.data ?? [];
  return [
    h(
      'div',
      { class: 'actions' },
      cancellable ? h('button', { type: 'button', class: 'danger', dataset: { focusKey: 'cancel' }, onclick: () => actions.cancel() }, 'Cancel batch') : null,
      b.output_file_id ? h('button', { type: 'button', dataset: { focusKey: 'output' }, onclick: () => actions.download(b.output_file_id!, `${b.id}-output.jsonl`) }, 'Download output file') : null,
      b.error_file_id ? h('button', { type: 'button', dataset: { focusKey: 'errors' }, onclick: () => actions.download(b.error_file_id!, `${b.id}-errors.jsonl`) }, 'Download error file') : null,
    ),
    batchProgress(b),
    h(
      'dl',
      { class: 'facts' },
      ...row('Status', statusBadge(b.status)),
      ...row('Requests', `${b.request_counts.total} total, ${b.request_counts.completed} completed, ${b.request_counts.failed} failed`),
      ...row('Created', dateTime(b.created_at)),
      ...row('Started', dateTime(b.in_progress_at)),
      ...row('Completed', dateTime(b.completed_at ?? b.failed_at ?? b.cancelled_at)),
      ...row('Expires', dateTime(b.expires_at)),
      ...row('Input file', b.input_file_id),
      ...row('Metadata', b.metadata ? Object.entries(b.metadata).map(([k, v]) => `${k}=${v}`).join(', ') : '—'),
    ),
    errors.length
      ? h(
          'section',
          { 'aria-labelledby': uniqueIdFor(b.id) },
          h('h2', { id: uniqueIdFor(b.id) }, 'Errors in the input'),
          h('ul', null, ...errors.map((e) => h('li', null, `${e.line ? `line ${e.line}: ` : ''}${e.message} (${e.code})`))),
        )
      : null,
  ].filter((x): x is HTMLElement => x !== null);
}

const ids = new Map<string, string>();
function uniqueIdFor(key: string): string {
  let id = ids.get(key);
  if (!id) {
    id = uniqueId('batch-errors');
    ids.set(key, id);
  }
  return id;
}
