import sharp from 'sharp';
import type { InputImage } from '../types';

/**
 * OpenAI's mask convention is "fully transparent (alpha 0) = edit"; Stability, FLUX Fill (fal,
 * Replicate) want a grayscale image where white = edit and black = keep. Without a mask, the
 * canvas's own transparency is the mask (dall-e-2's rule). The result has the canvas's size.
 */
export async function whiteEditMask(canvas: InputImage, mask?: InputImage): Promise<Buffer> {
  const source = mask ?? canvas;
  let alpha = sharp(source.data).ensureAlpha().extractChannel('alpha');
  if (source.width !== canvas.width || source.height !== canvas.height) {
    alpha = sharp(await alpha.png().toBuffer()).resize(canvas.width, canvas.height, { fit: 'fill', kernel: 'nearest' });
  }
  // alpha 0 -> 255 after negate; threshold(255) keeps only fully transparent pixels as "edit"
  return alpha.negate({ alpha: false }).threshold(255).toColourspace('b-w').png().toBuffer();
}

/** Whether any pixel is marked for editing (white) in a white-edit mask. */
export async function maskHasEditRegion(whiteMask: Buffer): Promise<boolean> {
  const stats = await sharp(whiteMask).stats();
  return (stats.channels[0]?.max ?? 0) > 0;
}
