import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

/**
 * An S3-compatible server on local disk (s3rver), for `npm start` with no AWS_ENDPOINT_URL_S3 and
 * for tests. s3rver checks presigned-URL expiry but not signatures: development only.
 */
export interface LocalS3 {
  endpoint: string;
  close(): Promise<void>;
}

export async function startLocalS3(opts: { directory: string; port?: number; address?: string }): Promise<LocalS3> {
  mkdirSync(opts.directory, { recursive: true });
  // s3rver has no types; it is loaded lazily so production processes never load it
  const S3rver = require('s3rver') as new (o: Record<string, unknown>) => {
    run(): Promise<AddressInfo>;
    close(): Promise<void>;
  };
  const server = new S3rver({ port: opts.port ?? 0, address: opts.address ?? '127.0.0.1', directory: opts.directory, silent: true, resetOnClose: false });
  const info = await server.run();
  return { endpoint: `http://${info.address}:${info.port}`, close: () => server.close() };
}
