import { api, type Job, type Model, type ModelCapabilities, toApiError } from '../api';
import { compareSlider } from '../compare';
import { announce, downloadBlob, errorBox, field, h, notice, replace, select, uniqueId } from '../dom';
import { bytes, duration, usd } from '../format';
import { followJob } from '../follow-job';
import { b64Blob, b64Url, cropSquare, IMAGE_TYPES, type PickedImage, readImage, toPng } from '../image-file';
import { MaskEditor } from '../mask-editor';
import { defaultModel, loadModels } from '../models';

const LAST_MODEL = 'image-edits.last-model';

/** Optional parameters of the form: each shown only when the model takes it, sent only when set. */
interface OptionControls {
  element: HTMLElement;
  values(): Record<string, string>;
}

/**
 * Playground: an image (dropped or picked), a mask painted over it (or uploaded), a prompt and the
 * model's own options (from /v1/models), submitted as a job (`Prefer: respond-async`) and followed
 * through its event stream, with partial images when streamed, then before/after and downloads.
 */
export async function playgroundPage(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const heading = h('h1', { tabindex: -1 }, 'Playground');
  root.append(heading, h('p', { class: 'lead' }, 'Pick an image, paint where it should change, describe the change, and run it as a job.'));

  let models: Model[];
  try {
    models = await loadModels();
  } catch (err) {
    root.append(errorBox('The models could not be loaded.', toApiError(err).describe()));
    return;
  }
  if (models.length === 0) {
    root.append(notice('This server has no models configured.', 'warn'));
    return;
  }

  let model = defaultModel(models, sessionStorage.getItem(LAST_MODEL))!;
  let image: PickedImage | null = null;
  let references: PickedImage[] = [];
  let running: AbortController | null = null;

  // ---- the image side ----
  const editor = new MaskEditor(() => checkForm());
  editor.element.hidden = true;
  const imageInput = h('input', { type: 'file', accept: IMAGE_TYPES, class: 'file-input behind-label', id: uniqueId('image') });
  const imageInfo = h('p', { class: 'hint', 'aria-live': 'polite' });
  const dropzone = h(
    'div',
    { class: 'dropzone' },
    h('p', null, 'Drop an image here (PNG, JPEG or WEBP), or'),
    imageInput,
    h('label', { class: 'button', for: imageInput.id }, 'Choose an image…'),
    imageInfo,
  );
  const referencesInput = h('input', { type: 'file', accept: IMAGE_TYPES, multiple: true, class: 'file-input behind-label', id: uniqueId('refs') });
  const referencesList = h('ul', { class: 'thumbs', 'aria-label': 'Reference images' });
  const referencesBox = h(
    'div',
    { class: 'references' },
    h('h3', null, 'More images'),
    h('p', { class: 'hint' }, 'GPT image models take several images: the first (above) is edited, these are references.'),
    referencesInput,
    h('label', { class: 'button', for: referencesInput.id }, 'Add images…'),
    referencesList,
  );

  const setImage = async (file: File) => {
    try {
      const picked = await readImage(file);
      if (image) URL.revokeObjectURL(image.url);
      image = picked;
      editor.load(picked.url, picked.width, picked.height);
      editor.element.hidden = false;
      imageInfo.textContent = `${file.name}: ${picked.width}×${picked.height} ${picked.format.toUpperCase()}, ${bytes(file.size)}${picked.transparent ? ', has transparent pixels' : ''}.`;
      announce(`Image loaded: ${picked.width} by ${picked.height}.`);
      checkForm();
    } catch {
      imageInfo.textContent = `${file.name} is not an image this browser can read.`;
      announce(imageInfo.textContent);
    }
  };
  const addReferences = async (files: File[]) => {
    for (const f of files) {
      try {
        references.push(await readImage(f));
      } catch {
        announce(`${f.name} is not an image.`);
      }
    }
    renderReferences();
  };
  const renderReferences = () => {
    const max = model.capabilities.max_images - 1;
    if (references.length > max) references = references.slice(0, max);
    replace(
      referencesList,
      references.map((r, i) =>
        h(
          'li',
          null,
          h('img', { src: r.url, alt: r.file.name }),
          h('button', { type: 'button', class: 'small', 'aria-label': `Remove ${r.file.name}`, onclick: () => { references.splice(i, 1); renderReferences(); } }, 'Remove'),
        ),
      ),
    );
    checkForm();
  };
  imageInput.addEventListener('change', () => {
    const f = imageInput.files?.[0];
    if (f) void setImage(f);
  });
  referencesInput.addEventListener('change', () => {
    void addReferences([...(referencesInput.files ?? [])]);
    referencesInput.value = '';
  });
  for (const zone of [dropzone, editor.element]) {
    zone.addEventListener('dragover', (e) => {
      e.preventDefault();
      dropzone.classList.add('dragging');
    });
    zone.addEventListener('dragleave', () => dropzone.classList.remove('dragging'));
    zone.addEventListener('drop', (e) => {
      e.preventDefault();
      dropzone.classList.remove('dragging');
      const files = [...(e.dataTransfer?.files ?? [])].filter((f) => f.type.startsWith('image/'));
      const [first, ...rest] = files;
      if (first) void setImage(first);
      if (rest.length && model.capabilities.max_images > 1) void addReferences(rest);
    });
  }

  // ---- the form ----
  const modelSelect = select(
    models.map((m) => [m.id, m.id]),
    model.id,
  );
  const prompt = h('textarea', { rows: 3, required: true, placeholder: 'e.g. remove the lamp', name: 'prompt' });
  const optionsBox = h('div', { class: 'options' });
  const formProblems = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'submit-edit' }, 'Run edit');
  const form = h(
    'form',
    { class: 'edit-form', novalidate: true, 'aria-label': 'Edit' },
    field('Model', modelSelect, h('span', { class: 'model-providers' })),
    field('Prompt', prompt),
    optionsBox,
    formProblems,
    h('div', { class: 'actions' }, submit),
  );
  let options = optionControls(model.capabilities);

  const renderModel = () => {
    const caps = model.capabilities;
    const providers = form.querySelector('.model-providers');
    if (providers) providers.textContent = `Providers: ${model.providers.join(' → ')}. Up to ${caps.max_images} image${caps.max_images > 1 ? 's' : ''}, ${caps.image_formats.join('/')} ≤ ${bytes(caps.max_image_bytes)}${caps.requires_square ? ', square' : ''}.`;
    options = optionControls(caps);
    replace(optionsBox, options.element);
    referencesBox.hidden = caps.max_images <= 1;
    renderReferences();
    checkForm();
  };
  modelSelect.addEventListener('change', () => {
    model = models.find((m) => m.id === modelSelect.value) ?? model;
    sessionStorage.setItem(LAST_MODEL, model.id);
    renderModel();
  });

  /** Problems the form can see before sending (the API checks everything again). */
  const problems = (): { blocking: string[]; notes: string[]; canCrop: boolean } => {
    const caps = model.capabilities;
    const blocking: string[] = [];
    const notes: string[] = [];
    let canCrop = false;
    if (!image) return { blocking: ['Choose an image first.'], notes, canCrop };
    if (caps.requires_square && image.width !== image.height) {
      blocking.push(`${model.id} needs a square image; this one is ${image.width}×${image.height}.`);
      canCrop = true;
    }
    if (!caps.image_formats.includes(image.format)) notes.push(`${model.id} takes ${caps.image_formats.join('/')}: the image will be sent as PNG.`);
    if (image.file.size > caps.max_image_bytes && caps.image_formats.includes(image.format)) blocking.push(`The image is ${bytes(image.file.size)}; ${model.id} takes at most ${bytes(caps.max_image_bytes)}.`);
    if (!caps.mask && !editor.isEmpty) notes.push(`${model.id} takes no mask: the mask will not be sent.`);
    if (caps.mask_or_transparency_required && editor.isEmpty && !image.transparent) blocking.push(`${model.id} edits only where the mask (or the image’s transparency) says: paint a mask.`);
    return { blocking, notes, canCrop };
  };
  function checkForm(): void {
    const p = problems();
    const parts: HTMLElement[] = p.notes.map((n) => notice(n));
    if (image && p.blocking.length) parts.push(notice(p.blocking.join(' '), 'warn'));
    if (p.canCrop && image) {
      parts.push(
        h(
          'button',
          {
            type: 'button',
            onclick: async () => {
              if (image) await setImage(await cropSquare(image));
            },
          },
          'Crop to the centre square',
        ),
      );
    }
    replace(formProblems, parts);
  }

  // ---- the run ----
  const runBox = h('section', { class: 'run', 'aria-labelledby': 'run-heading' });
  const renderIdle = () => replace(runBox, h('h2', { id: 'run-heading' }, 'Result'), h('p', { class: 'hint' }, 'Results appear here, beside the original.'));
  renderIdle();

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void run();
  });

  async function run(): Promise<void> {
    const p = problems();
    if (!prompt.value.trim()) {
      replace(formProblems, errorBox('Write a prompt: what should change?'));
      prompt.focus();
      return;
    }
    if (p.blocking.length || !image) {
      replace(formProblems, errorBox(p.blocking.join(' ') || 'Choose an image first.'));
      return;
    }
    running?.abort();
    const controller = new AbortController();
    running = controller;
    signal.addEventListener('abort', () => controller.abort(), { once: true });
    const caps = model.capabilities;
    const original = image;
    submit.disabled = true;

    const status = h('p', { class: 'run-status', role: 'status', 'aria-live': 'polite' }, 'Submitting…');
    const elapsed = h('span', { class: 'elapsed', 'aria-hidden': 'true' });
    const bar = h('progress', { 'aria-label': 'Job progress' });
    const cancel = h('button', { type: 'button', class: 'danger', hidden: true }, 'Cancel job');
    const partials = h('div', { class: 'partials', 'aria-label': 'Partial images' });
    const results = h('div', { class: 'results' });
    const jobLink = h('p', { class: 'job-link' });
    replace(runBox, h('h2', { id: 'run-heading' }, 'Result'), h('div', { class: 'run-head' }, status, elapsed, cancel), bar, jobLink, partials, results);

    try {
      const body = new FormData();
      body.set('model', model.id);
      body.set('prompt', prompt.value);
      const first = caps.image_formats.includes(original.format) ? original.file : await toPng(original);
      const images = [first, ...references.slice(0, caps.max_images - 1).map((r) => r.file)];
      if (images.length === 1) body.append('image', first, first.name);
      else for (const f of images) body.append('image[]', f, f.name);
      if (caps.mask && !editor.isEmpty) body.set('mask', await editor.toPng(), 'mask.png');
      // base64 in the job: the result shows and downloads from this page whatever serves the storage
      body.set('response_format', 'b64_json');
      for (const [k, v] of Object.entries(options.values())) body.set(k, v);

      const job = await api<Job>('/v1/images/edits', { form: body, headers: { prefer: 'respond-async' }, signal: controller.signal });
      replace(jobLink, 'Job ', h('a', { href: `/jobs/${job.id}` }, job.id), ` · ${job.model} on ${job.provider}`);
      cancel.hidden = false;
      cancel.onclick = async () => {
        cancel.disabled = true;
        try {
          await api<Job>(`/v1/jobs/${job.id}/cancel`, { method: 'POST' });
          announce('Cancel requested.');
        } catch (err) {
          const e = toApiError(err);
          status.textContent = e.status === 409 ? 'The job had already finished.' : `Cancel failed: ${e.describe()}`;
        }
      };
      const started = Date.now();
      const tick = window.setInterval(() => {
        elapsed.textContent = duration(Math.floor(started / 1000), null);
      }, 1000);
      controller.signal.addEventListener('abort', () => window.clearInterval(tick));
      const describe = (s: string, pos: number | null | undefined) => {
        if (s === 'queued') return pos === null || pos === undefined ? 'Queued.' : `Queued: ${pos} job${pos === 1 ? '' : 's'} ahead.`;
        if (s === 'in_progress') return 'Running…';
        return `${s[0]!.toUpperCase()}${s.slice(1).replace('_', ' ')}.`;
      };
      status.textContent = describe(job.status, job.queue_position);
      let lastStatus = '';
      const final = await followJob(
        job.id,
        {
          onStatus: (s, pos) => {
            const text = describe(s, pos);
            if (text !== lastStatus) {
              lastStatus = text;
              status.textContent = text;
            }
          },
          onPartial: (pi) => {
            partials.append(h('figure', { class: 'partial' }, h('img', { src: b64Url(pi.b64_json, pi.output_format), alt: `Partial image ${pi.partial_image_index + 1}` }), h('figcaption', null, `Partial ${pi.partial_image_index + 1}`)));
            announce(`Partial image ${pi.partial_image_index + 1} arrived.`);
          },
          onReconnect: (n) => {
            status.textContent = `Connection lost; reconnecting (${n})…`;
          },
        },
        controller.signal,
      );
      window.clearInterval(tick);
      cancel.hidden = true;
      bar.remove();
      if (!final) return;
      showFinal(final, original, status, results);
    } catch (err) {
      if (controller.signal.aborted) return;
      const e = toApiError(err);
      bar.remove();
      cancel.hidden = true;
      status.textContent = 'The edit was refused.';
      results.append(errorBox(e.message, [e.param ? `Parameter: ${e.param}.` : '', e.code ? `Code: ${e.code}.` : ''].filter(Boolean).join(' ')));
    } finally {
      submit.disabled = false;
      if (running === controller) running = null;
    }
  }

  const layout = h(
    'div',
    { class: 'playground' },
    h('section', { class: 'pg-image', 'aria-labelledby': 'image-heading' }, h('h2', { id: 'image-heading' }, 'Image and mask'), dropzone, editor.element, referencesBox),
    h('div', { class: 'pg-side' }, h('section', { class: 'pg-form', 'aria-labelledby': 'form-heading' }, h('h2', { id: 'form-heading' }, 'Edit'), form), runBox),
  );
  root.append(layout);
  renderModel();
  signal.addEventListener('abort', () => running?.abort(), { once: true });
}

