import sharp from 'sharp';

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * A deterministic opaque test picture: a smooth gradient with a pattern, so inpainting and
 * "unchanged pixel" checks have real structure to work with. `hole` is made fully transparent.
 */
export function pictureRgba(width: number, height: number, hole?: Rect): Buffer {
  const raw = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      raw[i] = Math.round((x / Math.max(1, width - 1)) * 255);
      raw[i + 1] = Math.round((y / Math.max(1, height - 1)) * 255);
      raw[i + 2] = ((x >> 4) + (y >> 4)) % 2 === 0 ? 200 : 60;
      raw[i + 3] = inRect(x, y, hole) ? 0 : 255;
    }
  }
  return raw;
}

export async function makePng(width: number, height: number, opts: { hole?: Rect } = {}): Promise<Buffer> {
  return sharp(pictureRgba(width, height, opts.hole), { raw: { width, height, channels: 4 } }).png().toBuffer();
}

const generated = new Map<string, Promise<Buffer>>();

/**
 * The picture of `makePng` at the given size in the given format (opaque: without its alpha
 * channel), cached: the fake upstreams answer with it, and encoding 1024² images is slow.
 */
export function generatedImage(width: number, height: number, format: 'png' | 'jpeg' | 'webp', opts: { opaque?: boolean } = {}): Promise<Buffer> {
  const key = `${width}x${height}.${format}${opts.opaque ? '.opaque' : ''}`;
  let img = generated.get(key);
  if (!img) {
    img = makePng(width, height).then((png) => {
      if (format === 'png' && !opts.opaque) return png;
      const pic = opts.opaque ? sharp(png).removeAlpha() : sharp(png);
      return format === 'jpeg' ? pic.jpeg().toBuffer() : format === 'webp' ? pic.webp().toBuffer() : pic.png().toBuffer();
    });
    generated.set(key, img);
  }
  return img;
}

/** An opaque picture with no alpha channel at all, in the given format. */
export async function makeOpaque(width: number, height: number, format: 'png' | 'jpeg' | 'webp' = 'png'): Promise<Buffer> {
  const img = sharp(pictureRgba(width, height), { raw: { width, height, channels: 4 } }).removeAlpha();
  return format === 'png' ? img.png().toBuffer() : format === 'jpeg' ? img.jpeg().toBuffer() : img.webp().toBuffer();
}

/** OpenAI's mask convention: fully transparent pixels (alpha 0) mark where to edit, the rest is opaque black. */
export async function makeMask(width: number, height: number, hole: Rect): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) raw[(y * width + x) * 4 + 3] = inRect(x, y, hole) ? 0 : 255;
  }
  return sharp(raw, { raw: { width, height, channels: 4 } }).png().toBuffer();
}

export function inRect(x: number, y: number, r?: Rect): boolean {
  return !!r && x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height;
}
