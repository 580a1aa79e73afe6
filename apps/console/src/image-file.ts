import { hasTransparency } from './mask-data';

/** A picked image with what the form needs to know about it. */
export interface PickedImage {
  file: File;
  url: string;
  width: number;
  height: number;
  /** png, jpeg, webp (from the file's type), or what else it is */
  format: string;
  transparent: boolean;
}

export const IMAGE_TYPES = 'image/png,image/jpeg,image/webp';

export async function readImage(file: File): Promise<PickedImage> {
  const bitmap = await createImageBitmap(file);
  try {
    const { width, height } = bitmap;
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
    ctx.drawImage(bitmap, 0, 0);
    const format = file.type.replace(/^image\//, '') || file.name.split('.').pop()?.toLowerCase() || 'unknown';
    // JPEG has no alpha: no need to look
    const transparent = format === 'jpeg' ? false : hasTransparency(ctx.getImageData(0, 0, width, height).data);
    return { file, url: URL.createObjectURL(file), width, height, format: format === 'jpg' ? 'jpeg' : format, transparent };
  } finally {
    bitmap.close();
  }
}

/** The image re-encoded as PNG (for models that take PNG only), same size: the mask still fits. */
export async function toPng(img: PickedImage): Promise<File> {
  const bitmap = await createImageBitmap(img.file);
  const canvas = document.createElement('canvas');
  canvas.width = img.width;
  canvas.height = img.height;
  canvas.getContext('2d')!.drawImage(bitmap, 0, 0);
  bitmap.close();
  const blob = await canvasBlob(canvas, 'image/png');
  return new File([blob], img.file.name.replace(/\.[^.]+$/, '') + '.png', { type: 'image/png' });
}

/** The centre square of the image, as PNG (for models that take square images only). */
export async function cropSquare(img: PickedImage): Promise<File> {
  const side = Math.min(img.width, img.height);
  const bitmap = await createImageBitmap(img.file);
  const canvas = document.createElement('canvas');
  canvas.width = side;
  canvas.height = side;
  canvas.getContext('2d')!.drawImage(bitmap, Math.floor((img.width - side) / 2), Math.floor((img.height - side) / 2), side, side, 0, 0, side, side);
  bitmap.close();
  const blob = await canvasBlob(canvas, 'image/png');
  return new File([blob], img.file.name.replace(/\.[^.]+$/, '') + '-square.png', { type: 'image/png' });
}

function canvasBlob(canvas: HTMLCanvasElement, type: string): Promise<Blob> {
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('the image could not be encoded'))), type));
}

/** `data:` URL of a base64 image of the given format. */
export function b64Url(b64: string, format = 'png'): string {
  return `data:image/${format};base64,${b64}`;
}

/** A Blob of a base64 image (for downloads). */
export function b64Blob(b64: string, format = 'png'): Blob {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type: `image/${format}` });
}
