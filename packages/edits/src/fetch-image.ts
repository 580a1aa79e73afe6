import { randomUUID } from 'node:crypto';
import { createWriteStream, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { checkEgress, EgressError, type EgressTarget, type LookupAll, pinnedLookup, storableText } from '@image-edits/core';

/** The media types an image_url may answer with (the bytes are checked by sharp anyway). */
export const IMAGE_MEDIA_TYPES: Record<string, 'png' | 'jpeg' | 'webp'> = { 'image/png': 'png', 'image/jpeg': 'jpeg', 'image/jpg': 'jpeg', 'image/webp': 'webp' };

export type ImageFetchFailure = 'invalid' | 'forbidden' | 'unreachable' | 'too_large' | 'content_type';

export class ImageFetchError extends Error {
  constructor(
    readonly reason: ImageFetchFailure,
    message: string,
  ) {
    super(message);
    this.name = 'ImageFetchError';
  }
}

export interface FetchImageOptions {
  /** loopback/private/link-local targets, and plain http, are allowed (tests, trusted networks) */
  allowPrivate: boolean;
  maxBytes: number;
  /** one deadline for the whole fetch, redirects included */
  timeoutMs: number;
  /** where the bytes are written */
  dir: string;
  /** the client went away: stop */
  signal?: AbortSignal;
  maxRedirects?: number;
  /** DNS, injectable for tests */
  lookup?: LookupAll;
  /** a PEM file of CAs trusted for https besides Node's own (image hosts behind a private CA) */
  caFile?: string;
}

export interface FetchedImage {
  path: string;
  bytes: number;
  contentType: string;
  /** the last path segment of the final URL, for the job's record */
  filename: string;
}

/**
 * GET of a client's image_url through the egress guard, as webhooks are sent: each hop's host is
 * resolved and checked, and the connection goes to the checked address (no DNS rebinding between
 * check and connect). https only, unless private egress is allowed. Redirects (at most 3) are
 * followed only after the same check of their target. The media type must be an image type, the
 * size at most `maxBytes` (Content-Length first, then counted), and the bytes go to a temporary
 * file, never whole into memory. The caller deletes the file.
 */
export async function fetchImage(raw: string, opts: FetchImageOptions): Promise<FetchedImage> {
  const deadline = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([deadline, opts.signal]) : deadline;
  const maxRedirects = opts.maxRedirects ?? 3;
  let url = raw;
  try {
    for (let hop = 0; ; hop++) {
      const target = await checkTarget(url, opts);
      const res = await get(target, signal, opts.caFile);
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (status >= 300 && status < 400 && location) {
        res.resume();
        if (hop >= maxRedirects) throw new ImageFetchError('unreachable', `more than ${maxRedirects} redirects`);
        url = new URL(location, target.url).toString();
        continue;
      }
      if (status < 200 || status >= 300) {
        res.resume();
        throw new ImageFetchError('unreachable', `the server answered HTTP ${status}`);
      }
      const mediaType = (res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (!IMAGE_MEDIA_TYPES[mediaType]) {
        res.resume();
        throw new ImageFetchError('content_type', `the server answered with content type '${mediaType || 'none'}'; expected image/png, image/jpeg or image/webp`);
      }
      const length = Number(res.headers['content-length']);
      if (Number.isFinite(length) && length > opts.maxBytes) {
        res.destroy();
        throw new ImageFetchError('too_large', `the image is ${length} bytes; at most ${opts.maxBytes} are accepted`);
      }
      return await saveBody(res, opts, mediaType, target.url, signal);
    }
  } catch (err) {
    if (err instanceof ImageFetchError) throw err;
    if (deadline.aborted) throw new ImageFetchError('unreachable', `no answer within ${opts.timeoutMs} ms`);
    const e = err as NodeJS.ErrnoException;
    throw new ImageFetchError('unreachable', `the fetch failed: ${e.code ?? e.message}`);
  }
}

async function checkTarget(url: string, opts: FetchImageOptions): Promise<EgressTarget> {
  let target: EgressTarget;
  try {
    target = await checkEgress(url, { allowPrivate: opts.allowPrivate, ...(opts.lookup ? { lookup: opts.lookup } : {}) });
  } catch (err) {
    if (!(err instanceof EgressError)) throw err;
    const reason = err.reason === 'forbidden_address' ? 'forbidden' : err.reason === 'unresolvable' ? 'unreachable' : 'invalid';
    throw new ImageFetchError(reason, err.message);
  }
  // plain http could be read or changed on the way; it is for trusted networks only
  if (target.url.protocol !== 'https:' && !opts.allowPrivate) throw new ImageFetchError('invalid', `${target.url.protocol.replace(':', '')} is not allowed; use https`);
  return target;
}

const extraCas = new Map<string, string[]>();

/** Node's CAs plus the file's, read once per file. */
export function trustedCas(caFile: string): string[] {
  let cas = extraCas.get(caFile);
  if (!cas) {
    cas = [...tls.rootCertificates, readFileSync(caFile, 'utf8')];
    extraCas.set(caFile, cas);
  }
  return cas;
}

function get(target: EgressTarget, signal: AbortSignal, caFile?: string): Promise<http.IncomingMessage> {
  const transport = target.url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = transport.request(target.url, {
      ...(caFile && target.url.protocol === 'https:' ? { ca: trustedCas(caFile) } : {}),
      method: 'GET',
      headers: { accept: 'image/png, image/jpeg, image/webp', 'user-agent': 'image-edits/1 (image_url fetch)' },
      lookup: pinnedLookup(target) as unknown as http.RequestOptions['lookup'],
      // a fresh connection: a pooled socket could be connected to an address checked earlier
      agent: false,
      signal,
    });
    req.on('response', resolve);
    req.on('error', reject);
    req.end();
  });
}

async function saveBody(res: http.IncomingMessage, opts: FetchImageOptions, mediaType: string, url: URL, signal: AbortSignal): Promise<FetchedImage> {
  const file = path.join(opts.dir, `image-url-${randomUUID()}`);
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      if (bytes > opts.maxBytes) return done(new ImageFetchError('too_large', `the image is larger than ${opts.maxBytes} bytes, the most accepted`));
      done(null, chunk);
    },
  });
  try {
    await pipeline(res, counter, createWriteStream(file), { signal });
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
  return { path: file, bytes, contentType: mediaType, filename: filenameOf(url) };
}

/** The URL's last path segment as the input's filename: stored on the job, so never malformed (%E0) nor holding a NUL (%00). */
function filenameOf(url: URL): string {
  const last = url.pathname.split('/').pop() ?? '';
  let name: string;
  try {
    name = decodeURIComponent(last);
  } catch {
    name = last;
  }
  return storableText(name).slice(0, 255) || 'image';
}
