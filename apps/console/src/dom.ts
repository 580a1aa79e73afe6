/**
 * A few helpers instead of a framework: elements are built with `h`, pages replace their own
 * subtree. Text goes in as text nodes (never innerHTML), so nothing from the API is ever parsed as HTML.
 */

export type Child = Node | string | number | null | undefined | false | Child[];

type Handler = (event: Event) => void;

export interface Attrs {
  [name: string]: string | number | boolean | null | undefined | Handler | Record<string, string>;
}

/** `h('button', { type: 'button', onclick: ... }, 'Undo')`. `on*` are listeners; `dataset` an object; false/null attributes are left out. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs | null = null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element (charts); attributes as given. */
export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}, ...children: Child[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

function setAttrs(el: HTMLElement, attrs: Attrs): void {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value as Handler);
    } else if (name === 'dataset' && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = v;
    } else if (name === 'class') {
      el.className = String(value);
    } else if (name === 'value' && 'value' in el) {
      (el as HTMLInputElement).value = String(value);
    } else if (name === 'checked' && el instanceof HTMLInputElement) {
      el.checked = Boolean(value);
    } else if (name === 'selected' && el instanceof HTMLOptionElement) {
      el.selected = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

export function append(parent: Node, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else parent.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
}

/** Replaces an element's children. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, children);
}

let uid = 0;
/** A unique id for label/aria pairs. */
export function uniqueId(prefix: string): string {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled field: `<div class="field"><label for=id>label</label>control<p id=hint>hint</p></div>`. */
export function field(label: string, control: HTMLElement, hint?: Child): HTMLDivElement {
  if (!control.id) control.id = uniqueId('f');
  const parts: Child[] = [h('label', { for: control.id }, label), control];
  if (hint) {
    const hintId = `${control.id}-hint`;
    control.setAttribute('aria-describedby', [control.getAttribute('aria-describedby'), hintId].filter(Boolean).join(' '));
    parts.push(h('p', { class: 'hint', id: hintId }, hint));
  }
  return h('div', { class: 'field' }, ...parts);
}

/** A `<select>` from [value, label] pairs. */
export function select(options: [string, string][], value: string, attrs: Attrs = {}): HTMLSelectElement {
  return h('select', attrs, ...options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
}

/** Announces a message to screen readers through the app's polite live region. */
export function announce(message: string): void {
  const region = document.getElementById('announcer');
  if (!region) return;
  // cleared first, so the same message twice is read twice
  region.textContent = '';
  window.setTimeout(() => {
    region.textContent = message;
  }, 50);
}

/** An error box (role=alert: read out at once). */
export function errorBox(message: string, detail?: string): HTMLDivElement {
  return h('div', { class: 'alert alert-error', role: 'alert' }, h('strong', null, message), detail ? h('p', null, detail) : null);
}

export function notice(message: Child, kind: 'info' | 'warn' = 'info'): HTMLDivElement {
  return h('div', { class: `alert alert-${kind}` }, message);
}

/** Downloads a Blob under a file name (an object URL, revoked once clicked). */
export function downloadBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, class: 'visually-hidden' });
  document.body.appendChild(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * Re-renders a region without losing the keyboard user's place: the focused element's
 * `data-focus-key` is looked for again after `render`, and focused.
 */
export function keepFocus(region: Element, render: () => void): void {
  const active = document.activeElement as HTMLElement | null;
  const key = active && region.contains(active) ? active.dataset.focusKey : undefined;
  render();
  if (key) region.querySelector<HTMLElement>(`[data-focus-key="${CSS.escape(key)}"]`)?.focus();
}
