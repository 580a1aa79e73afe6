import sharp from 'sharp';
import type { ImageFormat, OutputImage } from '../types';

/** The real format of image bytes, from their magic numbers (upstreams' content types are not trusted). */
export function sniffFormat(b: Buffer): ImageFormat | undefined {
  if (b.length >= 8 && b.readUInt32BE(0) === 0x89504e47 && b.readUInt32BE(4) === 0x0d0a1a0a) return 'png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 12 && b.toString('ascii', 0, 4) === 'RIFF' && b.toString('ascii', 8, 12) === 'WEBP') return 'webp';
  return undefined;
}

export interface Size {
  width: number;
  height: number;
}

/**
 * `WxH` as an exact size; `auto`/undefined: none (the provider's own size is kept). Null when the
 * value is not a size: the caller refuses it with its own provider's error.
 */
export function parseExactSize(size: string | undefined): Size | undefined | null {
  if (size === undefined || size === 'auto') return undefined;
  const m = /^(\d{1,5})x(\d{1,5})$/.exec(size);
  const width = Number(m?.[1] ?? 0);
  const height = Number(m?.[2] ?? 0);
  return width >= 1 && height >= 1 ? { width, height } : null;
}

/**
 * For providers that keep the input's dimensions: the exact `WxH` the client asked for, stretched
 * when only the scale differs (same aspect ratio), otherwise scaled to cover and centre-cropped so
 * nothing is distorted. Re-encoded in the image's own format.
 */
export async function resizeToCover(image: OutputImage, target: Size): Promise<OutputImage> {
  const meta = await sharp(image.data).metadata();
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  if (width === target.width && height === target.height) return image;
  const sameAspect = width > 0 && height > 0 && Math.abs(width / height - target.width / target.height) <= 0.01 * (target.width / target.height);
  const resized = sharp(image.data).resize(target.width, target.height, { fit: sameAspect ? 'fill' : 'cover' });
  const encoded = image.format === 'jpeg' ? resized.jpeg() : image.format === 'webp' ? resized.webp() : resized.png();
  return { data: await encoded.toBuffer(), format: image.format };
}

/**
 * `text` when it is exactly the canonical base64 of `bytes` (what it decoded to), else undefined:
 * then it can be handed to a client as is. Node's decoder skips what is not base64 and takes the
 * URL-safe alphabet too, so the text is held to the canonical length (no character skipped, no
 * padding missing), its last group to the encoding of the last bytes (padding and spare bits), and
 * '-' and '_' are refused. As strict as encoding again and comparing, for a fraction of its cost.
 */
export function canonicalBase64(text: string, bytes: Buffer): string | undefined {
  if (text.length !== 4 * Math.ceil(bytes.length / 3)) return undefined;
  const last = bytes.length % 3 || 3;
  if (bytes.length > 0 && !text.endsWith(bytes.subarray(bytes.length - last).toString('base64'))) return undefined;
  if (text.includes('-') || text.includes('_')) return undefined;
  return text;
}
