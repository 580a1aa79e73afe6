/** An uploaded input of an edit: its bytes in memory or in a temporary file. */
export interface UploadedFile {
  field: string;
  originalName: string;
  size: number;
  /** the bytes, when the upload was small enough to stay in memory */
  buffer?: Buffer;
  /** the temporary file otherwise */
  path?: string;
}

/**
 * An input image: an upload (bytes or temporary file), or a file of POST /v1/files (`objectKey`,
 * with the facts sharp read at its upload), which is copied into the job by S3 and never read here
 * unless its pixels are needed (the transparency check).
 */
export interface EditInputFile extends UploadedFile {
  objectKey?: string;
  facts?: { format: string | undefined; width: number; height: number; hasAlpha: boolean };
}

/** Multipart field names of images as OpenAI clients send them: `image`, `image[]`, `image[N]`. */
export const isImageField = (name: string) => name === 'image' || name === 'image[]' || /^image\[\d+\]$/.test(name);

/** Purposes of POST /v1/files that hold an image an edit may use by file_id. */
export const IMAGE_PURPOSES: readonly string[] = ['vision', 'user_data'];
