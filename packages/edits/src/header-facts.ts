import { imageSize } from 'image-size';

/** What the submission checks need of an image, from its header alone. */
export interface HeaderFacts {
  format: 'png' | 'jpeg' | 'webp';
  width: number;
  height: number;
  hasAlpha: boolean;
}

/**
 * Format, size and alpha channel of a PNG, JPEG or WEBP from its first bytes, in plain JS: on the
 * submission path sharp's pipeline (its options object, a trip to the thread pool) cost more CPU
 * than any step of ours but the S3 puts and the INSERT. `hasAlpha` is what sharp's metadata says:
 * PNG colour types 4 and 6 or a well-formed tRNS chunk, WEBP's alpha flag (VP8X) or bit (VP8L). Undefined for
 * anything else or anything unusual (another format, a truncated header): the caller asks sharp.
 */
export function headerFacts(bytes: Buffer): HeaderFacts | undefined {
  let size: ReturnType<typeof imageSize>;
  try {
    size = imageSize(bytes);
  } catch {
    return undefined;
  }
  const { width, height } = size;
  if (!width || !height || size.images) return undefined;
  if (size.type === 'jpg') return { format: 'jpeg', width, height, hasAlpha: false };
  const hasAlpha = size.type === 'png' ? pngHasAlpha(bytes) : size.type === 'webp' ? webpHasAlpha(bytes) : undefined;
  if (hasAlpha === undefined) return undefined;
  return { format: size.type as 'png' | 'webp', width, height, hasAlpha };
}

/** tRNS sizes the decoder accepts: one grey sample (2 bytes), one RGB colour (6), up to a palette's 256 entries. */
const TRNS_OK: Record<number, (length: number) => boolean> = { 0: (n) => n === 2, 2: (n) => n === 6, 3: (n) => n >= 1 && n <= 256 };

/** Colour type 4 (grey + alpha) or 6 (RGBA), or a tRNS chunk the decoder accepts before the first IDAT. */
function pngHasAlpha(b: Buffer): boolean | undefined {
  // signature (8), then IHDR: length (4), type (4), width (4), height (4), bit depth (1), colour type (1)
  if (b.length < 33 || b.toString('latin1', 12, 16) !== 'IHDR') return undefined;
  const colourType = b[25]!;
  if (colourType === 4 || colourType === 6) return true;
  for (let at = 8; at + 8 <= b.length; ) {
    const length = b.readUInt32BE(at);
    const type = b.toString('latin1', at + 4, at + 8);
    if (type === 'tRNS') return TRNS_OK[colourType]?.(length) ?? false;
    if (type === 'IDAT' || type === 'IEND') return false;
    at += 12 + length;
  }
  return undefined;
}

/** RIFF....WEBP then the first chunk: VP8X carries an alpha flag, VP8L an alpha_is_used bit, VP8 (lossy, no ALPH) has none. */
function webpHasAlpha(b: Buffer): boolean | undefined {
  if (b.length < 30) return undefined;
  const chunk = b.toString('latin1', 12, 16);
  if (chunk === 'VP8 ') return false;
  if (chunk === 'VP8X') return (b[20]! & 0x10) !== 0;
  // VP8L: signature byte 0x2f, then 14 bits width-1, 14 bits height-1, 1 bit alpha_is_used (little-endian)
  if (chunk === 'VP8L' && b[20] === 0x2f) return ((b.readUInt32LE(21) >>> 28) & 1) === 1;
  return undefined;
}
