import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Router } from 'express';
import sharp from 'sharp';
import { fileIdParams, fileUploadFieldsSchema, invalidRequest, listFilesQuery, MAX_FILE_EXPIRES_SECONDS, notFound, parseInput } from '@image-edits/core';
import { undecodableImage } from '@image-edits/edits';
import { deleteFileForKey, type FileImageFacts, type FileRecord, getFileForKey, insertFile, listFiles } from '@image-edits/db';
import { CONTENT_TYPES, fileKey, ObjectNotFoundError, type ObjectStore } from '@image-edits/storage';
import type { ApiDeps } from '../deps';
import { fileUpload, IMAGE_PURPOSES, keepStoredUpload, storedUpload, tooLargeError } from '../file-uploads';
import { apiKeyId } from '../middleware/auth';
import { idempotency, multipartDigest } from '../middleware/idempotency';
import { MAX_UPLOAD_BYTES } from '../uploads';

/** OpenAI: batch files expire after 30 days unless told otherwise; other files are kept until deleted. */
const BATCH_DEFAULT_EXPIRES_SECONDS = MAX_FILE_EXPIRES_SECONDS;
const MAX_LIST_LIMIT = 10_000;

/**
 * OpenAI's Files API: upload (`file` + `purpose`, optional `expires_after`), list with a cursor,
 * read, download (streamed from S3), delete. Files belong to the API key; another key's id, or an
 * expired file, is "not found". Images (purposes vision, user_data) are checked with sharp at upload
 * and their header facts kept, so an edit can use them by `file_id` without reading them again.
 */
export function filesRouter(deps: ApiDeps): Router {
  const router = Router();
  const store = deps.store;
  mkdirSync(deps.uploadDir, { recursive: true });

  const replayable = idempotency(deps, {
    // the form fields and the bytes (hashed while streaming): the same key with other content is a 422
    hash: async (req) =>
      createHash('sha256')
        .update(await multipartDigest(req, []))
        .update(storedUpload(req)?.sha256 ?? '')
        .digest('hex'),
  });

  router.post('/v1/files', fileUpload({ store, maxBytes: deps.config.env.MAX_FILE_BYTES, maxImageBytes: Math.min(MAX_UPLOAD_BYTES, deps.config.env.MAX_FILE_BYTES) }), replayable, async (req, res) => {
    let purpose: string;
    let expiresSeconds: number | undefined;
    try {
      const fields = parseInput(fileUploadFieldsSchema, req.body ?? {});
      purpose = fields.purpose;
      expiresSeconds = fields.expires_after?.seconds ?? (purpose === 'batch' ? BATCH_DEFAULT_EXPIRES_SECONDS : undefined);
    } catch (err) {
      // a refused upload is gone before the client hears why
      const stored = storedUpload(req);
      if (stored) await store.delete(stored.key);
      throw err;
    }
    const upload = storedUpload(req);
    if (!upload) throw invalidRequest("file is required: send it as the multipart field 'file'", 'file', 'missing_required_parameter');

    let image: FileImageFacts | null = null;
    let contentType = 'application/jsonl';
    if (IMAGE_PURPOSES.includes(purpose)) {
      try {
        if (upload.size > MAX_UPLOAD_BYTES) throw tooLargeError(MAX_UPLOAD_BYTES, true);
        image = await readImageFacts(store, upload.key, deps.uploadDir, deps.config.env.MAX_INPUT_PIXELS);
      } catch (err) {
        // a refused image is gone before the client hears why, not some time after
        await store.delete(upload.key);
        throw err;
      }
      contentType = CONTENT_TYPES[image.format]!;
    }
    const now = new Date();
    const file = await insertFile(deps.db, {
      id: upload.fileId,
      apiKeyId: apiKeyId(res.locals),
      filename: upload.originalName,
      purpose,
      bytes: upload.size,
      contentType,
      image,
      expiresAt: expiresSeconds === undefined ? null : new Date(now.getTime() + expiresSeconds * 1000),
    });
    keepStoredUpload(req);
    res.json(fileObject(file));
  });

  router.get('/v1/files', async (req, res) => {
    const q = parseInput(listFilesQuery, req.query);
    const page = await listFiles(deps.db, apiKeyId(res.locals), { limit: q.limit ?? MAX_LIST_LIMIT, after: q.after, order: q.order ?? 'desc', purpose: q.purpose });
    const data = page.files.map(fileObject);
    res.json({ object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore });
  });

  router.get('/v1/files/:id', async (req, res) => {
    res.json(fileObject(await ownFile(deps, req.params.id, apiKeyId(res.locals))));
  });

  router.get('/v1/files/:id/content', async (req, res) => {
    const file = await ownFile(deps, req.params.id, apiKeyId(res.locals));
    let object: Awaited<ReturnType<ObjectStore['getStream']>>;
    try {
      object = await store.getStream(fileKey(file.id));
    } catch (err) {
      // deleted between the row read and now
      if (err instanceof ObjectNotFoundError) throw fileNotFound(file.id);
      throw err;
    }
    res.set('content-type', file.contentType);
    res.set('content-length', String(object.contentLength ?? file.bytes));
    res.set('content-disposition', `attachment; filename*=UTF-8''${encodeURIComponent(file.filename)}`);
    // streamed: a client that goes away stops the read from S3
    await pipeline(object.body, res).catch((err: unknown) => {
      if (!res.headersSent) throw err;
      req.log?.warn({ err, fileId: file.id }, 'file download ended early');
      res.destroy();
    });
  });

  router.delete('/v1/files/:id', async (req, res) => {
    const key = apiKeyId(res.locals);
    const file = await ownFile(deps, req.params.id, key);
    // the object first: a failure leaves the row, so the client's retry deletes both
    await store.delete(fileKey(file.id));
    await deleteFileForKey(deps.db, file.id, key);
    res.json({ id: file.id, object: 'file', deleted: true });
  });

  return router;
}

