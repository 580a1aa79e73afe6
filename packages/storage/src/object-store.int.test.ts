import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { startLocalS3, type LocalS3 } from './local-s3';
import { createObjectStore, ObjectNotFoundError, type ObjectStore } from './object-store';

/**
 * put and getBuffer send one plain signed request first (fast-path.ts) and fall back to the SDK for
 * anything else. Against the embedded S3, and through a proxy in front of it that answers the first
 * request of each object 503: the bytes arrive whole either way.
 */
let dir: string;
let s3: LocalS3;
let proxy: http.Server;
let proxyUrl: string;
/** requests the proxy saw, by method and path, with whether it failed them */
const seen: { method: string; path: string; failed: boolean; sdk: boolean }[] = [];

const storeAt = (endpoint: string): ObjectStore => createObjectStore({ endpoint, region: 'us-east-1', bucket: 'fast-path', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true });

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'object-store-test-'));
  s3 = await startLocalS3({ directory: dir });
  const target = new URL(s3.endpoint);
  const failedOnce = new Set<string>();
  proxy = http.createServer((req, res) => {
    const key = `${req.method} ${req.url!.split('?')[0]}`;
    const fail = req.url!.includes('/flaky/') && !failedOnce.has(key);
    seen.push({ method: req.method!, path: req.url!, failed: fail, sdk: /aws-sdk-js/.test(req.headers['user-agent'] ?? '') });
    if (fail) {
      failedOnce.add(key);
      req.resume();
      res.writeHead(503, { 'content-type': 'application/xml' }).end('<Error><Code>SlowDown</Code><Message>try again</Message></Error>');
      return;
    }
    const upstream = http.request({ hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode!, up.headers);
      up.pipe(res);
    });
    req.pipe(upstream);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  const store = storeAt(s3.endpoint);
  await store.ensureBucket();
  store.destroy();
});
afterAll(async () => {
  await new Promise((r) => proxy.close(r));
  await s3.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('object store: put and getBuffer', () => {
  it('round-trips bytes, and a missing key is not found', async () => {
    const store = storeAt(s3.endpoint);
    const body = randomBytes(300 * 1024);
    await store.put('jobs/job_1/input/image-0.png', body, { contentType: 'image/png', contentLength: body.length });
    expect((await store.getBuffer('jobs/job_1/input/image-0.png')).equals(body)).toBe(true);
    await expect(store.getBuffer('jobs/job_1/input/none.png')).rejects.toMatchObject({ name: 'NoSuchKey' });
    await expect(store.getStream('jobs/job_1/input/none.png')).rejects.toBeInstanceOf(ObjectNotFoundError);
    store.destroy();
  });

  it('a key with other characters goes through the SDK and round-trips', async () => {
    const store = storeAt(s3.endpoint);
    const key = 'files/a name with spaces + ünïcödé (1).png';
    await store.put(key, Buffer.from('hello'), { contentType: 'image/png', contentLength: 5 });
    expect((await store.getBuffer(key)).toString()).toBe('hello');
    expect((await store.listKeys('files/')).keys).toContain(key);
    store.destroy();
  });

  it('an error answer to the plain request is repeated through the SDK: the bytes arrive whole', async () => {
    const store = storeAt(proxyUrl);
    const body = randomBytes(200 * 1024);
    seen.length = 0;
    await store.put('jobs/flaky/input/image-0.png', body, { contentType: 'image/png', contentLength: body.length });
    expect((await store.getBuffer('jobs/flaky/input/image-0.png')).equals(body)).toBe(true);
    // each call: the plain request (failed with 503), then the SDK's, which succeeded
    expect(seen.map((s) => [s.method, s.failed, s.sdk])).toEqual([
      ['PUT', true, false],
      ['PUT', false, true],
      ['GET', true, false],
      ['GET', false, true],
    ]);
    // and without a failure, one plain request each
    seen.length = 0;
    await store.put('jobs/steady/input/image-0.png', body, { contentType: 'image/png', contentLength: body.length });
    expect((await store.getBuffer('jobs/steady/input/image-0.png')).equals(body)).toBe(true);
    expect(seen.map((s) => [s.method, s.sdk])).toEqual([
      ['PUT', false],
      ['GET', false],
    ]);
    store.destroy();
  });
});
