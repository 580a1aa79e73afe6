import type { Readable } from 'node:stream';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { Upload } from '@aws-sdk/lib-storage';
import { createFastPath } from './fast-path';

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
  /** deletes these keys (1000 per request); a key that is not there is no error */
  deleteMany(keys: string[]): Promise<void>;
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
    // a store that does not answer fails in seconds (then the SDK's own retries), instead of holding the
    // caller for good; requestTimeout is the socket's idle time, not the length of a transfer
    requestHandler: { connectionTimeout: 3000, requestTimeout: 20_000 },
  });
  // Bytes in memory are signed UNSIGNED-PAYLOAD, as the SDK already signs every streamed body (a
  // spooled upload, a multipart part): hashing each body with SHA-256 for the signature was the
  // largest single CPU cost of a put. The Content-Length stays signed; TLS guards the bytes to S3.
  client.middlewareStack.add(
    (next) => (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown } | undefined;
      if (request?.headers && request.body instanceof Uint8Array) request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      return next(args);
    },
    { step: 'build', name: 'unsignedPayloadForBytes' },
  );
  const Bucket = cfg.bucket;
  // put and getBuffer try one plain signed request first (fast-path.ts); anything but success goes through the SDK
  const fast = createFastPath(client, cfg);
  /**
   * One page of keys after `after` (ListObjects with a marker). Not ListObjectsV2: s3rver (the
   * embedded S3) makes V2's continuation token with DES, which Node 20's OpenSSL lacks, so every
   * truncated V2 listing fails there; a marker works on s3rver, MinIO and AWS alike.
   */
  const listPage = async (prefix: string, after: string | undefined, maxKeys: number) => {
    const page = await client.send(new ListObjectsCommand({ Bucket, Prefix: prefix, ...(after ? { Marker: after } : {}), MaxKeys: maxKeys }));
    return { keys: (page.Contents ?? []).flatMap((o) => (o.Key ? [o.Key] : [])), truncated: page.IsTruncated ?? false };
  };

  return {
    bucket: Bucket,
    async put(key, body, opts) {
      if (fast && Buffer.isBuffer(body) && (await fast.put(key, body, opts.contentType))) return;
      await client.send(
        new PutObjectCommand({ Bucket, Key: key, Body: body, ContentType: opts.contentType, ...(opts.contentLength !== undefined ? { ContentLength: opts.contentLength } : {}) }),
      );
    },
    async getBuffer(key) {
      const quick = fast ? await fast.get(key) : undefined;
      if (quick) return quick;
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
      let after: string | undefined;
      for (;;) {
        // each page is listed after the last key deleted, so deleting while listing skips nothing
        const page = await listPage(prefix, after, 1000);
        if (page.keys.length > 0) {
          await client.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: page.keys.map((Key) => ({ Key })) } }));
          deleted += page.keys.length;
        }
        if (!page.truncated || page.keys.length === 0) return deleted;
        after = page.keys[page.keys.length - 1];
      }
    },
    listKeys(prefix, opts = {}) {
      return listPage(prefix, opts.startAfter, opts.maxKeys ?? 1000);
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
    async deleteMany(keys) {
      for (let i = 0; i < keys.length; i += 1000) {
        const out = await client.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true } }));
        const failed = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
        if (failed.length > 0) throw new Error(`could not delete ${failed.length} object(s), the first ${failed[0]!.Key}: ${failed[0]!.Code} ${failed[0]!.Message ?? ''}`.trim());
      }
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
      fast?.destroy();
    },
  };
}
