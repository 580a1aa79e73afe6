import { describe, expect, it } from '@jest/globals';
import { inRect, pictureRgba, type Rect } from '../../../testing/src/fixtures';
import { applyVariation, inpaintRgba } from './inpaint';

// Speed is deliberately not asserted (timings are flaky on shared CI). As a sanity note: a 1024x1024
// image with a 300x300 hole takes ~30 ms warm (~100 ms on the first, un-JITted call) on one core;
// the measurement is recorded in inpaint.ts's header comment.

/** A purely smooth picture: linear ramps in every channel, so the true value under a hole is known. */
function smoothRgba(width: number, height: number): Buffer {
  const raw = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      raw[i] = Math.round((x / (width - 1)) * 255);
      raw[i + 1] = Math.round((y / (height - 1)) * 255);
      raw[i + 2] = Math.round(40 + 0.2 * x + 0.1 * y);
      raw[i + 3] = 255;
    }
  }
  return raw;
}

function rectMask(width: number, height: number, ...rects: Rect[]): Uint8Array {
  const mask = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) if (rects.some((r) => inRect(x, y, r))) mask[y * width + x] = 1;
  return mask;
}

/** Pixel indexes where the two buffers differ in any byte, split by mask. */
function diffs(a: Buffer, b: Buffer, mask: Uint8Array): { kept: number; edited: number } {
  let kept = 0;
  let edited = 0;
  for (let i = 0; i < mask.length; i++) {
    const p = i * 4;
    if (a[p] !== b[p] || a[p + 1] !== b[p + 1] || a[p + 2] !== b[p + 2] || a[p + 3] !== b[p + 3]) {
      if (mask[i] === 0) kept++;
      else edited++;
    }
  }
  return { kept, edited };
}

