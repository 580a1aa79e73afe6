import type { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';

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
  ensureBucket(): Promise<void>;
  ping(): Promise<void>;
  destroy(): void;
}

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