/** The file object, in OpenAI's shape. */
export function fileObject(f: FileRecord) {
  return {
    id: f.id,
    object: 'file' as const,
    bytes: f.bytes,
    created_at: Math.floor(f.createdAt.getTime() / 1000),
    expires_at: f.expiresAt ? Math.floor(f.expiresAt.getTime() / 1000) : null,
    filename: f.filename,
    purpose: f.purpose,
    status: 'processed' as const,
  };
}

export const isFileId = (id: string) => fileIdParams.shape.id.safeParse(id).success;

export const fileNotFound = (id: string) => notFound(`No such File object: ${id}`, 'id', 'file_not_found');

async function ownFile(deps: Pick<ApiDeps, 'db'>, id: string, key: string): Promise<FileRecord> {
  // an id that is no file id names no file
  const file = isFileId(id) ? await getFileForKey(deps.db, id, key) : null;
  if (!file) throw fileNotFound(id);
  return file;
}

/**
 * The stored object's header read by sharp (its real format and size), then its pixels decoded once,
 * within the pixel limit: an image no edit could read is refused now, not at every edit that names
 * it. It goes through a temporary file, since sharp holds a streamed input whole in memory.
 */
async function readImageFacts(store: Pick<ObjectStore, 'getStream'>, key: string, dir: string, maxPixels: number): Promise<FileImageFacts> {
  const tmp = path.join(dir, `file-check-${randomUUID()}`);
  try {
    await pipeline((await store.getStream(key)).body, createWriteStream(tmp));
    const meta = await sharp(tmp).metadata().catch(() => undefined);
    const format = meta?.format;
    if (format !== 'png' && format !== 'jpeg' && format !== 'webp') {
      throw invalidRequest(`an image file (purpose vision or user_data) must be PNG, JPEG or WEBP; the uploaded file is ${format ? `a ${format.toUpperCase()} image` : 'not a readable image'}`, 'file', 'invalid_image_format');
    }
    const width = meta?.width ?? 0;
    const height = meta?.height ?? 0;
    // judged on the header, before decoding: a decompression bomb costs nothing
    if (width * height > maxPixels) throw invalidRequest(`the image is ${width}x${height}; at most ${maxPixels} pixels are accepted`, 'file', 'image_too_many_pixels');
    try {
      await sharp(tmp, { limitInputPixels: maxPixels }).stats();
    } catch {
      throw undecodableImage('file');
    }
    return { format, width, height, hasAlpha: meta?.hasAlpha ?? false };
  } finally {
    await rm(tmp, { force: true });
  }
}
