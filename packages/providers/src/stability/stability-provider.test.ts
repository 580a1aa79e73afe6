import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import sharp from 'sharp';
// deep imports: the package index also exports the integration harness (databases, servers)
import { type FakeStability, stabilityError, startFakeStability } from '@image-edits/testing/src/fake-stability';
import { makeMask, makeOpaque, makePng } from '@image-edits/testing/src/fixtures';
import type { InputImage, ProviderEditRequest } from '../types';
import { ProviderError } from '../types';
import { createStabilityProvider } from './stability-provider';

const API_KEY = 'sk-stability-secret-789';
const HOLE = { x: 64, y: 64, width: 64, height: 64 };

let fake: FakeStability;
let png256: Buffer;
let mask256: Buffer;
let opaque256: Buffer;

const input = (data: Buffer, format: InputImage['format'], filename: string, width = 256, height = width): InputImage => ({ data, format, filename, width, height });
const provider = (timeoutMs = 10_000) => createStabilityProvider({ apiKey: API_KEY, baseURL: fake.url, timeoutMs });

async function editError(p: Promise<unknown>): Promise<ProviderError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ProviderError);
    return err as ProviderError;
  }
  throw new Error('expected the edit to fail');
}

/** The grey value of one pixel of a single-channel mask. */
async function maskPixel(mask: Buffer, x: number, y: number): Promise<number> {
  const { data, info } = await sharp(mask).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  return data[y * info.width + x] ?? -1;
}

beforeAll(async () => {
  fake = await startFakeStability({ apiKey: API_KEY });
  png256 = await makePng(256, 256, { hole: HOLE });
  mask256 = await makeMask(256, 256, HOLE);
  opaque256 = await makeOpaque(256, 256, 'png');
});

afterAll(async () => {
  await fake.close();
});

beforeEach(() => fake.reset());

