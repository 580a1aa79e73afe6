import { createHash, createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { S3Client } from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';

/**
 * The two calls on every job's path (a PutObject of bytes in memory, a GetObject read whole) sent
 * as one signed HTTP request each, without the SDK's middleware stack: per call that stack (endpoint
 * rules, schema serde, retries, user agent, logging) cost more CPU than the request itself. Only
 * the plain success is handled here: anything else (an error status, a network error, a timeout)
 * makes the caller repeat the call through the SDK, which retries and reports errors in its shapes.
 * Both calls are idempotent. Signed with the SDK's own signer and the client's own credentials and
 * region, so whatever the SDK can sign for (keys, sessions, roles), this can.
 */
export interface FastPath {
  /** true: stored; false: not handled here (use the SDK) */
  put(key: string, body: Buffer, contentType: string): Promise<boolean>;
  /** the object's bytes; undefined: not handled here (use the SDK) */
  get(key: string): Promise<Buffer | undefined>;
  destroy(): void;
}

/** Keys made of these go into a URL as they are (ours are ids and fixed names); any other key takes the SDK's path. */
const PLAIN_KEY = /^[A-Za-z0-9._/-]+$/;
const CONNECT_TIMEOUT_MS = 3000;
/** the socket's idle time, as the SDK's requestTimeout */
const IDLE_TIMEOUT_MS = 20_000;

type Data = string | ArrayBuffer | ArrayBufferView;
const bytesOf = (d: Data) => (typeof d === 'string' ? d : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : new Uint8Array(d));

/** node:crypto in the Checksum shape the signer wants */
class Sha256 {
  private readonly hash;
  constructor(secret?: Data) {
    this.hash = secret ? createHmac('sha256', bytesOf(secret)) : createHash('sha256');
  }
  update(data: Data): void {
    this.hash.update(bytesOf(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
  reset(): void {
    throw new Error('not resettable');
  }
}

export function createFastPath(client: S3Client, cfg: { endpoint?: string; region: string; bucket: string; forcePathStyle: boolean }): FastPath | undefined {
  // where the bucket's objects are: path style on the endpoint, or the bucket's own host on AWS
  let base: URL;
  if (cfg.endpoint) {
    base = new URL(cfg.endpoint);
    if (!cfg.forcePathStyle) return undefined;
  } else {
    // virtual-hosted on AWS, as the SDK does; a bucket name with dots would not match the certificate
    if (cfg.forcePathStyle || cfg.bucket.includes('.')) return undefined;
    base = new URL(`https://${cfg.bucket}.s3.${cfg.region}.amazonaws.com`);
  }
  if (base.pathname !== '/' && base.pathname !== '') return undefined;
  const prefix = cfg.endpoint ? `/${encodeURIComponent(cfg.bucket)}/` : '/';
  const secure = base.protocol === 'https:';
  const agent = secure ? new https.Agent({ keepAlive: true, maxSockets: 50 }) : new http.Agent({ keepAlive: true, maxSockets: 50 });
  const signer = new SignatureV4({ service: 's3', region: client.config.region, credentials: client.config.credentials, sha256: Sha256, uriEscapePath: false, applyChecksum: false });

  const send = async (method: 'PUT' | 'GET', key: string, headers: Record<string, string>, body?: Buffer): Promise<Buffer | undefined> => {
    if (!PLAIN_KEY.test(key)) return undefined;
    const path = prefix + key;
    // credentials that cannot be had now are the SDK's to report, in its words
    const signed = await signer
      .sign({
        method,
        protocol: base.protocol,
        hostname: base.hostname,
        ...(base.port ? { port: Number(base.port) } : {}),
        path,
        query: {},
        headers: { host: base.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...headers },
        body,
      })
      .catch(() => undefined);
    if (!signed) return undefined;
    return new Promise<Buffer | undefined>((resolve) => {
      const req = (secure ? https : http).request({ method, protocol: base.protocol, hostname: base.hostname, port: base.port || undefined, path, headers: signed.headers, agent });
      const connectTimer = setTimeout(() => req.destroy(), CONNECT_TIMEOUT_MS);
      req.on('socket', (socket) => {
        if (!socket.connecting) clearTimeout(connectTimer);
        else socket.once('connect', () => clearTimeout(connectTimer));
      });
      req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy());
      req.on('error', () => {
        clearTimeout(connectTimer);
        resolve(undefined);
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', () => resolve(undefined));
        // a body cut short ends without 'end'
        res.on('close', () => {
          if (!res.complete) resolve(undefined);
        });
        res.on('end', () => {
          clearTimeout(connectTimer);
          const ok = res.statusCode === 200 && (method === 'PUT' || res.complete);
          const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          const length = Number(res.headers['content-length'] ?? Number.NaN);
          // a body cut short is no answer (the SDK repeats the call)
          resolve(ok && (method === 'PUT' || Number.isNaN(length) || bytes.length === length) ? bytes : undefined);
        });
      });
      req.end(body);
    });
  };

  return {
    async put(key, body, contentType) {
      return (await send('PUT', key, { 'content-type': contentType, 'content-length': String(body.length) }, body)) !== undefined;
    },
    get(key) {
      return send('GET', key, {});
    },
    destroy() {
      agent.destroy();
    },
  };
}
