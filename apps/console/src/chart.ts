import { h, svg, uniqueId } from './dom';
import type { Series } from './usage-data';

/** Distinct hues (also distinguishable in grey by lightness); the legend names each. */
const PALETTE = ['#2b5fd9', '#e07b00', '#1a9e6a', '#c23b6b', '#7a4fd1', '#8a8a00', '#0095b6', '#b34a2a'];

export function colorOf(i: number): string {
  return PALETTE[i % PALETTE.length]!;
}

/**
 * A stacked bar chart, one bar per day, one colour per series, as inline SVG (no library). Scales to
 * its container (viewBox); the table next to it carries the same numbers for screen readers.
 */
export function stackedBars(series: Series, opts: { title: string; format(v: number): string }): HTMLElement {
  // a narrower drawing on a phone keeps its labels readable once scaled to the screen
  const W = typeof window !== 'undefined' && window.innerWidth < 600 ? 400 : 720;
  const H = W < 720 ? 240 : 260;
  const pad = { l: 56, r: 12, t: 12, b: 40 };
  const plotW = W - pad.l - pad.r;
  const plotH = H - pad.t - pad.b;
  const max = Math.max(0, ...series.days.map((d) => series.dayTotal(d)));
  const top = niceCeil(max);
  const n = Math.max(1, series.days.length);
  const slot = plotW / n;
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  const titleId = uniqueId('chart-title');
  const descId = uniqueId('chart-desc');

  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const y = pad.t + plotH - f * plotH;
    return svg(
      'g',
      { class: 'grid' },
      svg('line', { x1: pad.l, x2: W - pad.r, y1: y, y2: y }),
      svg('text', { x: pad.l - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' }, top ? opts.format(top * f) : '0'),
    );
  });
  const labelEvery = Math.ceil(n / (W < 720 ? 5 : 10));
  const bars = series.days.map((d, i) => {
    const x = pad.l + i * slot + (slot - barW) / 2;
    let y = pad.t + plotH;
    const rects = series.names.map((name, si) => {
      const v = series.value(d, name);
      const hgt = top ? (v / top) * plotH : 0;
      y -= hgt;
      return v > 0 ? svg('rect', { x, y, width: barW, height: Math.max(0.5, hgt), fill: colorOf(si) }, svg('title', {}, `${d} · ${name}: ${opts.format(v)}`)) : null;
    });
    const label = i % labelEvery === 0 ? svg('text', { x: x + barW / 2, y: H - pad.b + 16, 'text-anchor': 'middle', class: 'axis' }, d.slice(5)) : null;
    return svg('g', {}, ...rects, label);
  });

  const chart = svg(
    'svg',
    { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${titleId} ${descId}`, class: 'chart', preserveAspectRatio: 'xMidYMid meet' },
    svg('title', { id: titleId }, opts.title),
    svg('desc', { id: descId }, `Total ${opts.format(series.total)} over ${series.days.length} days; the table below has every value.`),
    ...grid,
    ...bars,
  );
  const legend = h(
    'ul',
    { class: 'legend' },
    ...series.names.map((name, i) => {
      const swatch = h('span', { class: 'swatch', 'aria-hidden': 'true' });
      swatch.style.background = colorOf(i);
      return h('li', null, swatch, `${name}: ${opts.format(series.totalOf(name))}`);
    }),
  );
  return h('figure', { class: 'chart-figure' }, chart, legend);
}

/** A round axis top at or above `v`: 1, 2, 2.5 or 5 × a power of ten. */
export function niceCeil(v: number): number {
  if (v <= 0) return 0;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
