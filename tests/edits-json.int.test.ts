import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import selfsigned from 'selfsigned';
import sharp from 'sharp';
import { makeMask, makeOpaque, makePng, startTestService, type TestService } from '@image-edits/testing';
import { fileKey } from '@image-edits/storage';
import { decode, editForm, get, pollJob, post } from './helpers';

/**
 * The JSON form of POST /v1/images/edits: images by file_id, data: URL or URL fetched through the
 * egress guard; the same validation and the same job as multipart.
 */
// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field by the assertions
type Json = any;

let svc: TestService;
/** the default egress guard: no private addresses, https only */
let guarded: TestService;
let images: http.Server;
let imagesUrl: string;
/** the same image host over TLS, its certificate trusted through IMAGE_URL_CA_FILE */
let secureImages: https.Server;
let secureUrl: string;
/** another TLS host whose certificate nobody trusts */
let untrusted: https.Server;
let untrustedUrl: string;
let certDir: string;
const hits: string[] = [];

const hole = { x: 96, y: 96, width: 64, height: 64 };
let holed: Buffer;
let opaque: Buffer;
let mask: Buffer;

beforeAll(async () => {
  holed = await makePng(256, 256, { hole });
  opaque = await makePng(256, 256);
  mask = await makeMask(256, 256, hole);
  // a fake image host on loopback: the private-egress allowance lets the service reach it over http
  const serveImages: http.RequestListener = (req, res) => {
    hits.push(req.url ?? '');
    const png = (body: Buffer) => res.writeHead(200, { 'content-type': 'image/png', 'content-length': body.length }).end(body);
    if (req.url === '/holed.png') return png(holed);
    if (req.url === '/opaque.png') return png(opaque);
    if (req.url === '/mask.png') return png(mask);
    if (req.url === '/redirect') return res.writeHead(302, { location: '/holed.png' }).end();
    if (req.url === '/loop') return res.writeHead(302, { location: '/loop' }).end();
    if (req.url === '/text') return res.writeHead(200, { 'content-type': 'text/html' }).end('<html></html>');
    if (req.url === '/big') return res.writeHead(200, { 'content-type': 'image/png', 'content-length': 5 * 1024 * 1024 }).end(Buffer.alloc(5 * 1024 * 1024));
    if (req.url === '/big-chunked') {
      res.writeHead(200, { 'content-type': 'image/png' });
      for (let i = 0; i < 5; i++) res.write(Buffer.alloc(1024 * 1024));
      return res.end();
    }
    if (req.url === '/slow') return; // never answers
    res.writeHead(404).end();
  };
  const listen = async <S extends http.Server>(server: S, scheme: string): Promise<string> => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
  images = http.createServer(serveImages);
  imagesUrl = await listen(images, 'http');
  const cert = () =>
    selfsigned.generate([{ name: 'commonName', value: '127.0.0.1' }], {
      keyType: 'ec',
      algorithm: 'sha256',
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }],
    });
  const [trusted, stranger] = await Promise.all([cert(), cert()]);
  secureImages = https.createServer({ key: trusted.private, cert: trusted.cert }, serveImages);
  secureUrl = await listen(secureImages, 'https');
  untrusted = https.createServer({ key: stranger.private, cert: stranger.cert }, serveImages);
  untrustedUrl = await listen(untrusted, 'https');
  certDir = mkdtempSync(path.join(os.tmpdir(), 'image-host-ca-'));
  writeFileSync(path.join(certDir, 'ca.pem'), trusted.cert);
  svc = await startTestService({ IMAGE_URL_ALLOW_PRIVATE: 'true', IMAGE_URL_TIMEOUT_MS: '1500', IMAGE_URL_CA_FILE: path.join(certDir, 'ca.pem') });
  guarded = await startTestService({}, { worker: false });
});
afterAll(async () => {
  await svc?.stop();
  await guarded?.stop();
  for (const server of [images, secureImages, untrusted]) {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
  }
  rmSync(certDir, { recursive: true, force: true });
});

const edits = (s = svc) => `${s.url}/v1/images/edits`;
const dataUrl = (bytes: Buffer, type = 'image/png') => `data:${type};base64,${bytes.toString('base64')}`;