describe('Stability provider requests', () => {
  it('inpaint: sends the image, a white-edit mask, the prompt, output format and a seed', async () => {
    const p = provider();
    expect(p.id).toBe('stability');
    const result = await p.edit({
      model: 'inpaint',
      prompt: 'a red balloon',
      images: [input(opaque256, 'png', 'canvas.png')],
      mask: input(mask256, 'png', 'mask.png'),
      n: 1,
      user: 'user-42',
    });

    expect(fake.requests).toHaveLength(1);
    const req = fake.requests[0]!;
    expect(req.method).toBe('POST');
    expect(req.path).toBe('/v2beta/stable-image/edit/inpaint');
    expect(req.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(req.headers.accept).toBe('application/json');
    expect(req.fields).toEqual({ prompt: 'a red balloon', output_format: 'png', seed: expect.stringMatching(/^\d+$/) });
    const seed = Number(req.fields.seed);
    expect(seed).toBeGreaterThan(0);
    expect(seed).toBeLessThanOrEqual(4294967294);

    expect(req.files.map((f) => [f.field, f.filename, f.contentType])).toEqual([
      ['image', 'canvas.png', 'image/png'],
      ['mask', 'mask.png', 'image/png'],
    ]);
    expect(req.files[0]!.data.equals(opaque256)).toBe(true);
    // OpenAI's "alpha 0 = edit" became Stability's "white = edit", canvas-sized, one channel
    const mask = req.files[1]!.data;
    const meta = await sharp(mask).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 256, 256, 1]);
    expect(await maskPixel(mask, 64, 64)).toBe(255);
    expect(await maskPixel(mask, 127, 127)).toBe(255);
    expect(await maskPixel(mask, 63, 64)).toBe(0);
    expect(await maskPixel(mask, 128, 128)).toBe(0);
    expect(await maskPixel(mask, 5, 250)).toBe(0);

    expect(result.images).toHaveLength(1);
    const out = result.images[0]!;
    expect(out.format).toBe('png');
    const outMeta = await sharp(out.data).metadata();
    expect([outMeta.format, outMeta.width, outMeta.height]).toEqual(['png', 256, 256]);
  });

  it('inpaint without a mask derives it from the canvas transparency', async () => {
    await provider().edit({ model: 'inpaint', prompt: 'fill it', images: [input(png256, 'png', 'holey.png')], n: 1 });
    const req = fake.requests[0]!;
    expect(req.files.map((f) => f.field)).toEqual(['image', 'mask']);
    expect(req.files[0]!.data.equals(png256)).toBe(true);
    const mask = req.files[1]!.data;
    expect(await maskPixel(mask, 100, 100)).toBe(255);
    expect(await maskPixel(mask, 10, 10)).toBe(0);
    expect(await maskPixel(mask, 200, 200)).toBe(0);
  });

  it('inpaint stretches a mask of another size to the canvas', async () => {
    const small = await makeMask(128, 128, { x: 32, y: 32, width: 32, height: 32 });
    await provider().edit({ model: 'inpaint', prompt: 'x', images: [input(opaque256, 'png', 'c.png')], mask: input(small, 'png', 'm.png', 128), n: 1 });
    const mask = fake.requests[0]!.files[1]!.data;
    const meta = await sharp(mask).metadata();
    expect([meta.width, meta.height]).toEqual([256, 256]);
    expect(await maskPixel(mask, 100, 100)).toBe(255);
    expect(await maskPixel(mask, 140, 140)).toBe(0);
  });

  it('erase: sends the mask but no prompt, and returns the asked format', async () => {
    const jpeg = await makeOpaque(320, 240, 'jpeg');
    const mask = await makeMask(320, 240, HOLE);
    const result = await provider().edit({
      model: 'erase',
      prompt: 'remove the thing',
      images: [input(jpeg, 'jpeg', 'photo.jpg', 320, 240)],
      mask: input(mask, 'png', 'mask.png', 320, 240),
      n: 1,
      outputFormat: 'jpeg',
    });
    const req = fake.requests[0]!;
    expect(req.path).toBe('/v2beta/stable-image/edit/erase');
    expect(req.fields).toEqual({ output_format: 'jpeg', seed: expect.any(String) });
    expect(req.files.map((f) => [f.field, f.contentType])).toEqual([
      ['image', 'image/jpeg'],
      ['mask', 'image/png'],
    ]);
    expect(req.files[0]!.data.equals(jpeg)).toBe(true);
    expect(await maskPixel(req.files[1]!.data, 70, 70)).toBe(255);
    expect(await maskPixel(req.files[1]!.data, 300, 200)).toBe(0);

    expect(result.images[0]!.format).toBe('jpeg');
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['jpeg', 320, 240]);
  });

  it('search-and-replace: sends prompt and search_prompt, no mask', async () => {
    const webp = await makeOpaque(256, 256, 'webp');
    const result = await provider().edit({
      model: 'search-and-replace',
      prompt: 'a golden retriever',
      searchPrompt: 'dog',
      images: [input(webp, 'webp', 'dog.webp')],
      n: 1,
      outputFormat: 'webp',
      quality: 'auto',
      background: 'auto',
    });
    const req = fake.requests[0]!;
    expect(req.path).toBe('/v2beta/stable-image/edit/search-and-replace');
    expect(req.fields).toEqual({ prompt: 'a golden retriever', search_prompt: 'dog', output_format: 'webp', seed: expect.any(String) });
    expect(req.files.map((f) => [f.field, f.filename, f.contentType])).toEqual([['image', 'dog.webp', 'image/webp']]);
    expect(result.images[0]!.format).toBe('webp');
    expect((await sharp(result.images[0]!.data).metadata()).format).toBe('webp');
  });

  it('n > 1: one call per image, with consecutive seeds', async () => {
    const result = await provider().edit({ model: 'inpaint', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 3 });
    expect(fake.requests).toHaveLength(3);
    const seeds = fake.requests.map((r) => Number(r.fields.seed));
    expect(seeds[1]).toBe(seeds[0]! + 1);
    expect(seeds[2]).toBe(seeds[0]! + 2);
    for (const r of fake.requests) {
      expect(r.files.map((f) => f.field)).toEqual(['image', 'mask']);
      expect(r.files[0]!.data.equals(png256)).toBe(true);
    }
    expect(result.images).toHaveLength(3);
    for (const img of result.images) expect((await sharp(img.data).metadata()).width).toBe(256);
  });

  it('reads a raw image answer (Accept ignored by a proxy) too', async () => {
    const jpeg = await makeOpaque(256, 256, 'jpeg');
    fake.respondWith({ headers: { 'content-type': 'image/jpeg', 'finish-reason': 'SUCCESS', seed: '7' }, body: jpeg });
    const result = await provider().edit({ model: 'inpaint', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 1 });
    expect(result.images[0]).toEqual({ data: jpeg, format: 'jpeg' });
  });
});

describe('size translation', () => {
  const edit = (size: string | undefined, canvas = input(png256, 'png', 'a.png'), outputFormat?: 'png' | 'jpeg' | 'webp') =>
    provider().edit({ model: 'inpaint', prompt: 'x', images: [canvas], n: 1, ...(size ? { size } : {}), ...(outputFormat ? { outputFormat } : {}) });

  it('auto and undefined keep the upstream size; no size field is sent', async () => {
    for (const size of ['auto', undefined]) {
      fake.reset();
      const result = await edit(size);
      expect(fake.requests[0]!.fields.size).toBeUndefined();
      const meta = await sharp(result.images[0]!.data).metadata();
      expect([meta.width, meta.height]).toEqual([256, 256]);
    }
  });

  it('same aspect ratio: scaled to exactly the asked size', async () => {
    const result = await edit('1024x1024');
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([result.images[0]!.format, meta.format, meta.width, meta.height]).toEqual(['png', 'png', 1024, 1024]);
  });

  it('other aspect ratio: covered and cropped to exactly the asked size, in the asked format', async () => {
    const result = await edit('1536x1024', input(png256, 'png', 'a.png'), 'webp');
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([result.images[0]!.format, meta.format, meta.width, meta.height]).toEqual(['webp', 'webp', 1536, 1024]);
  });
});