function showFinal(job: Job, original: PickedImage, status: HTMLElement, results: HTMLElement): void {
  const took = job.started_at && job.completed_at ? ` in ${duration(job.started_at, job.completed_at)}` : '';
  if (job.status === 'succeeded' && job.result) {
    const data = job.result.data;
    status.textContent = `Succeeded${took}: ${data.length} image${data.length === 1 ? '' : 's'}${job.usage ? `, ${usd(job.usage.cost_usd)}` : ''}.`;
    const format = job.result.output_format ?? 'png';
    data.forEach((d, i) => {
      const src = d.b64_json ? b64Url(d.b64_json, format) : (d.url ?? '');
      const download = d.b64_json
        ? h('button', { type: 'button', onclick: () => downloadBlob(b64Blob(d.b64_json!, format), `${job.id}-${i}.${format}`) }, `Download image ${i + 1}`)
        : h('a', { class: 'button', href: d.url ?? '#', target: '_blank', rel: 'noopener' }, `Open image ${i + 1}`);
      results.append(h('div', { class: 'result' }, compareSlider(original.url, src, `Image ${i + 1} of ${data.length}`), h('div', { class: 'actions' }, download), d.revised_prompt ? h('p', { class: 'hint' }, `Revised prompt: ${d.revised_prompt}`) : null));
    });
    announce(status.textContent);
    return;
  }
  status.textContent = job.status === 'canceled' ? 'Canceled.' : job.status === 'expired' ? 'Expired before it started.' : 'Failed.';
  if (job.error) results.append(errorBox(job.error.message, [job.error.param ? `Parameter: ${job.error.param}.` : '', job.error.code ? `Code: ${job.error.code}.` : ''].filter(Boolean).join(' ')));
  announce(status.textContent);
}

