import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { type EditProvider, type ImageFormat, type OutputImage, type ProviderEditRequest, type ProviderEditResult, ProviderError } from '../types';
import { applyVariation, inpaintRgba } from './inpaint';

const PROVIDER = 'local';
const DEFAULT_QUALITY = 90;

interface Raw {
  data: Buffer;
  width: number;
  height: number;
}

/**
 * The built-in offline model (`local-inpaint`): fills the edit region by classical inpainting, or
 * erases it when a transparent background is asked for. No network, deterministic output.
 */
export function createLocalInpaintProvider(): EditProvider {
  return {
    id: PROVIDER,
    edit: (request, options) => editLocally(request, options?.signal),
  };
}

async function editLocally(request: ProviderEditRequest, signal: AbortSignal | undefined): Promise<ProviderEditResult> {
  checkAborted(signal);
  const first = request.images[0];
  if (!first) throw new ProviderError(PROVIDER, 'no input image', { code: 'invalid_image', retryable: false, status: 400 });
  const image = await decodeRgba(first.data, 'image');
  const mask = request.mask ? await decodeRgba(request.mask.data, 'mask') : undefined;
  if (mask && (mask.width !== image.width || mask.height !== image.height)) {
    throw new ProviderError(PROVIDER, `mask is ${mask.width}x${mask.height} but the image is ${image.width}x${image.height}`, {
      code: 'invalid_mask_dimensions',
      retryable: false,
      status: 400,
    });
  }
  const target = parseSize(request.size, image);
  checkAborted(signal);

  // OpenAI convention: fully transparent pixels (of the mask, or else of the image) are edited.
  const alphaSource = mask ?? image;
  const pixels = image.width * image.height;
  const editMask = new Uint8Array(pixels);
  for (let i = 0; i < pixels; i++) editMask[i] = alphaSource.data[i * 4 + 3] === 0 ? 1 : 0;

  const erase = request.background === 'transparent';
  const base = erase ? eraseRegion(image.data, editMask) : inpaintRgba(image.data, image.width, image.height, editMask);
  const format: ImageFormat = request.outputFormat ?? 'png';
  const quality = Math.max(1, Math.min(100, Math.round(request.outputCompression ?? DEFAULT_QUALITY)));
  const n = Math.max(1, request.n || 1);

  const images: OutputImage[] = [];
  for (let k = 0; k < n; k++) {
    checkAborted(signal);
    // An erased region is invisible, so there is nothing to vary; filled variants get their own seed.
    const rgba = k === 0 || erase ? base : applyVariation(base, image.width, image.height, editMask, variantSeed(request, k));
    images.push({ data: await encode(rgba, image, target, format, quality), format });
  }
  checkAborted(signal);
  return { images, usage: undefined };
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new ProviderError(PROVIDER, 'request aborted', { code: 'aborted', retryable: false });
}

async function decodeRgba(data: Buffer, what: 'image' | 'mask'): Promise<Raw> {
  try {
    // sRGB + alpha so greyscale and palette PNGs also come out as 4 channels of 8 bits
    const { data: raw, info } = await sharp(data).toColourspace('srgb').ensureAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 4) throw new Error(`decoded to ${info.channels} channels`);
    return { data: raw, width: info.width, height: info.height };
  } catch {
    // what the client can act on, not the decoder's words ("vipspng: libpng read error")
    throw new ProviderError(PROVIDER, `the ${what} could not be decoded: its pixel data is corrupt or truncated; send a complete PNG, JPEG or WEBP file`, {
      code: 'invalid_image',
      retryable: false,
      status: 400,
    });
  }
}

function parseSize(size: string | undefined, image: Raw): { width: number; height: number } {
  if (size === undefined || size === 'auto') return { width: image.width, height: image.height };
  const m = /^(\d{1,5})x(\d{1,5})$/.exec(size);
  const width = m ? Number(m[1]) : 0;
  const height = m ? Number(m[2]) : 0;
  if (width < 1 || height < 1) {
    throw new ProviderError(PROVIDER, `unsupported size '${size}'`, { code: 'invalid_size', retryable: false, status: 400 });
  }
  return { width, height };
}

/** The eraser: edited pixels become fully transparent (colour zeroed too), kept pixels stay. */
function eraseRegion(rgba: Buffer, editMask: Uint8Array): Buffer {
  const out = Buffer.from(rgba);
  for (let i = 0; i < editMask.length; i++) if (editMask[i] !== 0) out.writeUInt32LE(0, i * 4);
  return out;
}

/** Seed for variant k: the same request always varies the same way, different requests differently. */
function variantSeed(request: ProviderEditRequest, k: number): number {
  const h = createHash('sha256');
  // length prefixes keep the concatenation unambiguous
  const part = (b: Buffer | string) => {
    const buf = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(buf.length));
    h.update(len).update(buf);
  };
  part(request.images[0]?.data ?? Buffer.alloc(0));
  part(request.mask?.data ?? Buffer.alloc(0));
  part(request.prompt);
  part(String(k));
  return h.digest().readUInt32LE(0);
}

async function encode(rgba: Buffer, image: Raw, target: { width: number; height: number }, format: ImageFormat, quality: number): Promise<Buffer> {
  let pipeline = sharp(rgba, { raw: { width: image.width, height: image.height, channels: 4 } });
  if (target.width !== image.width || target.height !== image.height) {
    pipeline = pipeline.resize(target.width, target.height, { fit: 'fill' });
  }
  switch (format) {
    case 'png':
      return pipeline.png().toBuffer();
    case 'webp':
      return pipeline.webp({ quality }).toBuffer();
    case 'jpeg':
      // jpeg has no alpha: what is left transparent shows as white, as on a page
      return pipeline.flatten({ background: '#ffffff' }).jpeg({ quality }).toBuffer();
  }
}
