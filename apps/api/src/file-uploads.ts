import { createHash } from 'node:crypto';
import { pipeline, Transform } from 'node:stream';
import type { Request, RequestHandler } from 'express';
import multer from 'multer';
import { invalidRequest, newId, ServiceError, tooLarge } from '@image-edits/core';
import { IMAGE_PURPOSES } from '@image-edits/edits';
import { fileKey, type ObjectStore } from '@image-edits/storage';
import { onRefusal } from './middleware/errors';
import { multipartBoundaryError } from './uploads';

/** The `file` part of POST /v1/files once it is in S3. */
export interface StoredUpload {
  fileId: string;
  key: string;
  originalName: string;
  mimetype: string;
  size: number;
  /** of the bytes, for Idempotency-Key: two uploads are the same only with the same content */
  sha256: string;
}

export const FILE_PURPOSES = ['batch', 'vision', 'user_data'] as const;
export { IMAGE_PURPOSES };

/** OpenAI's ids: `file-` and (here) a time-sorted suffix, so listings page by id. */
export const newFileId = () => `file-${newId('file').slice('file_'.length)}`;

export interface FileUploadOptions {
  store: Pick<ObjectStore, 'upload' | 'delete'>;
  maxBytes: number;
  /** the smaller limit of image purposes, applied while streaming when `purpose` came before the file */
  maxImageBytes: number;
}

/**
 * Multipart for POST /v1/files: the `file` part streams straight to S3 (`files/{id}`, a multipart
 * upload holding a few parts in memory), counted and hashed on the way. Nothing goes to disk and a
 * 200 MB JSONL never sits in memory. The object is deleted when the response ends unless the route
 * kept it (`keepStoredUpload`): a rejected, replayed or failed upload leaves nothing behind.
 */
export function fileUpload(opts: FileUploadOptions): RequestHandler {
  const storage: multer.StorageEngine = {
    _handleFile(req, file, cb) {
      // `purpose` is known here only when the client sent it before the file (curl -F in order, the Python SDK)
      const purpose = (req.body as Record<string, unknown> | undefined)?.purpose;
      if (typeof purpose === 'string' && !(FILE_PURPOSES as readonly string[]).includes(purpose)) {
        file.stream.resume();
        return cb(purposeError(purpose));
      }
      const limit = typeof purpose === 'string' && IMAGE_PURPOSES.includes(purpose) ? opts.maxImageBytes : opts.maxBytes;
      const fileId = newFileId();
      const key = fileKey(fileId);
      const hash = createHash('sha256');
      const abort = new AbortController();
      let size = 0;
      let tooBig = false;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          size += chunk.length;
          if (size > limit) {
            tooBig = true;
            return done(new Error('file too large'));
          }
          hash.update(chunk);
          done(null, chunk);
        },
      });
      // multer reports LIMIT_FILE_SIZE itself; the upload stops sending parts at once
      file.stream.on('limit', () => abort.abort());
      pipeline(file.stream, counter, (err) => {
        if (err) abort.abort();
      });
      opts.store
        .upload(key, counter, { contentType: file.mimetype || 'application/octet-stream', signal: abort.signal })
        .then(() => cb(null, { fileId, key, size, sha256: hash.digest('hex') } as Partial<Express.Multer.File>))
        .catch((err: unknown) => {
          opts.store.delete(key).catch(() => undefined);
          cb(tooBig ? tooLargeError(limit, limit < opts.maxBytes) : err);
        });
    },
    _removeFile(_req, file, cb) {
      const key = (file as unknown as { key?: string }).key;
      if (!key) return cb(null);
      opts.store.delete(key).then(() => cb(null), cb);
    },
  };
  const upload = multer({
    storage,
    limits: { fileSize: opts.maxBytes, files: 1, fields: 8, fieldSize: 1024, parts: 10 },
    fileFilter: (_req, file, cb) => {
      if (file.fieldname === 'file') cb(null, true);
      else cb(invalidRequest(`unexpected file field '${file.fieldname}'; send the file as 'file'`, file.fieldname, 'unexpected_file_field'));
    },
  }).single('file');

  return (req, res, next) => {
    if (!req.is('multipart/form-data')) {
      return next(
        new ServiceError(415, 'invalid_request_error', `Content-Type must be multipart/form-data with 'file' and 'purpose'; got '${req.get('content-type') ?? 'none'}'`, {
          code: 'unsupported_media_type',
        }),
      );
    }
    const malformed = multipartBoundaryError(req);
    if (malformed) return next(malformed);
    res.on('close', () => {
      const stored = storedUpload(req);
      if (stored && !kept.has(req)) opts.store.delete(stored.key).catch(() => undefined);
    });
    // a refused upload's object is deleted before the error answer
    onRefusal(res, async () => {
      const stored = storedUpload(req);
      if (stored && !kept.has(req)) await opts.store.delete(stored.key);
    });
    upload(req, res, (err: unknown) => next(err ? uploadError(err, opts.maxBytes) : undefined));
  };
}

const kept = new WeakSet<Request>();

/** The route recorded the file: its object stays. */
export function keepStoredUpload(req: Request): void {
  kept.add(req);
}

export function storedUpload(req: Request): StoredUpload | undefined {
  const f = req.file as (Express.Multer.File & { fileId?: string; key?: string; sha256?: string }) | undefined;
  if (!f?.key || !f.fileId) return undefined;
  return { fileId: f.fileId, key: f.key, originalName: f.originalname, mimetype: f.mimetype, size: f.size, sha256: f.sha256 ?? '' };
}

export function purposeError(purpose: unknown): ServiceError {
  return purpose === undefined || purpose === ''
    ? invalidRequest(`purpose is required: one of ${FILE_PURPOSES.join(', ')}`, 'purpose', 'missing_required_parameter')
    : invalidRequest(`purpose must be one of ${FILE_PURPOSES.map((p) => `'${p}'`).join(', ')}; got '${String(purpose)}'`, 'purpose', 'invalid_value');
}

export function tooLargeError(limit: number, image: boolean): ServiceError {
  return tooLarge(`file is larger than ${mb(limit)}, the most accepted ${image ? 'for an image (the largest any model takes)' : 'for a file'}`, 'file');
}

const mb = (b: number) => `${Math.round((b / 1024 / 1024) * 10) / 10} MB`;

function uploadError(err: unknown, maxBytes: number): unknown {
  if (err instanceof ServiceError) return err;
  if (err instanceof multer.MulterError) {
    switch (err.code) {
      case 'LIMIT_FILE_SIZE':
        return tooLargeError(maxBytes, false);
      case 'LIMIT_FILE_COUNT':
      case 'LIMIT_UNEXPECTED_FILE':
        return invalidRequest('send exactly one file, as the multipart field \'file\'', err.field ?? 'file', 'invalid_value');
      case 'LIMIT_FIELD_VALUE':
        return invalidRequest(`field ${err.field ?? ''} is too long`, err.field ?? null, 'invalid_value');
      default:
        return invalidRequest(`malformed multipart body: ${err.message}`, err.field ?? null, 'invalid_multipart');
    }
  }
  if (err instanceof Error && /Unexpected end of form|Malformed part header|Multipart: Boundary not found/i.test(err.message)) {
    return invalidRequest(`malformed multipart body: ${err.message}`, null, 'invalid_multipart');
  }
  return err;
}
