import { describe, expect, it } from '@jest/globals';
import { coverage, hasTransparency, invertOverlay, maskToOverlay, overlayToMask, percentRect } from './mask-data';

/** RGBA pixels from alphas (colour 255,48,48 where alpha is set). */
const overlay = (alphas: number[]) => new Uint8ClampedArray(alphas.flatMap((a) => (a ? [255, 48, 48, a] : [0, 0, 0, 0])));
const alphas = (rgba: Uint8ClampedArray) => [...rgba].filter((_, i) => i % 4 === 3);

describe('mask pixels', () => {
  it("exports OpenAI's convention: transparent where painted, opaque black elsewhere (antialiased edges split at half)", () => {
    const mask = overlayToMask(overlay([255, 0, 200, 100, 128, 127]));
    expect(alphas(mask)).toEqual([0, 255, 0, 255, 0, 255]);
    // colour channels are black everywhere
    expect([...mask].filter((_, i) => i % 4 !== 3).every((v) => v === 0)).toBe(true);
  });

  it('an uploaded mask shows painted where it is transparent, and round-trips', () => {
    const uploaded = new Uint8ClampedArray([0, 0, 0, 0, 0, 0, 0, 255, 10, 20, 30, 50, 0, 0, 0, 200]);
    const o = maskToOverlay(uploaded);
    expect(alphas(o)).toEqual([255, 0, 255, 0]);
    expect(alphas(overlayToMask(o))).toEqual([0, 255, 0, 255]);
  });

  it('invert swaps painted and unpainted; coverage counts painted pixels', () => {
    const o = overlay([255, 0, 0, 0]);
    expect(coverage(o)).toBe(0.25);
    expect(alphas(invertOverlay(o))).toEqual([0, 255, 255, 255]);
    expect(coverage(invertOverlay(o))).toBe(0.75);
    expect(coverage(new Uint8ClampedArray(0))).toBe(0);
  });

  it('tells an image with transparent pixels', () => {
    expect(hasTransparency(new Uint8ClampedArray([1, 2, 3, 255, 4, 5, 6, 255]))).toBe(false);
    expect(hasTransparency(new Uint8ClampedArray([1, 2, 3, 255, 4, 5, 6, 254]))).toBe(true);
  });

  it('turns a rectangle in percent into clamped pixel bounds', () => {
    expect(percentRect(200, 100, { x: 25, y: 10, w: 50, h: 50 })).toEqual({ x: 50, y: 10, w: 100, h: 50 });
    expect(percentRect(200, 100, { x: 90, y: 90, w: 50, h: 50 })).toEqual({ x: 180, y: 90, w: 20, h: 10 });
    expect(percentRect(200, 100, { x: -10, y: 0, w: 5, h: 100 })).toEqual({ x: 0, y: 0, w: 0, h: 100 });
  });
});
