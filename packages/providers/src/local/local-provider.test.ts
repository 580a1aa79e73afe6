import { describe, expect, it } from '@jest/globals';
import sharp from 'sharp';
import { inRect, makeMask, makePng, pictureRgba, type Rect } from '../../../testing/src/fixtures';
import { type ProviderEditRequest, ProviderError } from '../types';
import { createLocalInpaintProvider } from './local-provider';

const SIZE = 128;
const HOLE: Rect = { x: 30, y: 40, width: 50, height: 36 };

function request(image: Buffer, extra: Partial<ProviderEditRequest> = {}): ProviderEditRequest {
  return {
    model: 'local-inpaint',
    prompt: 'a red balloon',
    images: [{ data: image, format: 'png', filename: 'image.png', width: SIZE, height: SIZE }],
    n: 1,
    ...extra,
  };
}

async function decode(buf: Buffer): Promise<{ data: Buffer; width: number; height: number; format: string | undefined }> {
  const meta = await sharp(buf).metadata();
  const { data, info } = await sharp(buf).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, format: meta.format };
}

function eachPixel(width: number, height: number, fn: (x: number, y: number, p: number) => void): void {
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) fn(x, y, (y * width + x) * 4);
}

/** Opaque pixels outside the hole, as the client sent them, must come back untouched. */
function expectKeptIdentical(out: Buffer, input: Buffer, hole: Rect): void {
  let changed = 0;
  eachPixel(SIZE, SIZE, (x, y, p) => {
    if (!inRect(x, y, hole) && out.readUInt32BE(p) !== input.readUInt32BE(p)) changed++;
  });
  expect(changed).toBe(0);
}

