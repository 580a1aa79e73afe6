import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import multer from 'multer';
import { invalidRequest, KNOWN_MODELS, ServiceError, tooLarge } from '@image-edits/core';

/** The largest file any model accepts: the per-model limit is checked after parsing, when the model is known. */
export const MAX_UPLOAD_BYTES = Math.max(...Object.values(KNOWN_MODELS).map((c) => c.maxImageBytes));
const MAX_FILES = Math.max(...Object.values(KNOWN_MODELS).map((c) => c.maxImages)) + 1;

export interface UploadedFile {
  field: string;
  originalName: string;
  path: string;
  size: number;
}

/**
 * Multipart parsing straight to temporary files, so a 50 MB upload never sits whole in memory.
 * Field names as OpenAI clients send them: `image`, `image[]`, repeated `image`, `image[N]`, `mask`.
 */
export function multipartUpload(uploadDir: string): RequestHandler {
  mkdirSync(uploadDir, { recursive: true });
  const upload = multer({
    storage: multer.diskStorage({ destination: uploadDir, filename: (_req, _file, cb) => cb(null, randomUUID()) }),
    limits: { fileSize: MAX_UPLOAD_BYTES + 1, files: MAX_FILES, fields: 64, fieldSize: 256 * 1024, parts: 128 },
    fileFilter: (_req, file, cb) => {
      if (isImageField(file.fieldname) || file.fieldname === 'mask') cb(null, true);
      else cb(invalidRequest(`unexpected file field '${file.fieldname}'; send images as 'image' (or 'image[]') and the mask as 'mask'`, file.fieldname, 'unexpected_file_field'));
    },
  }).any();

  return (req, res, next) => {
    // temporary files go when the response ends, whatever happened; rm with force ignores the missing
    res.on('close', () => {
      for (const f of uploadedFiles(req)) rm(f.path, { force: true }).catch(() => undefined);
    });
    upload(req, res, (err: unknown) => next(err ? multerError(err) : undefined));
  };
}

export const isImageField = (name: string) => name === 'image' || name === 'image[]' || /^image\[\d+\]$/.test(name);

export function uploadedFiles(req: Request): UploadedFile[] {
  const files = (req.files ?? []) as Express.Multer.File[];
  return files.map((f) => ({ field: f.fieldname, originalName: f.originalname, path: f.path, size: f.size }));
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