describe('parameters the upstream cannot honour', () => {
  const base: ProviderEditRequest = { model: 'inpaint', prompt: 'x', images: [], n: 1 };
  const cases: Array<[string, Partial<ProviderEditRequest>, string]> = [
    ['an unknown model', { model: 'outpaint' }, 'outpaint'],
    ['quality', { quality: 'high' }, 'quality'],
    ['background', { background: 'transparent' }, 'background'],
    ['output_compression', { outputCompression: 50 }, 'output_compression'],
    ['input_fidelity', { inputFidelity: 'high' }, 'input_fidelity'],
    ['search_prompt on inpaint', { searchPrompt: 'dog' }, 'search_prompt'],
    ['a size that is not WxH', { size: 'large' }, 'size'],
    ['a mask on search-and-replace', { model: 'search-and-replace', searchPrompt: 'dog', mask: undefined }, 'mask'],
  ];

  it.each(cases)('rejects %s before calling upstream', async (_label, patch, mentions) => {
    const request = { ...base, images: [input(png256, 'png', 'a.png')], ...patch };
    if (mentions === 'mask') request.mask = input(mask256, 'png', 'm.png');
    const err = await editError(provider().edit(request));
    expect([err.code, err.retryable, err.provider]).toEqual(['unsupported_parameter', false, 'stability']);
    expect(err.message).toContain(mentions);
    expect(err.message).toContain(request.model);
    expect(fake.requests).toHaveLength(0);
  });

  it('rejects several images', async () => {
    const err = await editError(provider().edit({ ...base, images: [input(png256, 'png', 'a.png'), input(png256, 'png', 'b.png')] }));
    expect([err.code, err.retryable]).toEqual(['unsupported_parameter', false]);
    expect(fake.requests).toHaveLength(0);
  });

  it('search-and-replace without search_prompt is an invalid request', async () => {
    const err = await editError(provider().edit({ ...base, model: 'search-and-replace', images: [input(png256, 'png', 'a.png')] }));
    expect([err.code, err.retryable]).toEqual(['invalid_request', false]);
    expect(err.message).toContain('search_prompt');
    expect(fake.requests).toHaveLength(0);
  });
});

