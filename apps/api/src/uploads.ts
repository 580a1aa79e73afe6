import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import multer from 'multer';
import { FAMILY_CAPABILITIES, invalidRequest, ServiceError, tooLarge } from '@image-edits/core';
import { isImageField, type UploadedFile } from '@image-edits/edits';
import { onRefusal } from './middleware/errors';
import { hybridStorage, MAX_IN_MEMORY_REQUEST_BYTES, type MemoryBudget, processMemoryBudget } from './upload-storage';

export { isImageField, type UploadedFile };

/** The largest file any model accepts: the per-model limit is checked after parsing, when the model is known. */
export const MAX_UPLOAD_BYTES = Math.max(...Object.values(FAMILY_CAPABILITIES).map((c) => c.maxImageBytes));
const MAX_FILES = Math.max(...Object.values(FAMILY_CAPABILITIES).map((c) => c.maxImages)) + 1;

export interface UploadOptions {
  budget?: MemoryBudget;
  maxInMemoryRequestBytes?: number;
}

/**
 * Multipart parsing with bounded memory: a small request's files stay in memory (no temporary file to
 * write, read back and delete), a large one's go to temporary files (see upload-storage.ts).
 * Field names as OpenAI clients send them: `image`, `image[]`, repeated `image`, `image[N]`, `mask`.
 */
export function multipartUpload(uploadDir: string, opts: UploadOptions = {}): RequestHandler {
  mkdirSync(uploadDir, { recursive: true });
  const hybrid = hybridStorage({
    dir: uploadDir,
    filename: () => randomUUID(),
    budget: opts.budget ?? processMemoryBudget,
    maxRequestBytes: opts.maxInMemoryRequestBytes ?? MAX_IN_MEMORY_REQUEST_BYTES,
  });
  const upload = multer({
    storage: hybrid.storage,
    limits: { fileSize: MAX_UPLOAD_BYTES + 1, files: MAX_FILES, fields: 64, fieldSize: 256 * 1024, parts: 128 },
    fileFilter: (_req, file, cb) => {
      if (isImageField(file.fieldname) || file.fieldname === 'mask') cb(null, true);
      // OpenAI's guide overlay (GPT Image 2.5): no model served here takes it
      else if (file.fieldname === 'markup') cb(invalidRequest('markup is not supported by the models served here; send the region to edit as mask', 'markup', 'unsupported_parameter'));
      else cb(invalidRequest(`unexpected file field '${file.fieldname}'; send images as 'image' (or 'image[]') and the mask as 'mask'`, file.fieldname, 'unexpected_file_field'));
    },
  }).any();

  return (req, res, next) => {
    const malformed = multipartBoundaryError(req);
    if (malformed) return next(malformed);
    hybrid.admit(req);
    releasers.set(req, () => hybrid.release(req));
    // whatever happened, the uploads go when the response ends (or earlier: releaseUploads); a refused request's before its answer
    res.on('close', () => releaseUploads(req));
    onRefusal(res, () => discardUploads(req));
    upload(req, res, (err: unknown) => next(err ? multerError(err) : undefined));
  };
}

/**
 * A multipart Content-Type without a usable boundary (RFC 2046: 1 to 70 characters): busboy would
 * read an empty `boundary=` as an empty form, and the client would hear about missing fields instead.
 */
export function multipartBoundaryError(req: Request): ServiceError | undefined {
  const m = /;\s*boundary\s*=\s*(?:"([^"]*)"|([^;\s]*))/i.exec(req.get('content-type') ?? '');
  const boundary = m?.[1] ?? m?.[2] ?? '';
  if (boundary.length >= 1 && boundary.length <= 70) return undefined;
  return invalidRequest(
    'malformed multipart body: Content-Type multipart/form-data needs a boundary parameter of 1 to 70 characters (boundary=...), the one that separates the parts',
    'Content-Type',
    'invalid_multipart',
  );
}

const releasers = new WeakMap<Request, () => void>();

/**
 * Drops the request's uploads: temporary files deleted (rm with force ignores the missing), buffers
 * let go and their bytes returned to the budget. Safe to call more than once; the route calls it as
 * soon as the inputs are stored, so a sync request does not hold them while it waits.
 */
export function releaseUploads(req: Request): void {
  for (const f of uploadedFiles(req)) if (f.path) rm(f.path, { force: true }).catch(() => undefined);
  req.files = [];
  releasers.get(req)?.();
}

/** releaseUploads, finished: the temporary files are gone when it resolves. */
async function discardUploads(req: Request): Promise<void> {
  const paths = uploadedFiles(req).flatMap((f) => (f.path ? [f.path] : []));
  releaseUploads(req);
  await Promise.all(paths.map((p) => rm(p, { force: true })));
}

export function uploadedFiles(req: Request): UploadedFile[] {
  const files = (req.files ?? []) as Express.Multer.File[];
  return files.map((f) => ({
    field: f.fieldname,
    originalName: f.originalname,
    size: f.size,
    ...(f.buffer ? { buffer: f.buffer } : {}),
    ...(f.path ? { path: f.path } : {}),
  }));
}

function multerError(err: unknown): unknown {
  if (err instanceof ServiceError) return err;
  if (err instanceof multer.MulterError) {
    const field = err.field ?? null;
    switch (err.code) {
      case 'LIMIT_FILE_SIZE':
        return tooLarge(`${field ?? 'file'} is larger than ${MAX_UPLOAD_BYTES / 1024 / 1024} MB, the most any model accepts`, field);
      case 'LIMIT_FILE_COUNT':
        return invalidRequest(`too many files: at most ${MAX_FILES - 1} images and one mask`, 'image', 'too_many_images');
      case 'LIMIT_FIELD_VALUE':
        return tooLarge(`field ${field ?? ''} is too long`, field);
      default:
        return invalidRequest(`malformed multipart body: ${err.message}`, field, 'invalid_multipart');
    }
  }
  if (err instanceof Error && /Unexpected end of form|Malformed part header|Multipart: Boundary not found/i.test(err.message)) {
    return invalidRequest(`malformed multipart body: ${err.message}`, null, 'invalid_multipart');
  }
  return err;
}
