import { h, uniqueId } from './dom';

/**
 * Before/after: the result under the original, the original clipped at a position set by a range
 * input (keyboard: arrows, Home, End; pointer: drag on the picture).
 */
export function compareSlider(beforeUrl: string, afterUrl: string, label: string): HTMLElement {
  const before = h('img', { class: 'compare-before', src: beforeUrl, alt: `${label}: original` });
  const after = h('img', { class: 'compare-after', src: afterUrl, alt: `${label}: result` });
  const divider = h('div', { class: 'compare-divider', 'aria-hidden': 'true' });
  const frame = h('div', { class: 'compare-frame' }, after, before, divider);
  const id = uniqueId('compare');
  const range = h('input', { type: 'range', id, min: 0, max: 100, value: 50, class: 'compare-range', 'aria-valuetext': '50% original' });
  const set = (pct: number) => {
    const p = Math.max(0, Math.min(100, pct));
    range.value = String(Math.round(p));
    range.setAttribute('aria-valuetext', `${Math.round(p)}% original, ${100 - Math.round(p)}% result`);
    before.style.clipPath = `inset(0 ${100 - p}% 0 0)`;
    divider.style.left = `${p}%`;
  };
  range.addEventListener('input', () => set(Number(range.value)));
  let dragging = false;
  const fromPointer = (e: PointerEvent) => {
    const rect = frame.getBoundingClientRect();
    set(((e.clientX - rect.left) / rect.width) * 100);
  };
  frame.addEventListener('pointerdown', (e) => {
    dragging = true;
    frame.setPointerCapture(e.pointerId);
    fromPointer(e);
  });
  frame.addEventListener('pointermove', (e) => {
    if (dragging) fromPointer(e);
  });
  frame.addEventListener('pointerup', () => {
    dragging = false;
  });
  set(50);
  const slider = h('div', { class: 'compare-slider' }, frame, h('div', { class: 'compare-control' }, h('label', { for: id }, 'Before / after'), range));
  const pair = h(
    'div',
    { class: 'compare-pair', hidden: true },
    h('figure', null, h('img', { src: beforeUrl, alt: `${label}: original` }), h('figcaption', null, 'Original')),
    h('figure', null, h('img', { src: afterUrl, alt: `${label}: result` }), h('figcaption', null, 'Result')),
  );
  const sliderButton = h('button', { type: 'button', class: 'small', 'aria-pressed': 'true' }, 'Slider');
  const pairButton = h('button', { type: 'button', class: 'small', 'aria-pressed': 'false' }, 'Side by side');
  const mode = (sideBySide: boolean) => {
    pair.hidden = !sideBySide;
    slider.hidden = sideBySide;
    sliderButton.setAttribute('aria-pressed', String(!sideBySide));
    pairButton.setAttribute('aria-pressed', String(sideBySide));
  };
  sliderButton.addEventListener('click', () => mode(false));
  pairButton.addEventListener('click', () => mode(true));
  return h(
    'figure',
    { class: 'compare' },
    h('div', { class: 'compare-modes', role: 'group', 'aria-label': `${label}: view` }, sliderButton, pairButton),
    slider,
    pair,
    h('figcaption', null, label),
  );
}
