import type { ModelPrice } from './models';

export interface CostInput {
  /** as the client asked; unset or `auto` is priced, never free */
  quality?: string | undefined;
  /** the images actually produced */
  outputs: Array<{ width: number; height: number }>;
  usage?: { inputTokens?: number | undefined; outputTokens?: number | undefined; imageTokens?: number | undefined; textTokens?: number | undefined } | undefined;
}

/**
 * What one finished job cost, in USD (6 decimals). Token prices win when the provider reported
 * tokens (exact); otherwise per image, by the size actually produced (so `size=auto` is priced as
 * what came back) and by quality, where unset or `auto` is priced as the dearest quality listed:
 * an estimate never under-counts.
 */
export function editCost(price: ModelPrice, input: CostInput): number {
  const u = input.usage;
  if (price.tokens && u && typeof u.outputTokens === 'number') {
    const t = price.tokens;
    const text = u.textTokens ?? 0;
    // without a breakdown, all input tokens are priced as image tokens (the dearer kind)
    const image = u.imageTokens ?? Math.max(0, (u.inputTokens ?? 0) - text);
    return round6((text * t.inputText + image * t.inputImage + u.outputTokens * t.output) / 1_000_000);
  }
  let total = 0;
  for (const out of input.outputs) total += imagePrice(price, input.quality, out);
  return round6(total);
}

function imagePrice(price: ModelPrice, quality: string | undefined, out: { width: number; height: number }): number {
  if (price.byQuality && Object.keys(price.byQuality).length > 0) {
    const table = price.byQuality[quality ?? ''] ?? dearest(price.byQuality);
    return nearestSize(table, out);
  }
  if (price.bySize && Object.keys(price.bySize).length > 0) return nearestSize(price.bySize, out);
  if (price.perMegapixel !== undefined) return Math.ceil((out.width * out.height) / 1_000_000) * price.perMegapixel;
  return price.perImage ?? 0;
}

function dearest(byQuality: Record<string, Record<string, number>>): Record<string, number> {
  let best: Record<string, number> = {};
  let bestMax = -1;
  for (const table of Object.values(byQuality)) {
    const max = Math.max(...Object.values(table));
    if (max > bestMax) [best, bestMax] = [table, max];
  }
  return best;
}

/** The listed size with the closest pixel count (ties: the dearer one). */
function nearestSize(table: Record<string, number>, out: { width: number; height: number }): number {
  const exact = table[`${out.width}x${out.height}`];
  if (exact !== undefined) return exact;
  const pixels = out.width * out.height;
  let best = 0;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const [size, value] of Object.entries(table)) {
    const [w, h] = size.split('x').map(Number);
    const distance = Math.abs((w ?? 0) * (h ?? 0) - pixels);
    if (distance < bestDistance || (distance === bestDistance && value > best)) [best, bestDistance] = [value, distance];
  }
  return best;
}

const round6 = (v: number) => Math.round(v * 1_000_000) / 1_000_000;
