import { rm } from 'node:fs/promises';
import type { Response } from 'express';
import { MAX_UPLOAD_BYTES } from './uploads';

/**
 * The HTTP side of the JSON form of edits: its body limit and the request's temporary files. The
 * form itself (file_id / data: / https references resolved into an edit's inputs) lives in
 * @image-edits/edits, which batches use too.
 */

/** A JSON body carries at most one image at the largest size any model takes, base64 (4/3), plus the fields. */
export const MAX_JSON_EDIT_BYTES = Math.ceil((MAX_UPLOAD_BYTES * 4) / 3) + 1024 * 1024;

/** Temporary files of one request (fetched image_urls): deleted when the response ends, or earlier. */
export function tempFiles(res: Response): { add(path: string): void; release(): void } {
  const paths: string[] = [];
  const release = () => {
    for (const p of paths.splice(0)) rm(p, { force: true }).catch(() => undefined);
  };
  res.on('close', release);
  return { add: (p) => paths.push(p), release };
}