async function postJson(url: string, key: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Json }> {
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

async function uploadFile(bytes: Buffer, purpose: string, key = svc.apiKey, name = 'in.png'): Promise<string> {
  const form = new FormData();
  form.append('purpose', purpose);
  form.append('file', new Blob([new Uint8Array(bytes)], { type: 'image/png' }), name);
  const res = await fetch(`${svc.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: form });
  const body = (await res.json()) as Json;
  expect(res.status).toBe(200);
  return body.id;
}

async function s3Keys(s: TestService, prefix: string): Promise<string[]> {
  const res = await fetch(`${s.testEnv.s3.endpoint}/test-bucket?list-type=2&prefix=${encodeURIComponent(prefix)}`);
  return [...(await res.text()).matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]!);
}

const b64 = (res: { body: Json }) => res.body.data.map((d: { b64_json: string }) => d.b64_json);

describe('the JSON form, each kind of image reference', () => {
  it('file_id: the job gets its own S3 copy, so deleting the file later does not touch the job', async () => {
    const fileId = await uploadFile(holed, 'vision');
    const res = await postJson(edits(), svc.apiKey, { model: 'local-inpaint', prompt: 'fill', images: [{ file_id: fileId }], size: '256x256', response_format: 'b64_json' });
    expect(res.status).toBe(200);
    expect(res.body.data).toHaveLength(1);
    expect((await decode(Buffer.from(res.body.data[0].b64_json, 'base64'))).width).toBe(256);
    const jobId = res.headers.get('x-job-id')!;
    const row = await svc.db.job.findUniqueOrThrow({ where: { id: jobId } });
    expect(row.inputs).toEqual({ images: [{ key: `jobs/${jobId}/input/image-0.png`, format: 'png', bytes: holed.length, width: 256, height: 256, filename: 'in.png' }] });
    expect(await s3Keys(svc, `jobs/${jobId}/input/`)).toEqual([`jobs/${jobId}/input/image-0.png`]);
    expect(await s3Keys(svc, fileKey(fileId))).toEqual([fileKey(fileId)]);

    // a queued job survives the deletion of the file it came from
    const queued = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ file_id: fileId }], cancel_after: '1h' }, { prefer: 'respond-async' });
    expect(queued.status).toBe(202);
    const del = await fetch(`${svc.url}/v1/files/${fileId}`, { method: 'DELETE', headers: { authorization: `Bearer ${svc.apiKey}` } });
    expect(del.status).toBe(200);
    expect(await pollJob(svc.url, svc.apiKey, queued.body.id)).toMatchObject({ status: 'succeeded' });
    const again = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ file_id: fileId }] });
    expect(again.status).toBe(400);
    expect(again.body.error).toMatchObject({ param: 'images[0].file_id', code: 'file_not_found' });
  });

  it('data: URL image with a mask by file_id gives the same result and job as the multipart form', async () => {
    const maskId = await uploadFile(mask, 'user_data', svc.apiKey, 'mask.png');
    const fields = { model: 'local-inpaint', prompt: 'fill', size: '256x256', response_format: 'b64_json', metadata: { order: '42' } };
    const json = await postJson(edits(), svc.apiKey, { ...fields, images: [{ image_url: dataUrl(opaque) }], mask: { file_id: maskId } });
    const form = editForm({ ...fields, metadata: JSON.stringify(fields.metadata) }, [['image', opaque, 'image.png'], ['mask', mask, 'mask.png']]);
    const multipart = await post(edits(), svc.apiKey, form);
    expect(json.status).toBe(200);
    expect(multipart.status).toBe(200);
    expect(b64(json)).toEqual(b64(multipart));

    const [a, b] = await Promise.all([json, multipart].map((r) => get(`${svc.url}/v1/jobs/${r.headers.get('x-job-id')}`, svc.apiKey)));
    const shape = (job: Json) => ({ ...job, id: undefined, urls: undefined, created_at: undefined, started_at: undefined, completed_at: undefined, result: { ...job.result, created: undefined, data: undefined } });
    expect(shape(a!.body)).toEqual(shape(b!.body));
    expect(a!.body.metadata).toEqual({ order: '42' });
    const rows = await svc.db.job.findMany({ where: { id: { in: [json.headers.get('x-job-id')!, multipart.headers.get('x-job-id')!] } } });
    expect(rows).toHaveLength(2);
    expect(rows[0]!.params).toEqual(rows[1]!.params);
    expect(rows[0]!.metadata).toEqual(rows[1]!.metadata);
  });

  it('image_url fetched over http (private egress allowed here), following a redirect, with a mask by URL', async () => {
    const before = hits.length;
    const res = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ image_url: `${imagesUrl}/redirect` }], response_format: 'b64_json' });
    expect(res.status).toBe(200);
    expect(hits.slice(before)).toEqual(['/redirect', '/holed.png']);
    const row = await svc.db.job.findUniqueOrThrow({ where: { id: res.headers.get('x-job-id')! } });
    expect(row.inputs).toMatchObject({ images: [{ format: 'png', width: 256, height: 256, filename: 'holed.png' }] });

    const masked = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ image_url: `${imagesUrl}/opaque.png` }], mask: { image_url: `${imagesUrl}/mask.png` } }, { prefer: 'respond-async' });
    expect(masked.status).toBe(202);
    expect(await pollJob(svc.url, svc.apiKey, masked.body.id)).toMatchObject({ status: 'succeeded' });
    expect((await svc.db.job.findUniqueOrThrow({ where: { id: masked.body.id } })).inputs).toMatchObject({ mask: { key: `jobs/${masked.body.id}/input/mask.png` } });
  });

  it('image_url fetched over https from a host whose CA is trusted (IMAGE_URL_CA_FILE), image and mask', async () => {
    const before = hits.length;
    const res = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ image_url: `${secureUrl}/opaque.png` }], mask: { image_url: `${secureUrl}/mask.png` }, response_format: 'b64_json' });
    expect(res.status).toBe(200);
    expect(hits.slice(before).sort()).toEqual(['/mask.png', '/opaque.png']);
    const row = await svc.db.job.findUniqueOrThrow({ where: { id: res.headers.get('x-job-id')! } });
    expect(row.inputs).toMatchObject({ images: [{ format: 'png', width: 256, height: 256, filename: 'opaque.png', bytes: opaque.length }], mask: { bytes: mask.length } });
    // the same edit as the bytes sent inline
    const inline = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ image_url: dataUrl(opaque) }], mask: { image_url: dataUrl(mask) }, response_format: 'b64_json' });
    expect(b64(res)).toEqual(b64(inline));
  });

  it('an https host with a certificate nobody trusts is refused as unreachable, naming the certificate', async () => {
    const res = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ image_url: `${untrustedUrl}/opaque.png` }] }, { prefer: 'respond-async' });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ param: 'images[0].image_url', code: 'image_url_unreachable' });
    expect(res.body.error.message).toMatch(/certificate|SELF_SIGNED|CERT/i);
  });

  it('Prefer: wait=N and respond-async answer with the job object', async () => {
    const body = { prompt: 'fill', images: [{ image_url: dataUrl(holed) }] };
    const waited = await postJson(edits(), svc.apiKey, body, { prefer: 'wait=30' });
    expect(waited.status).toBe(200);
    expect(waited.body).toMatchObject({ object: 'image.edit.job', status: 'succeeded' });
    const async_ = await postJson(edits(), svc.apiKey, body, { prefer: 'respond-async' });
    expect(async_.status).toBe(202);
    expect(async_.headers.get('location')).toBe(`/v1/jobs/${async_.body.id}`);
  });

  it('Idempotency-Key: the same JSON body (key order aside) replays the job; another body is a 422', async () => {
    const headers = { prefer: 'respond-async', 'idempotency-key': 'json-1' };
    const first = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ image_url: dataUrl(holed) }], n: 1 }, headers);
    const again = await postJson(edits(), svc.apiKey, { n: 1, images: [{ image_url: dataUrl(holed) }], prompt: 'fill' }, headers);
    expect(first.status).toBe(202);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body.id).toBe(first.body.id);
    const other = await postJson(edits(), svc.apiKey, { prompt: 'fill', images: [{ image_url: dataUrl(holed) }], n: 2 }, headers);
    expect(other.status).toBe(422);
    expect(other.body.error.code).toBe('idempotency_error');
  });
});

describe('the egress guard on image_url (default configuration)', () => {
  const cases: [string, Json, string, string][] = [
    ['loopback', { images: [{ image_url: 'http://127.0.0.1:9/a.png' }] }, 'images[0].image_url', 'image_url_forbidden'],
    ['cloud metadata', { images: [{ image_url: 'http://169.254.169.254/latest/meta-data/' }] }, 'images[0].image_url', 'image_url_forbidden'],
    ['a private address as mask', { images: [{ image_url: 'OPAQUE' }], mask: { image_url: 'https://10.1.2.3/mask.png' } }, 'mask.image_url', 'image_url_forbidden'],
    ['an IPv4-mapped IPv6 loopback', { images: [{ image_url: 'https://[::ffff:127.0.0.1]/a.png' }] }, 'images[0].image_url', 'image_url_forbidden'],
    ['localhost by name', { images: [{ image_url: 'https://localhost/a.png' }] }, 'images[0].image_url', 'image_url_forbidden'],
    ['another scheme', { images: [{ image_url: 'file:///etc/passwd' }] }, 'images[0].image_url', 'invalid_value'],
  ];
  it.each(cases)('refuses %s with a 400 naming the reference, before any request is made', async (_name, body, param, code) => {
    const before = hits.length;
    if (body.images[0].image_url === 'OPAQUE') body.images[0].image_url = dataUrl(opaque);
    const res = await postJson(edits(guarded), guarded.apiKey, { prompt: 'x', ...body }, { prefer: 'respond-async' });
    expect({ status: res.status, param: res.body.error?.param, code: res.body.error?.code }).toEqual({ status: 400, param, code });
    expect(hits.length).toBe(before);
    expect(await guarded.db.job.count()).toBe(0);
  });

  it('refuses the fake image host on loopback that the other service may reach', async () => {
    const res = await postJson(edits(guarded), guarded.apiKey, { prompt: 'x', images: [{ image_url: `${imagesUrl}/holed.png` }] });
    expect(res.body.error).toMatchObject({ param: 'images[0].image_url', code: 'image_url_forbidden' });
  });
});

describe('validation of the JSON form: status, param, and nothing stored', () => {
  let batchFileId: string;
  let othersFileId: string;
  beforeAll(async () => {
    const form = new FormData();
    form.append('purpose', 'batch');
    form.append('file', new Blob(['{}\n']), 'a.jsonl');
    batchFileId = ((await (await fetch(`${svc.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}` }, body: form })).json()) as Json).id;
    othersFileId = await uploadFile(holed, 'vision', await svc.newKey('other'));
  });

  const img = () => ({ image_url: dataUrl(holed) });
  const cases: [string, () => Json, number, string | null, string][] = [
    ['no images', () => ({ prompt: 'x' }), 400, 'images', 'missing_required_parameter'],
    ['images not a list', () => ({ prompt: 'x', images: img() }), 400, 'images', 'invalid_value'],
    ['an empty list', () => ({ prompt: 'x', images: [] }), 400, 'images', 'invalid_value'],
    ['17 images', () => ({ prompt: 'x', images: Array.from({ length: 17 }, img) }), 400, 'images', 'invalid_value'],
    ['two images for a one-image model', () => ({ prompt: 'x', images: [img(), img()] }), 400, 'images', 'too_many_images'],
    ['both file_id and image_url', () => ({ prompt: 'x', images: [{ file_id: 'file-1', image_url: dataUrl(holed) }] }), 400, 'images[0]', 'invalid_value'],
    ['neither', () => ({ prompt: 'x', images: [{ url: 'x' }] }), 400, 'images[0]', 'invalid_value'],
    ['an unknown file', () => ({ prompt: 'x', images: [{ file_id: 'file-doesnotexist' }] }), 400, 'images[0].file_id', 'file_not_found'],
    ["another key's file", () => ({ prompt: 'x', images: [{ file_id: othersFileId }] }), 400, 'images[0].file_id', 'file_not_found'],
    ['a batch file as an image', () => ({ prompt: 'x', images: [{ file_id: batchFileId }] }), 400, 'images[0].file_id', 'invalid_file_purpose'],
    ['an unknown mask file', () => ({ prompt: 'x', images: [img()], mask: { file_id: 'file-nope' } }), 400, 'mask.file_id', 'file_not_found'],
    ['a data URL of another type', () => ({ prompt: 'x', images: [{ image_url: 'data:text/plain;base64,aGk=' }] }), 400, 'images[0].image_url', 'invalid_image_content_type'],
    ['a data URL without base64', () => ({ prompt: 'x', images: [{ image_url: 'data:image/png,abc' }] }), 400, 'images[0].image_url', 'invalid_value'],
    ['a data URL over the model limit', () => ({ prompt: 'x', images: [{ image_url: dataUrl(Buffer.alloc(4 * 1024 * 1024 + 10)) }] }), 413, 'images[0].image_url', 'file_too_large'],
    ['a data URL that is not an image', () => ({ prompt: 'x', images: [{ image_url: dataUrl(Buffer.from('not an image')) }] }), 400, 'images[0]', 'invalid_image_format'],
    ['a JPEG for a PNG-only model', () => ({ prompt: 'x', images: [{ image_url: 'JPEG' }] }), 400, 'images[0]', 'invalid_image_format'],
    ['a mask of another size', () => ({ prompt: 'x', images: [img()], mask: { image_url: 'MASK32' } }), 400, 'mask', 'invalid_mask_dimensions'],
    ['a URL answering HTML', () => ({ prompt: 'x', images: [{ image_url: `${imagesUrl}/text` }] }), 400, 'images[0].image_url', 'invalid_image_content_type'],
    ['a URL answering 404', () => ({ prompt: 'x', images: [{ image_url: `${imagesUrl}/missing.png` }] }), 400, 'images[0].image_url', 'image_url_unreachable'],
    ['a URL over the limit by Content-Length', () => ({ prompt: 'x', images: [{ image_url: `${imagesUrl}/big` }] }), 413, 'images[0].image_url', 'file_too_large'],
    ['a URL over the limit, counted', () => ({ prompt: 'x', images: [{ image_url: `${imagesUrl}/big-chunked` }] }), 413, 'images[0].image_url', 'file_too_large'],
    ['a redirect loop', () => ({ prompt: 'x', images: [{ image_url: `${imagesUrl}/loop` }] }), 400, 'images[0].image_url', 'image_url_unreachable'],
    ['a URL that never answers', () => ({ prompt: 'x', images: [{ image_url: `${imagesUrl}/slow` }] }), 400, 'images[0].image_url', 'image_url_unreachable'],
    ['no prompt', () => ({ images: [{ image_url: `${imagesUrl}/holed.png` }] }), 400, 'prompt', 'missing_required_parameter'],
    ['n out of range', () => ({ prompt: 'x', n: 11, images: [{ image_url: `${imagesUrl}/holed.png` }] }), 400, 'n', 'invalid_value'],
    ['metadata not an object', () => ({ prompt: 'x', metadata: [1], images: [img()] }), 400, 'metadata', 'invalid_value'],
    ['image instead of images', () => ({ prompt: 'x', image: dataUrl(holed) }), 400, 'image', 'unknown_parameter'],
    ['an unknown field', () => ({ prompt: 'x', colour: 'red', images: [{ image_url: `${imagesUrl}/holed.png` }] }), 400, 'colour', 'unknown_parameter'],
    ['moderation on a model without it', () => ({ prompt: 'x', moderation: 'low', images: [{ image_url: `${imagesUrl}/holed.png` }] }), 400, 'moderation', 'unsupported_parameter'],
    ["OpenAI's markup, which no model here takes", () => ({ prompt: 'x', markup: { image_url: `${imagesUrl}/holed.png` }, images: [{ image_url: `${imagesUrl}/holed.png` }] }), 400, 'markup', 'unsupported_parameter'],
    ['a body that is not an object', () => [1, 2], 400, null, 'invalid_json'],
  ];
  it.each(cases)('%s', async (_name, build, status, param, code) => {
    let body = build();
    // fixtures that need async work
    const images = body.images as Json[] | undefined;
    if (images?.[0]?.image_url === 'JPEG') images[0].image_url = dataUrl(await makeOpaque(64, 64, 'jpeg'), 'image/jpeg');
    if (body.mask?.image_url === 'MASK32') body = { ...body, mask: { image_url: dataUrl(await makeMask(32, 32, hole)) } };
    const jobsBefore = await svc.db.job.count();
    const keysBefore = await s3Keys(svc, 'jobs/');
    const hitsBefore = hits.length;
    const res = await postJson(edits(), svc.apiKey, body, { prefer: 'respond-async' });
    expect({ status: res.status, param: res.body.error?.param, code: res.body.error?.code }).toEqual({ status, param, code });
    expect(res.body.error.message).toEqual(expect.any(String));
    expect(await svc.db.job.count()).toBe(jobsBefore);
    expect(await s3Keys(svc, 'jobs/')).toEqual(keysBefore);
    // text fields are checked before any URL is fetched
    if (param === 'prompt' || param === 'n' || code === 'unknown_parameter' || code === 'unsupported_parameter') expect(hits.length).toBe(hitsBefore);
  });

  it('malformed JSON is a 400', async () => {
    const res = await fetch(edits(), { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': 'application/json' }, body: '{"prompt":' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as Json).error.code).toBe('invalid_json');
  });

  it('takes a JSON body well over the 1 MB of other routes, and answers 413 past its own limit', async () => {
    // noise does not compress: about 2.5 MB as PNG (under local-inpaint's 4 MB), with some alpha-0 pixels
    const big = await sharp(randomBytes(800 * 800 * 4), { raw: { width: 800, height: 800, channels: 4 } }).png().toBuffer();
    expect(big.length).toBeGreaterThan(2 * 1024 * 1024);
    const ok = await postJson(edits(), svc.apiKey, { prompt: 'x', images: [{ image_url: dataUrl(big) }] }, { prefer: 'respond-async' });
    expect(ok.status).toBe(202);
    const res = await fetch(edits(), { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', pad: 'x'.repeat(70 * 1024 * 1024) }) });
    expect(res.status).toBe(413);
    expect(((await res.json()) as Json).error.code).toBe('request_too_large');
  });
});
