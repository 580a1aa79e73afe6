/**
 * The mask as pixels. The editor paints on an overlay (RGBA, painted where alpha >= 128); what is
 * sent is OpenAI's convention whatever the provider: fully transparent (alpha 0) where the model
 * should edit, opaque black elsewhere, the size of the image. Pure functions on RGBA arrays.
 */

/** Overlay colour of a painted pixel (what the editor shows, half transparent, over the image). */
export const PAINT_RGB = [255, 48, 48] as const;

const isPainted = (alpha: number) => alpha >= 128;

/** The overlay → the mask PNG's pixels: alpha 0 where painted, opaque black elsewhere. */
export function overlayToMask(overlay: Uint8ClampedArray): Uint8ClampedArray<ArrayBuffer> {
  const out = new Uint8ClampedArray(overlay.length);
  for (let i = 3; i < overlay.length; i += 4) out[i] = isPainted(overlay[i]!) ? 0 : 255;
  return out;
}

/** An uploaded mask (OpenAI's convention: transparent = edit) → the overlay that shows it. */
export function maskToOverlay(mask: Uint8ClampedArray): Uint8ClampedArray<ArrayBuffer> {
  const out = new Uint8ClampedArray(mask.length);
  for (let i = 0; i < mask.length; i += 4) if (mask[i + 3]! < 128) paint(out, i);
  return out;
}

/** Painted ↔ unpainted, every pixel. */
export function invertOverlay(overlay: Uint8ClampedArray): Uint8ClampedArray<ArrayBuffer> {
  const out = new Uint8ClampedArray(overlay.length);
  for (let i = 0; i < overlay.length; i += 4) if (!isPainted(overlay[i + 3]!)) paint(out, i);
  return out;
}

/** The share of pixels painted, 0 to 1. */
export function coverage(overlay: Uint8ClampedArray): number {
  const pixels = overlay.length / 4;
  if (pixels === 0) return 0;
  let n = 0;
  for (let i = 3; i < overlay.length; i += 4) if (isPainted(overlay[i]!)) n++;
  return n / pixels;
}

/** Whether an image has any pixel that is not fully opaque (its own transparency can be the mask). */
export function hasTransparency(rgba: Uint8ClampedArray): boolean {
  for (let i = 3; i < rgba.length; i += 4) if (rgba[i]! < 255) return true;
  return false;
}

/** A rectangle in percent of the image → pixel bounds, clamped to the image. */
export function percentRect(width: number, height: number, r: { x: number; y: number; w: number; h: number }): { x: number; y: number; w: number; h: number } {
  const clamp = (v: number, max: number) => Math.max(0, Math.min(max, Math.round(v)));
  const x0 = clamp((r.x / 100) * width, width);
  const y0 = clamp((r.y / 100) * height, height);
  const x1 = clamp(((r.x + r.w) / 100) * width, width);
  const y1 = clamp(((r.y + r.h) / 100) * height, height);
  return { x: x0, y: y0, w: Math.max(0, x1 - x0), h: Math.max(0, y1 - y0) };
}

function paint(out: Uint8ClampedArray, i: number): void {
  out[i] = PAINT_RGB[0];
  out[i + 1] = PAINT_RGB[1];
  out[i + 2] = PAINT_RGB[2];
  out[i + 3] = 255;
}