function optionControls(caps: ModelCapabilities): OptionControls {
  const controls: HTMLElement[] = [];
  const readers: (() => [string, string] | null)[] = [];
  const choice = (name: string, label: string, values: string[], defaultLabel: string, hint?: string) => {
    if (values.length === 0) return null;
    const s = select([['', `Default (${defaultLabel})`], ...values.map((v): [string, string] => [v, v])], '', { name });
    controls.push(field(label, s, hint));
    readers.push(() => (s.value ? [name, s.value] : null));
    return s;
  };
  choice('size', 'Size', caps.sizes, caps.default_size, caps.default_size === 'auto' ? 'auto keeps the input’s size (or lets the model pick).' : undefined);
  const n = h('input', { type: 'number', min: 1, max: 10, value: 1, name: 'n', inputmode: 'numeric' });
  controls.push(field('Number of images', n));
  readers.push(() => (n.value && n.value !== '1' ? ['n', String(Math.max(1, Math.min(10, Math.round(Number(n.value)) || 1)))] : null));
  if (caps.qualities.length > 1) choice('quality', 'Quality', caps.qualities, 'auto');
  if (caps.backgrounds.length > 1) choice('background', 'Background', caps.backgrounds, 'auto');
  const format = caps.output_formats.length > 1 ? choice('output_format', 'Output format', caps.output_formats, 'png') : null;
  if (caps.output_compression && format) {
    const c = h('input', { type: 'number', min: 0, max: 100, value: '', name: 'output_compression', inputmode: 'numeric', placeholder: '100' });
    const f = field('Compression (jpeg/webp, 0–100)', c);
    controls.push(f);
    const sync = () => {
      const lossy = format.value === 'jpeg' || format.value === 'webp';
      f.hidden = !lossy;
    };
    format.addEventListener('change', sync);
    sync();
    readers.push(() => (!f.hidden && c.value !== '' ? ['output_compression', c.value] : null));
  }
  choice('input_fidelity', 'Input fidelity', caps.input_fidelities, 'low');
  choice('moderation', 'Moderation', caps.moderations, 'auto');
  if (caps.search_prompt_required) {
    const sp = h('input', { type: 'text', name: 'search_prompt', required: true });
    controls.push(field('Search prompt (what to find and replace)', sp));
    readers.push(() => (sp.value.trim() ? ['search_prompt', sp.value] : null));
  }
  if (caps.stream) {
    const id = uniqueId('stream');
    const stream = h('input', { type: 'checkbox', id, name: 'stream' });
    const count = h('input', { type: 'number', min: 1, max: 3, value: 2, name: 'partial_images', inputmode: 'numeric', disabled: true });
    stream.addEventListener('change', () => {
      count.disabled = !stream.checked;
    });
    controls.push(
      h(
        'fieldset',
        { class: 'stream' },
        h('legend', null, 'Streaming'),
        h('label', { class: 'checkbox', for: id }, stream, ' Stream partial images as they are made'),
        field('Partial images (1–3)', count, 'Shown while the job runs, when the provider streams them (OpenAI, Azure).'),
      ),
    );
    readers.push(() => (stream.checked ? ['stream', 'true'] : null));
    readers.push(() => (stream.checked ? ['partial_images', String(Math.max(1, Math.min(3, Math.round(Number(count.value)) || 1)))] : null));
  }
  const details = h('details', { class: 'more-options', open: true }, h('summary', null, 'Options'), h('div', { class: 'option-grid' }, ...controls));
  return {
    element: details,
    values: () => Object.fromEntries(readers.map((r) => r()).filter((x): x is [string, string] => x !== null)),
  };
}
