import type { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { Upload } from '@aws-sdk/lib-storage';

export interface S3Config {
  /** AWS_ENDPOINT_URL_S3; unset means real AWS S3 */
  endpoint?: string;
  region: string;
  bucket: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** path-style URLs: needed by s3rver and MinIO */
  forcePathStyle: boolean;
}

/** The narrow object-store interface the rest of the service uses; no AWS type crosses it. */
export interface ObjectStore {
  readonly bucket: string;
  put(key: string, body: Buffer | Readable, opts: { contentType: string; contentLength?: number }): Promise<void>;
  getBuffer(key: string): Promise<Buffer>;
  presignGet(key: string, expiresInSeconds: number): Promise<string>;
  deletePrefix(prefix: string): Promise<number>;
  /** one page of keys under `prefix`, in key order, after `startAfter` */
  listKeys(prefix: string, opts?: { startAfter?: string; maxKeys?: number }): Promise<{ keys: string[]; truncated: boolean }>;
  /** a stream of unknown length, as a multipart upload: at most 4 parts of 5 MB are held in memory */
  upload(key: string, body: Readable, opts: { contentType: string; signal?: AbortSignal }): Promise<void>;
  /** the object as a stream; ObjectNotFoundError when there is none */
  getStream(key: string): Promise<{ body: Readable; contentType: string | undefined; contentLength: number | undefined }>;
  /** server-side copy (no bytes pass through here); ObjectNotFoundError when the source is gone */
  copy(fromKey: string, toKey: string): Promise<void>;
  delete(key: string): Promise<void>;
  ensureBucket(): Promise<void>;
  ping(): Promise<void>;
  destroy(): void;
}

export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`no object ${key}`);
    this.name = 'ObjectNotFoundError';
  }
}

const isNotFound = (err: unknown) => {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
};

export function createObjectStore(cfg: S3Config): ObjectStore {
  const client = new S3Client({
    region: cfg.region,
    ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}),
    forcePathStyle: cfg.forcePathStyle,
    ...(cfg.accessKeyId && cfg.secretAccessKey ? { credentials: { accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey } } : {}),
    // Without these the SDK streams bodies with aws-chunked framing and trailing checksums, which
    // s3rver stores verbatim (corrupting the object). Checksums stay on where the API requires them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // resolve each command's middleware stack once, not on every call (no per-command middleware here)
    cacheMiddleware: true,
  });
  const Bucket = cfg.bucket;

  return {
    bucket: Bucket,
    async put(key, body, opts) {
      await client.send(
        new PutObjectCommand({ Bucket, Key: key, Body: body, ContentType: opts.contentType, ...(opts.contentLength !== undefined ? { ContentLength: opts.contentLength } : {}) }),
      );
    },
    async getBuffer(key) {
      const out = await client.send(new GetObjectCommand({ Bucket, Key: key }));
      if (!out.Body) throw new Error(`object ${key} has no body`);
      const bytes = await out.Body.transformToByteArray();
      // a view, not a copy: outputs can be many megabytes
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
    presignGet(key, expiresInSeconds) {
      return getSignedUrl(client, new GetObjectCommand({ Bucket, Key: key }), { expiresIn: expiresInSeconds });
    },
    async deletePrefix(prefix) {
      let deleted = 0;
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken: token }));
        const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
        if (keys.length > 0) {
          await client.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys } }));
          deleted += keys.length;
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return deleted;
    },
    async listKeys(prefix, opts = {}) {
      const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ...(opts.startAfter ? { StartAfter: opts.startAfter } : {}), MaxKeys: opts.maxKeys ?? 1000 }));
      return { keys: (page.Contents ?? []).flatMap((o) => (o.Key ? [o.Key] : [])), truncated: page.IsTruncated ?? false };
    },
    async upload(key, body, opts) {
      const upload = new Upload({ client, params: { Bucket, Key: key, Body: body, ContentType: opts.contentType }, queueSize: 4, partSize: 5 * 1024 * 1024 });
      const abort = () => void upload.abort();
      opts.signal?.addEventListener('abort', abort, { once: true });
      try {
        await upload.done();
      } finally {
        opts.signal?.removeEventListener('abort', abort);
      }
    },
    async getStream(key) {
      try {
        const out = await client.send(new GetObjectCommand({ Bucket, Key: key }));
        if (!out.Body) throw new Error(`object ${key} has no body`);
        return { body: out.Body as Readable, contentType: out.ContentType, contentLength: out.ContentLength };
      } catch (err) {
        if (isNotFound(err)) throw new ObjectNotFoundError(key);
        throw err;
      }
    },
    async copy(fromKey, toKey) {
      try {
        await client.send(new CopyObjectCommand({ Bucket, Key: toKey, CopySource: `${Bucket}/${fromKey.split('/').map(encodeURIComponent).join('/')}` }));
      } catch (err) {
        if (isNotFound(err)) throw new ObjectNotFoundError(fromKey);
        throw err;
      }
    },
    async delete(key) {
      await client.send(new DeleteObjectCommand({ Bucket, Key: key }));
    },
    async ensureBucket() {
      try {
        await client.send(new HeadBucketCommand({ Bucket }));
      } catch {
        try {
          await client.send(new CreateBucketCommand({ Bucket }));
        } catch (err) {
          // another replica may have created it between the two calls
          const name = (err as { name?: string }).name;
          if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
        }
      }
    },
    async ping() {
      await client.send(new HeadBucketCommand({ Bucket }));
    },
    destroy() {
      client.destroy();
    },
  };
}
