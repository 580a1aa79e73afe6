import { describe, expect, it } from '@jest/globals';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { headerFacts } from './header-facts';

/** Pixels with some fully transparent ones (alpha 0) and some opaque. */
function rgba(width: number, height: number): Buffer {
  const px = Buffer.alloc(width * height * 4);
  for (let i = 0; i < width * height; i++) px.set([i % 251, (i * 7) % 253, (i * 13) % 255, i % 3 === 0 ? 0 : 255], i * 4);
  return px;
}

const raw = (width: number, height: number, channels: 1 | 2 | 3 | 4) => {
  const src = rgba(width, height);
  const px = Buffer.alloc(width * height * channels);
  for (let i = 0; i < width * height; i++) {
    const [r, g, b, a] = src.subarray(i * 4, i * 4 + 4);
    const v = channels === 1 ? [r!] : channels === 2 ? [r!, a!] : channels === 3 ? [r!, g!, b!] : [r!, g!, b!, a!];
    px.set(v, i * channels);
  }
  const image = sharp(px, { raw: { width, height, channels } });
  // one or two channels are written as RGB unless told otherwise
  return channels <= 2 ? image.toColourspace('b-w') : image;
};

/** A grey or RGB PNG whose tRNS chunk marks one colour transparent (sharp cannot write one; built by hand). */
async function withTrns(channels: 1 | 3, length: number): Promise<Buffer> {
  const png = await raw(8, 6, channels).png({ compressionLevel: 0 }).toBuffer();
  const at = png.indexOf('IDAT') - 4;
  const chunk = Buffer.alloc(12 + length);
  chunk.writeUInt32BE(length, 0);
  chunk.write('tRNS', 4, 'latin1');
  chunk.writeUInt32BE(crc32(chunk.subarray(4, 8 + length)), 8 + length);
  return Buffer.concat([png.subarray(0, at), chunk, png.subarray(at)]);
}

const cases: [string, () => Promise<Buffer>][] = [
  ['PNG RGBA', () => raw(33, 17, 4).png().toBuffer()],
  ['PNG RGB', () => raw(33, 17, 3).png().toBuffer()],
  ['PNG grey', () => raw(20, 40, 1).png().toBuffer()],
  ['PNG grey + alpha', () => raw(20, 40, 2).png().toBuffer()],
  ['PNG palette with transparency', () => raw(16, 16, 4).png({ palette: true }).toBuffer()],
  ['PNG palette, opaque', () => raw(16, 16, 3).png({ palette: true }).toBuffer()],
  ['PNG RGB with a tRNS chunk', () => withTrns(3, 6)],
  ['PNG grey with a tRNS chunk', () => withTrns(1, 2)],
  // a tRNS of the wrong size is dropped by the decoder: no alpha
  ['PNG RGB with a malformed tRNS chunk', () => withTrns(3, 2)],
  ['JPEG', () => raw(64, 48, 3).jpeg().toBuffer()],
  ['JPEG, progressive', () => raw(64, 48, 3).jpeg({ progressive: true }).toBuffer()],
  ['WEBP lossy', () => raw(30, 20, 3).webp().toBuffer()],
  ['WEBP lossy with alpha', () => raw(30, 20, 4).webp().toBuffer()],
  ['WEBP lossless with alpha', () => raw(30, 20, 4).webp({ lossless: true }).toBuffer()],
  ['WEBP lossless, opaque', () => raw(30, 20, 3).webp({ lossless: true }).toBuffer()],
  ['WEBP with EXIF (VP8X)', () => raw(30, 20, 3).webp().withMetadata({ exif: { IFD0: { Copyright: 'x' } } }).toBuffer()],
];

describe('headerFacts', () => {
  it.each(cases)('%s: format, size and alpha agree with sharp', async (_name, make) => {
    const bytes = await make();
    const meta = await sharp(bytes).metadata();
    expect(headerFacts(bytes)).toEqual({ format: meta.format, width: meta.width, height: meta.height, hasAlpha: meta.hasAlpha });
  });

  it('leaves other formats and broken headers to sharp (undefined)', async () => {
    const gif = await raw(10, 10, 3).gif().toBuffer();
    const png = await raw(10, 10, 4).png().toBuffer();
    expect(headerFacts(gif)).toBeUndefined();
    expect(headerFacts(Buffer.from('not an image at all, just text'))).toBeUndefined();
    expect(headerFacts(png.subarray(0, 20))).toBeUndefined();
    // a palette PNG cut before its first IDAT: whether a tRNS follows is unknown
    const palette = await raw(16, 16, 3).png({ palette: true }).toBuffer();
    expect(headerFacts(palette.subarray(0, palette.indexOf('PLTE') + 8))).toBeUndefined();
  });
});