describe('error classification', () => {
  const edit = (opts?: { signal?: AbortSignal }, p = provider()) => p.edit({ model: 'inpaint', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 1 }, opts);

  it('429 with retry-after is retryable with retryAfterMs', async () => {
    fake.respondWith(stabilityError(429, 'rate_limit_exceeded', ['You have made more than 150 requests in 10 seconds.'], { 'retry-after': '2' }));
    const err = await editError(edit());
    expect([err.code, err.status, err.retryable, err.retryAfterMs, err.message]).toEqual([
      'rate_limited',
      429,
      true,
      2000,
      'You have made more than 150 requests in 10 seconds.',
    ]);
  });

  it('5xx is retryable', async () => {
    fake.respondWith(stabilityError(500, 'internal_error', ['An unexpected server error occurred.']));
    const e500 = await editError(edit());
    expect([e500.code, e500.status, e500.retryable, e500.message]).toEqual(['upstream_error', 500, true, 'An unexpected server error occurred.']);
    fake.respondWith({ status: 502, headers: { 'content-type': 'text/html', 'retry-after': '1' }, body: '<html>Bad Gateway</html>' });
    const e502 = await editError(edit());
    expect([e502.code, e502.retryable, e502.retryAfterMs]).toEqual(['upstream_error', true, 1000]);
    expect(e502.message).toContain('502');
  });

  it('403 content_moderation is a permanent content policy violation with the upstream message', async () => {
    fake.respondWith(stabilityError(403, 'content_moderation', ['Your request was flagged by our content moderation system, as a result your request was denied and you were not charged.']));
    const err = await editError(edit());
    expect([err.code, err.status, err.retryable]).toEqual(['content_policy_violation', 403, false]);
    expect(err.message).toContain('flagged by our content moderation system');
  });

  it('finish_reason CONTENT_FILTERED is a permanent content policy violation', async () => {
    fake.respondWith(async ({ defaultBody }) => ({ body: { ...(await defaultBody()), finish_reason: 'CONTENT_FILTERED' } }));
    const err = await editError(edit());
    expect([err.code, err.retryable]).toEqual(['content_policy_violation', false]);
    expect(err.message).toContain('CONTENT_FILTERED');
  });

  it('other 4xx are permanent, keep the upstream message and name', async () => {
    fake.respondWith(stabilityError(400, 'bad_request', ['image: every side must be at least 64 pixels', 'seed: too large']));
    const err = await editError(edit());
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['bad_request', 400, false, 'image: every side must be at least 64 pixels; seed: too large']);
    fake.respondWith({ status: 413, body: 'Payload Too Large' });
    const e413 = await editError(edit());
    expect([e413.code, e413.status, e413.retryable]).toEqual(['provider_rejected', 413, false]);
  });

  it('the real fake rejects a too-small image with a 400', async () => {
    const tiny = await makePng(32, 32);
    const err = await editError(provider().edit({ model: 'inpaint', prompt: 'x', images: [input(tiny, 'png', 't.png', 32)], n: 1 }));
    expect([err.code, err.status, err.retryable]).toEqual(['bad_request', 400, false]);
    expect(err.message).toContain('64 pixels');
  });

  it('a bad key is provider_auth_failed and never echoed', async () => {
    const err = await editError(edit({}, createStabilityProvider({ apiKey: 'sk-wrong-key', baseURL: fake.url })));
    expect([err.code, err.status, err.retryable]).toEqual(['provider_auth_failed', 401, false]);
    expect(err.message).not.toContain('sk-wrong-key');
  });

  it('an upstream message quoting the key is redacted', async () => {
    fake.respondWith(stabilityError(400, 'bad_request', [`authorization: key ${API_KEY} is malformed`]));
    const err = await editError(edit());
    expect(err.message).not.toContain(API_KEY);
    expect(err.message).toContain('***');
  });

  it('a failure on a later call of n fails the edit', async () => {
    fake.respondWith({}, { times: 1 });
    fake.respondWith(stabilityError(500, 'internal_error', ['boom']));
    const err = await editError(provider().edit({ model: 'inpaint', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 2 }));
    expect([err.code, err.retryable]).toEqual(['upstream_error', true]);
    expect(fake.requests).toHaveLength(2);
  });

  it('a 200 that is not an image is upstream_invalid_response', async () => {
    fake.respondWith({ status: 200, headers: { 'content-type': 'application/json' }, body: 'not json' });
    expect((await editError(edit())).code).toBe('upstream_invalid_response');
    fake.respondWith({ body: { image: Buffer.from('hello').toString('base64'), finish_reason: 'SUCCESS', seed: 1 } });
    expect((await editError(edit())).code).toBe('upstream_invalid_response');
  });

  it('a closed port is upstream_unreachable', async () => {
    const server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const err = await editError(edit({}, createStabilityProvider({ apiKey: API_KEY, baseURL: `http://127.0.0.1:${port}` })));
    expect([err.code, err.retryable]).toEqual(['upstream_unreachable', true]);
    expect(err.message).not.toContain(API_KEY);
  });

  it('a timeout is upstream_timeout', async () => {
    const release = fake.hold();
    try {
      const err = await editError(edit({}, provider(300)));
      expect([err.code, err.retryable]).toEqual(['upstream_timeout', true]);
    } finally {
      release();
    }
  });

  it('an abort while the request is in flight is aborted, not retryable', async () => {
    const release = fake.hold();
    try {
      const controller = new AbortController();
      const pending = editError(edit({ signal: controller.signal }));
      await fake.waitForRequests(1);
      controller.abort();
      const err = await pending;
      expect([err.code, err.retryable]).toEqual(['aborted', false]);
    } finally {
      release();
    }
  });
});

describe('fake Stability server', () => {
  it('answers image/* with bytes and finish-reason/seed headers, and checks required fields', async () => {
    const form = new FormData();
    form.append('image', new Blob([opaque256], { type: 'image/png' }), 'a.png');
    form.append('prompt', 'golden retriever');
    form.append('search_prompt', 'dog');
    form.append('seed', '42');
    form.append('output_format', 'jpeg');
    const res = await fetch(`${fake.url}/v2beta/stable-image/edit/search-and-replace`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, accept: 'image/*' }, body: form });
    expect(res.status).toBe(200);
    expect([res.headers.get('content-type'), res.headers.get('finish-reason'), res.headers.get('seed')]).toEqual(['image/jpeg', 'SUCCESS', '42']);
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['jpeg', 256, 256]);

    const missing = new FormData();
    missing.append('image', new Blob([opaque256], { type: 'image/png' }), 'a.png');
    missing.append('prompt', 'golden retriever');
    const bad = await fetch(`${fake.url}/v2beta/stable-image/edit/search-and-replace`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, accept: 'application/json' }, body: missing });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ id: expect.any(String), name: 'bad_request', errors: ['search_prompt: required'] });
  });
});