describe('inpaintRgba', () => {
  const W = 128;
  const H = 128;
  const hole: Rect = { x: 40, y: 30, width: 50, height: 60 };

  it('keeps every unmasked pixel byte-identical and makes every masked pixel opaque', () => {
    const input = pictureRgba(W, H, hole);
    const before = Buffer.from(input);
    const mask = rectMask(W, H, hole);
    const out = inpaintRgba(input, W, H, mask);

    expect(out.length).toBe(input.length);
    expect(diffs(out, input, mask).kept).toBe(0);
    for (let i = 0; i < mask.length; i++) if (mask[i] === 1) expect(out[i * 4 + 3]).toBe(255);
    // the input is not touched
    expect(input.equals(before)).toBe(true);
  });

  it('continues a smooth gradient into the hole', () => {
    const truth = smoothRgba(W, H);
    const mask = rectMask(W, H, hole);
    const input = Buffer.from(truth);
    for (let i = 0; i < mask.length; i++) if (mask[i] === 1) input.writeUInt32LE(0, i * 4); // hole content is gone

    const out = inpaintRgba(input, W, H, mask);
    let worst = 0;
    for (let i = 0; i < mask.length; i++) {
      if (mask[i] === 0) continue;
      for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(out[i * 4 + c]! - truth[i * 4 + c]!));
    }
    expect(worst).toBeLessThanOrEqual(3);
  });

  it('fills a hole on the image border and an irregular hole from their surroundings', () => {
    const truth = smoothRgba(W, H);
    const corner = (x: number, y: number) => x < 20 && y >= 100;
    const disc = (x: number, y: number) => (x - 80) ** 2 + (y - 50) ** 2 < 15 ** 2;
    const mask = new Uint8Array(W * H);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (corner(x, y) || disc(x, y)) mask[y * W + x] = 1;
    const out = inpaintRgba(truth, W, H, mask);
    expect(diffs(out, truth, mask).kept).toBe(0);

    // the corner hole's colours stay within the range of the pixels bordering it (no overshoot)
    const lo = [255, 255, 255];
    const hi = [0, 0, 0];
    for (let y = 99; y < H; y++) {
      for (let x = 0; x <= 20; x++) {
        if (corner(x, y)) continue;
        for (let c = 0; c < 3; c++) {
          lo[c] = Math.min(lo[c]!, truth[(y * W + x) * 4 + c]!);
          hi[c] = Math.max(hi[c]!, truth[(y * W + x) * 4 + c]!);
        }
      }
    }
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const p = (y * W + x) * 4;
        if (!corner(x, y) && !disc(x, y)) continue;
        expect(out[p + 3]).toBe(255);
        for (let c = 0; c < 3; c++) {
          if (disc(x, y)) expect(Math.abs(out[p + c]! - truth[p + c]!)).toBeLessThanOrEqual(3);
          else {
            expect(out[p + c]).toBeGreaterThanOrEqual(lo[c]!);
            expect(out[p + c]).toBeLessThanOrEqual(hi[c]!);
          }
        }
      }
    }
  });

  it('does not take colour from transparent kept pixels', () => {
    // left half: kept but fully transparent black; right half: opaque red; the hole straddles both
    const input = Buffer.alloc(W * H * 4);
    for (let i = 0; i < W * H; i++) if (i % W >= W / 2) input.writeUInt32BE(0xff0000ff, i * 4);
    const mask = rectMask(W, H, { x: 44, y: 44, width: 40, height: 40 });
    const out = inpaintRgba(input, W, H, mask);
    expect(diffs(out, input, mask).kept).toBe(0);
    for (let i = 0; i < mask.length; i++) {
      if (mask[i] === 0) continue;
      expect([out[i * 4], out[i * 4 + 1], out[i * 4 + 2], out[i * 4 + 3]]).toEqual([255, 0, 0, 255]);
    }
  });

  it('is deterministic', () => {
    const input = pictureRgba(W, H, hole);
    const mask = rectMask(W, H, hole);
    expect(inpaintRgba(input, W, H, mask).equals(inpaintRgba(Buffer.from(input), W, H, mask))).toBe(true);
  });

  it('fills mid-grey when nothing is known', () => {
    const input = pictureRgba(16, 16);
    const out = inpaintRgba(input, 16, 16, new Uint8Array(16 * 16).fill(1));
    for (let i = 0; i < 16 * 16; i++) expect([...out.subarray(i * 4, i * 4 + 4)]).toEqual([128, 128, 128, 255]);
  });

  it('returns an unchanged copy when nothing is masked', () => {
    const input = pictureRgba(W, H);
    const out = inpaintRgba(input, W, H, new Uint8Array(W * H));
    expect(out.equals(input)).toBe(true);
    expect(out).not.toBe(input);
  });

  it('rejects buffers of the wrong size', () => {
    expect(() => inpaintRgba(Buffer.alloc(10), 4, 4, new Uint8Array(16))).toThrow(RangeError);
    expect(() => inpaintRgba(Buffer.alloc(64), 4, 4, new Uint8Array(3))).toThrow(RangeError);
  });
});

describe('applyVariation', () => {
  const W = 96;
  const H = 96;
  const hole: Rect = { x: 20, y: 24, width: 50, height: 40 };
  const mask = rectMask(W, H, hole);
  const filled = inpaintRgba(pictureRgba(W, H, hole), W, H, mask);

  it('changes only the edit region, the same way for the same seed', () => {
    const a = applyVariation(filled, W, H, mask, 1);
    const b = applyVariation(filled, W, H, mask, 2);
    expect(diffs(a, filled, mask).kept).toBe(0);
    expect(diffs(b, filled, mask).kept).toBe(0);
    expect(diffs(a, filled, mask).edited).toBeGreaterThan(0);
    expect(diffs(a, b, mask).edited).toBeGreaterThan(0);
    expect(applyVariation(filled, W, H, mask, 1).equals(a)).toBe(true);
  });

  it('fades in from the hole edge, so the fill stays continuous with the kept pixels', () => {
    const a = applyVariation(filled, W, H, mask, 7);
    for (let i = 0; i < mask.length; i++) {
      if (mask[i] === 0) continue;
      const x = i % W;
      const y = (i / W) | 0;
      const onEdge = x === hole.x || y === hole.y || x === hole.x + hole.width - 1 || y === hole.y + hole.height - 1;
      if (!onEdge) continue;
      for (let c = 0; c < 3; c++) expect(Math.abs(a[i * 4 + c]! - filled[i * 4 + c]!)).toBeLessThanOrEqual(3);
    }
  });
});