describe('local inpaint provider', () => {
  const provider = createLocalInpaintProvider();

  it('is the "local" provider', () => {
    expect(provider.id).toBe('local');
  });

  it('keeps unmasked pixels byte-identical and fills the transparent hole opaquely', async () => {
    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const result = await provider.edit(request(png));
    expect(result.usage).toBeUndefined();
    expect(result.images).toHaveLength(1);
    expect(result.images[0]!.format).toBe('png');

    const out = await decode(result.images[0]!.data);
    expect([out.width, out.height, out.format]).toEqual([SIZE, SIZE, 'png']);
    expectKeptIdentical(out.data, pictureRgba(SIZE, SIZE, HOLE), HOLE);
    eachPixel(SIZE, SIZE, (x, y, p) => {
      if (inRect(x, y, HOLE)) expect(out.data[p + 3]).toBe(255);
    });
  });

  it('fills a hole in a smooth gradient with the gradient', async () => {
    const raw = Buffer.alloc(SIZE * SIZE * 4);
    const truth = (x: number, y: number) => [Math.round(x * 2), Math.round(y * 1.5), Math.round(100 + x * 0.5 - y * 0.3)];
    eachPixel(SIZE, SIZE, (x, y, p) => {
      const [r, g, b] = truth(x, y);
      raw[p] = r!;
      raw[p + 1] = g!;
      raw[p + 2] = b!;
      raw[p + 3] = inRect(x, y, HOLE) ? 0 : 255;
    });
    const png = await sharp(raw, { raw: { width: SIZE, height: SIZE, channels: 4 } }).png().toBuffer();
    const out = await decode((await provider.edit(request(png))).images[0]!.data);

    let worst = 0;
    eachPixel(SIZE, SIZE, (x, y, p) => {
      if (!inRect(x, y, HOLE)) return;
      const t = truth(x, y);
      for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(out.data[p + c]! - t[c]!));
    });
    expect(worst).toBeLessThanOrEqual(3);
  });

  it('gives identical bytes for the same request', async () => {
    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const a = await provider.edit(request(png, { n: 2 }));
    const b = await provider.edit(request(Buffer.from(png), { n: 2 }));
    expect(a.images.map((i) => i.data.toString('base64'))).toEqual(b.images.map((i) => i.data.toString('base64')));
  });

  it('returns n different variants that agree outside the hole', async () => {
    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const result = await provider.edit(request(png, { n: 2 }));
    expect(result.images).toHaveLength(2);
    const [a, b] = await Promise.all(result.images.map((i) => decode(i.data)));
    expect(a!.data.equals(b!.data)).toBe(false);
    expectKeptIdentical(a!.data, b!.data, HOLE);
    expectKeptIdentical(b!.data, pictureRgba(SIZE, SIZE, HOLE), HOLE);
    eachPixel(SIZE, SIZE, (x, y, p) => {
      if (inRect(x, y, HOLE)) expect(b!.data[p + 3]).toBe(255);
    });
    // a different prompt varies differently
    const other = await provider.edit(request(png, { n: 2, prompt: 'a blue balloon' }));
    expect(other.images[0]!.data.equals(result.images[0]!.data)).toBe(true);
    expect(other.images[1]!.data.equals(result.images[1]!.data)).toBe(false);
  });

  it('edits where a separate mask is transparent, the same as transparency in the image', async () => {
    const opaque = await makePng(SIZE, SIZE);
    const mask = await makeMask(SIZE, SIZE, HOLE);
    const withMask = await decode((await provider.edit(request(opaque, { mask: { data: mask, format: 'png', filename: 'mask.png', width: SIZE, height: SIZE } }))).images[0]!.data);
    const withAlpha = await decode((await provider.edit(request(await makePng(SIZE, SIZE, { hole: HOLE })))).images[0]!.data);

    expectKeptIdentical(withMask.data, pictureRgba(SIZE, SIZE), HOLE);
    expect(withMask.data.equals(withAlpha.data)).toBe(true);
  });

  it('with a mask, ignores the image own transparency (kept as is) and edits only the mask region', async () => {
    const imageHole: Rect = { x: 90, y: 90, width: 20, height: 20 };
    const image = await makePng(SIZE, SIZE, { hole: imageHole });
    const mask = await makeMask(SIZE, SIZE, HOLE);
    const out = await decode((await provider.edit(request(image, { mask: { data: mask, format: 'png', filename: 'mask.png', width: SIZE, height: SIZE } }))).images[0]!.data);
    eachPixel(SIZE, SIZE, (x, y, p) => {
      if (inRect(x, y, imageHole)) expect(out.data[p + 3]).toBe(0);
      if (inRect(x, y, HOLE)) expect(out.data[p + 3]).toBe(255);
    });
    expectKeptIdentical(out.data, pictureRgba(SIZE, SIZE, imageHole), HOLE);
  });

  it('erases the hole to full transparency with background "transparent"', async () => {
    const opaque = await makePng(SIZE, SIZE);
    const mask = await makeMask(SIZE, SIZE, HOLE);
    const result = await provider.edit(request(opaque, { background: 'transparent', mask: { data: mask, format: 'png', filename: 'mask.png', width: SIZE, height: SIZE } }));
    const out = await decode(result.images[0]!.data);
    expectKeptIdentical(out.data, pictureRgba(SIZE, SIZE), HOLE);
    eachPixel(SIZE, SIZE, (x, y, p) => {
      if (inRect(x, y, HOLE)) expect(out.data[p + 3]).toBe(0);
    });
  });

  it('leaves no transparency in the hole with background "opaque"', async () => {
    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const out = await decode((await provider.edit(request(png, { background: 'opaque' }))).images[0]!.data);
    let minAlpha = 255;
    eachPixel(SIZE, SIZE, (_x, _y, p) => (minAlpha = Math.min(minAlpha, out.data[p + 3]!)));
    expect(minAlpha).toBe(255);
  });

  it('resizes to the requested size', async () => {
    const big = await makePng(512, 512, { hole: { x: 100, y: 100, width: 120, height: 90 } });
    const result = await provider.edit({ ...request(big, { size: '256x256' }), images: [{ data: big, format: 'png', filename: 'a.png', width: 512, height: 512 }] });
    const out = await decode(result.images[0]!.data);
    expect([out.width, out.height, out.format]).toEqual([256, 256, 'png']);
  });

  it('encodes jpeg and webp when asked', async () => {
    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const jpeg = await provider.edit(request(png, { outputFormat: 'jpeg', outputCompression: 70 }));
    expect(jpeg.images[0]!.format).toBe('jpeg');
    expect((await decode(jpeg.images[0]!.data)).format).toBe('jpeg');
    const webp = await provider.edit(request(png, { outputFormat: 'webp' }));
    expect(webp.images[0]!.format).toBe('webp');
    expect((await decode(webp.images[0]!.data)).format).toBe('webp');
    // lower quality, smaller file
    const jpegHigh = await provider.edit(request(png, { outputFormat: 'jpeg', outputCompression: 100 }));
    expect(jpegHigh.images[0]!.data.length).toBeGreaterThan(jpeg.images[0]!.data.length);
  });

  it('flattens an erased region onto white for jpeg', async () => {
    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const jpeg = await provider.edit(request(png, { outputFormat: 'jpeg', background: 'transparent', outputCompression: 100 }));
    const out = await decode(jpeg.images[0]!.data);
    const p = ((HOLE.y + 10) * SIZE + HOLE.x + 10) * 4;
    for (let c = 0; c < 3; c++) expect(out.data[p + c]).toBeGreaterThanOrEqual(245);
  });

  it('rejects when the signal is aborted', async () => {
    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const controller = new AbortController();
    controller.abort();
    const err = await provider.edit(request(png), { signal: controller.signal }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    expect(err).toMatchObject({ provider: 'local', code: 'aborted', retryable: false });
  });

  it('rejects when the signal is aborted while the edit is under way', async () => {
    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const controller = new AbortController();
    const pending = provider.edit(request(png, { n: 4 }), { signal: controller.signal });
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'aborted', retryable: false });
  });

  it('rejects a corrupt image with invalid_image', async () => {
    const err = await provider.edit(request(Buffer.from('definitely not a png, just some bytes'))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    expect(err).toMatchObject({ code: 'invalid_image', retryable: false });

    const png = await makePng(SIZE, SIZE, { hole: HOLE });
    const truncated = await provider.edit(request(png.subarray(0, png.length >> 1))).catch((e: unknown) => e);
    expect(truncated).toMatchObject({ code: 'invalid_image', retryable: false });
  });
});
