import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import sharp from 'sharp';
// deep imports: the package index also exports the integration harness (databases, servers)
import {
  type FakeGemini,
  geminiCandidateBlocked,
  geminiError,
  geminiPromptBlocked,
  geminiRateLimited,
  startFakeGemini,
} from '@image-edits/testing/src/fake-gemini';
import { makeMask, makeOpaque, makePng, pictureRgba } from '@image-edits/testing/src/fixtures';
import type { InputImage, ProviderEditRequest } from '../types';
import { ProviderError } from '../types';
import { createGeminiProvider, MASK_INSTRUCTION, nearestAspectRatio } from './gemini-provider';

const API_KEY = 'AIza-test-secret-key-789';
const MODEL = 'gemini-2.5-flash-image';
const HOLE = { x: 64, y: 64, width: 64, height: 64 };

let fake: FakeGemini;
let opaque256: Buffer;
let holed256: Buffer;
let mask256: Buffer;

const input = (data: Buffer, format: InputImage['format'], filename: string, width = 256, height = width): InputImage => ({ data, format, filename, width, height });
const provider = (timeoutMs = 10_000) => createGeminiProvider({ apiKey: API_KEY, baseURL: fake.url, timeoutMs });
const edit = (r: Partial<ProviderEditRequest>, opts?: { signal?: AbortSignal }) =>
  provider().edit({ model: MODEL, prompt: 'add a red balloon', images: [input(opaque256, 'png', 'canvas.png')], n: 1, ...r }, opts);

async function editError(p: Promise<unknown>): Promise<ProviderError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ProviderError);
    return err as ProviderError;
  }
  throw new Error('expected the edit to fail');
}

async function rgbaAt(png: Buffer, x: number, y: number): Promise<number[]> {
  const { data, info } = await sharp(png).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  const o = (y * info.width + x) * 4;
  return [data[o]!, data[o + 1]!, data[o + 2]!, data[o + 3]!];
}

beforeAll(async () => {
  fake = await startFakeGemini({ apiKey: API_KEY });
  opaque256 = await makePng(256, 256);
  holed256 = await makePng(256, 256, { hole: HOLE });
  mask256 = await makeMask(256, 256, HOLE);
});

afterAll(async () => {
  await fake.close();
});

beforeEach(() => fake.reset());

describe('Gemini provider: request', () => {
  it('sends the prompt and canvas as generateContent parts with the key header and aspect ratio', async () => {
    const provider = createGeminiProvider({ apiKey: API_KEY, baseURL: fake.url, timeoutMs: 10_000 });
    expect(provider.id).toBe('gemini');
    const result = await provider.edit({ model: MODEL, prompt: 'add a red balloon', images: [input(opaque256, 'png', 'canvas.png')], n: 1, size: '1024x1024' });

    expect(fake.requests).toHaveLength(1);
    const req = fake.requests[0]!;
    expect(req.method).toBe('POST');
    expect(req.path).toBe('/v1beta/models/gemini-2.5-flash-image:generateContent');
    expect([req.apiVersion, req.model]).toEqual(['v1beta', MODEL]);
    expect(req.headers['x-goog-api-key']).toBe(API_KEY);
    expect(req.query).toEqual({});
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.body).toEqual({
      contents: [{ role: 'user', parts: [{ text: 'add a red balloon' }, { inlineData: { mimeType: 'image/png', data: opaque256.toString('base64') } }] }],
      generationConfig: { responseModalities: ['TEXT', 'IMAGE'], imageConfig: { aspectRatio: '1:1' } },
    });

    expect(result.images).toHaveLength(1);
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([result.images[0]!.format, meta.format, meta.width, meta.height]).toEqual(['png', 'png', 1024, 1024]);
    expect(result.usage).toEqual({ inputTokens: 263, outputTokens: 1290, totalTokens: 1553, textTokens: 5, imageTokens: 258, outputTokensDetails: { image_tokens: 1290 } });
  });

  it('sends every image as inlineData in order with its real MIME type', async () => {
    const jpeg = await makeOpaque(300, 200, 'jpeg');
    const webp = await makeOpaque(200, 300, 'webp');
    await edit({ model: 'gemini-3-pro-image-preview', images: [input(opaque256, 'png', 'a.png'), input(jpeg, 'jpeg', 'b.jpg', 300, 200), input(webp, 'webp', 'c.webp', 200, 300)] });

    const req = fake.requests[0]!;
    expect(req.model).toBe('gemini-3-pro-image-preview');
    expect(req.parts.map((p) => p.text ?? p.inlineData?.mimeType)).toEqual(['add a red balloon', 'image/png', 'image/jpeg', 'image/webp']);
    expect(req.parts[1]!.inlineData!.data.equals(opaque256)).toBe(true);
    expect(req.parts[2]!.inlineData!.data.equals(jpeg)).toBe(true);
    expect(req.parts[3]!.inlineData!.data.equals(webp)).toBe(true);
    // no size: no imageConfig at all
    expect(req.generationConfig).toEqual({ responseModalities: ['TEXT', 'IMAGE'] });
  });

  it('composites the mask: canvas, then the canvas with the edit region in magenta, and the instruction', async () => {
    await edit({ prompt: 'a red balloon', mask: input(mask256, 'png', 'mask.png') });

    const parts = fake.requests[0]!.parts;
    expect(parts.map((p) => p.text ?? p.inlineData?.mimeType)).toEqual([`${MASK_INSTRUCTION}\n\na red balloon`, 'image/png', 'image/png']);
    expect(parts[0]!.text).toContain('keep every other pixel');
    expect(parts[1]!.inlineData!.data.equals(opaque256)).toBe(true);

    const marked = parts[2]!.inlineData!.data;
    const meta = await sharp(marked).metadata();
    expect([meta.width, meta.height]).toEqual([256, 256]);
    const source = pictureRgba(256, 256);
    const at = (x: number, y: number) => Array.from(source.subarray((y * 256 + x) * 4, (y * 256 + x) * 4 + 4));
    // inside the edit region: half canvas, half magenta
    for (const [x, y] of [
      [64, 64],
      [100, 90],
      [127, 127],
    ] as const) {
      const [r, g, b] = at(x, y);
      expect(await rgbaAt(marked, x, y)).toEqual([Math.round((r! + 255) / 2), Math.round(g! / 2), Math.round((b! + 255) / 2), 255]);
    }
    // outside: the canvas, untouched
    for (const [x, y] of [
      [0, 0],
      [63, 64],
      [128, 128],
      [200, 30],
    ] as const) {
      expect(await rgbaAt(marked, x, y)).toEqual(at(x, y));
    }
  });

  it('without a mask, the canvas transparency is the mask (solid magenta where transparent)', async () => {
    await edit({ images: [input(holed256, 'png', 'holed.png')] });

    const parts = fake.requests[0]!.parts;
    expect(parts).toHaveLength(3);
    expect(parts[0]!.text).toBe(`${MASK_INSTRUCTION}\n\nadd a red balloon`);
    expect(parts[1]!.inlineData!.data.equals(holed256)).toBe(true);
    const marked = parts[2]!.inlineData!.data;
    expect(await rgbaAt(marked, 80, 80)).toEqual([255, 0, 255, 255]);
    expect(await rgbaAt(marked, 10, 10)).toEqual(await rgbaAt(holed256, 10, 10));
  });

  it('an opaque canvas without a mask is a plain edit: no overlay, no instruction', async () => {
    await edit({});
    expect(fake.requests[0]!.parts.map((p) => p.text ?? p.inlineData?.mimeType)).toEqual(['add a red balloon', 'image/png']);
  });
});

describe('Gemini provider: sizes', () => {
  it('maps sizes to the nearest supported aspect ratio', () => {
    expect(nearestAspectRatio(1024, 1024)).toBe('1:1');
    expect(nearestAspectRatio(1536, 1024)).toBe('3:2');
    expect(nearestAspectRatio(1024, 1536)).toBe('2:3');
    expect(nearestAspectRatio(1920, 1080)).toBe('16:9');
    expect(nearestAspectRatio(1080, 1920)).toBe('9:16');
    expect(nearestAspectRatio(2560, 1080)).toBe('21:9');
    expect(nearestAspectRatio(1000, 500)).toBe('16:9');
    expect(nearestAspectRatio(800, 600)).toBe('4:3');
    expect(nearestAspectRatio(1024, 1280)).toBe('4:5');
    expect(nearestAspectRatio(256, 256)).toBe('1:1');
  });

  it.each([
    ['1536x1024', '3:2', [1248, 832]],
    ['1024x1536', '2:3', [832, 1248]],
    ['1000x500', '16:9', [1344, 768]],
  ] as const)('%s is sent as %s and the %j output is resized to exactly the size', async (size, ratio, upstream) => {
    let upstreamSize: number[] = [];
    fake.respondWith(async ({ defaultBody }) => {
      const body = await defaultBody();
      const parts = (body.candidates as { content: { parts: { inlineData?: { data: string } }[] } }[])[0]!.content.parts;
      const meta = await sharp(Buffer.from(parts.find((p) => p.inlineData)!.inlineData!.data, 'base64')).metadata();
      upstreamSize = [meta.width!, meta.height!];
      return { body };
    });
    const result = await edit({ size });
    expect(fake.requests[0]!.generationConfig).toEqual({ responseModalities: ['TEXT', 'IMAGE'], imageConfig: { aspectRatio: ratio } });
    expect(upstreamSize).toEqual(upstream);
    const [w, h] = size.split('x').map(Number);
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([result.images[0]!.format, meta.format, meta.width, meta.height]).toEqual(['png', 'png', w, h]);
  });

  it('auto and unset sizes send no aspect ratio and keep what comes back', async () => {
    const wide = await makeOpaque(600, 400, 'png');
    for (const size of ['auto', undefined]) {
      fake.reset();
      const result = await edit({ size, images: [input(wide, 'png', 'wide.png', 600, 400)] });
      expect(fake.requests[0]!.generationConfig).toEqual({ responseModalities: ['TEXT', 'IMAGE'] });
      const meta = await sharp(result.images[0]!.data).metadata();
      expect([meta.width, meta.height]).toEqual([1248, 832]);
    }
  });

  it('asks models with resolution tiers for 2K/4K when the size needs it, never gemini-2.5-flash-image', async () => {
    // a small picture keeps the test fast: only the request matters here
    const small = (await makeOpaque(32, 32, 'png')).toString('base64');
    fake.respondWith({ body: { candidates: [{ content: { parts: [{ inlineData: { mimeType: 'image/png', data: small } }] }, finishReason: 'STOP' }] } }, { times: Infinity });
    await edit({ model: 'gemini-3-pro-image-preview', size: '2048x2048' });
    await edit({ model: 'gemini-3-pro-image-preview', size: '2560x1440' });
    await edit({ model: 'gemini-3-pro-image-preview', size: '1024x1024' });
    await edit({ model: MODEL, size: '2048x2048' });
    expect(fake.requests.map((r) => r.generationConfig?.imageConfig)).toEqual([
      { aspectRatio: '1:1', imageSize: '2K' },
      { aspectRatio: '16:9', imageSize: '4K' },
      { aspectRatio: '1:1' },
      { aspectRatio: '1:1' },
    ]);
  });
});

describe('Gemini provider: outputs', () => {
  it('makes n calls for n images and sums the usage', async () => {
    const result = await edit({ n: 3, size: '1024x1024' });
    expect(fake.requests).toHaveLength(3);
    for (const req of fake.requests) expect(req.body).toEqual(fake.requests[0]!.body);
    expect(result.images).toHaveLength(3);
    for (const img of result.images) expect((await sharp(img.data).metadata()).format).toBe('png');
    expect(result.usage).toEqual({ inputTokens: 3 * 263, outputTokens: 3 * 1290, totalTokens: 3 * 1553, textTokens: 15, imageTokens: 3 * 258, outputTokensDetails: { image_tokens: 3 * 1290 } });
  });

  it('re-encodes to the requested output format and compression', async () => {
    const jpeg = await edit({ outputFormat: 'jpeg', outputCompression: 40 });
    expect(jpeg.images[0]!.format).toBe('jpeg');
    expect((await sharp(jpeg.images[0]!.data).metadata()).format).toBe('jpeg');
    const webp = await edit({ outputFormat: 'webp', size: '1536x1024' });
    const meta = await sharp(webp.images[0]!.data).metadata();
    expect([webp.images[0]!.format, meta.format, meta.width, meta.height]).toEqual(['webp', 'webp', 1536, 1024]);
    // re-encoded: Gemini's base64 is not theirs, so none is kept beside them
    expect([jpeg.images[0]!.base64, webp.images[0]!.base64]).toEqual([undefined, undefined]);
    // nothing to change: the upstream bytes as they came, and its base64 kept for a waiting client
    const sent = (await makeOpaque(32, 32, 'jpeg')).toString('base64');
    fake.respondWith({ body: { candidates: [{ content: { parts: [{ inlineData: { mimeType: 'image/jpeg', data: sent } }] }, finishReason: 'STOP' }] } });
    const asIs = await edit({});
    expect(asIs.images[0]).toEqual({ data: await makeOpaque(32, 32, 'jpeg'), format: 'jpeg', base64: sent });
    expect(asIs.usage).toBeUndefined();
  });

  it('skips interim thought images and text parts', async () => {
    const thought = await makeOpaque(16, 16, 'png');
    const final = await makeOpaque(24, 24, 'png');
    fake.respondWith({
      body: {
        candidates: [
          {
            content: {
              role: 'model',
              parts: [
                { text: 'Planning the composition...', thought: true },
                { inlineData: { mimeType: 'image/png', data: thought.toString('base64') }, thought: true },
                { text: 'Here you go.' },
                { inlineData: { mimeType: 'image/png', data: final.toString('base64') }, thoughtSignature: 'c2ln' },
              ],
            },
            finishReason: 'STOP',
          },
        ],
        usageMetadata: { promptTokenCount: 300, candidatesTokenCount: 1120, thoughtsTokenCount: 200, totalTokenCount: 1620 },
      },
    });
    const result = await edit({ model: 'gemini-3-pro-image-preview' });
    expect(result.images[0]!.data.equals(final)).toBe(true);
    expect(result.usage).toEqual({ inputTokens: 300, outputTokens: 1120, totalTokens: 1620 });
  });
});

describe('Gemini provider: refusals and unsupported parameters', () => {
  it('a blocked prompt is a permanent content_policy_violation', async () => {
    fake.respondWith(geminiPromptBlocked('PROHIBITED_CONTENT', 'The prompt may violate the policy.'));
    const err = await editError(edit({}));
    expect([err.code, err.retryable, err.provider]).toEqual(['content_policy_violation', false, 'gemini']);
    expect(err.message).toBe('the prompt was blocked (PROHIBITED_CONTENT): The prompt may violate the policy.');
  });

  it.each(['SAFETY', 'PROHIBITED_CONTENT', 'IMAGE_SAFETY'])('finishReason %s without an image is a permanent content_policy_violation', async (reason) => {
    fake.respondWith(geminiCandidateBlocked(reason, 'Unable to show the generated image.'));
    const err = await editError(edit({}));
    expect([err.code, err.retryable]).toEqual(['content_policy_violation', false]);
    // the SDK (3.1.0) does not pass the Gemini API's `finishMessage` through
    expect(err.message).toBe(`Gemini returned no image (finish reason ${reason})`);
    expect(fake.requests).toHaveLength(1);
  });

  it('a text-only answer is a retryable upstream_invalid_response carrying the text', async () => {
    fake.respondWith({ body: { candidates: [{ content: { role: 'model', parts: [{ text: 'Which balloon colour would you like?' }] }, finishReason: 'STOP' }] } });
    const err = await editError(edit({}));
    expect([err.code, err.retryable, err.message]).toEqual(['upstream_invalid_response', true, 'Gemini returned no image (finish reason STOP): Which balloon colour would you like?']);
  });

  it.each([
    [{ quality: 'high' }, 'quality'],
    [{ background: 'transparent' }, 'background'],
    [{ inputFidelity: 'high' }, 'input_fidelity'],
    [{ outputCompression: 50 }, 'output_compression'],
    [{ size: 'large' }, 'size'],
  ] as const)('%j is refused as unsupported_parameter before any request', async (params, name) => {
    const err = await editError(edit(params));
    expect([err.code, err.retryable]).toEqual(['unsupported_parameter', false]);
    expect(err.message).toContain(name);
    expect(fake.requests).toHaveLength(0);
  });

  it('refuses more images than the model takes, counting the mask overlay', async () => {
    const three = [input(opaque256, 'png', 'a.png'), input(opaque256, 'png', 'b.png'), input(opaque256, 'png', 'c.png')];
    const err = await editError(edit({ images: three, mask: input(mask256, 'png', 'm.png') }));
    expect([err.code, err.retryable]).toEqual(['unsupported_parameter', false]);
    expect(err.message).toBe('image: 4 input images (3 images plus the mask overlay) exceed the 3 the Gemini model gemini-2.5-flash-image accepts');
    expect(fake.requests).toHaveLength(0);
    await edit({ images: three });
    expect(fake.requests[0]!.parts.filter((p) => p.inlineData)).toHaveLength(3);
  });
});

describe('Gemini provider: error classification', () => {
  it('429 RESOURCE_EXHAUSTED with a RetryInfo delay is retryable with retryAfterMs', async () => {
    fake.respondWith(geminiRateLimited('13.5s'));
    const err = await editError(edit({}));
    expect([err.code, err.status, err.retryable, err.retryAfterMs]).toEqual(['rate_limited', 429, true, 13500]);
    expect(err.message).toBe('You exceeded your current quota, please check your plan and billing details.');
  });

  it('429 with a Retry-After header uses the header', async () => {
    fake.respondWith(geminiError(429, 'Resource has been exhausted (e.g. check quota).', { headers: { 'retry-after': '7' } }));
    const err = await editError(edit({}));
    expect([err.code, err.retryable, err.retryAfterMs]).toEqual(['rate_limited', true, 7000]);
  });

  it('429 without a retry hint is retryable without retryAfterMs', async () => {
    fake.respondWith(geminiError(429, 'Resource has been exhausted (e.g. check quota).'));
    const err = await editError(edit({}));
    expect([err.code, err.retryable, err.retryAfterMs]).toEqual(['rate_limited', true, null]);
  });

  it('5xx are retryable upstream_error, JSON or not', async () => {
    fake.respondWith(geminiError(503, 'The model is overloaded. Please try again later.'));
    const e503 = await editError(edit({}));
    expect([e503.code, e503.status, e503.retryable, e503.message]).toEqual(['upstream_error', 503, true, 'The model is overloaded. Please try again later.']);
    fake.respondWith(geminiError(500, 'An internal error has occurred.'));
    expect((await editError(edit({}))).code).toBe('upstream_error');
    fake.respondWith({ status: 502, headers: { 'content-type': 'text/html' }, body: '<html>Bad Gateway</html>' });
    const e502 = await editError(edit({}));
    expect([e502.code, e502.status, e502.retryable, e502.message]).toEqual(['upstream_error', 502, true, '<html>Bad Gateway</html>']);
  });

  it('other 4xx are permanent with the upstream message', async () => {
    fake.respondWith(geminiError(400, 'Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting'));
    const err = await editError(edit({}));
    expect([err.code, err.status, err.retryable]).toEqual(['provider_rejected', 400, false]);
    expect(err.message).toBe('Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting');
    fake.respondWith(geminiError(404, 'models/gemini-9-image is not found for API version v1beta.'));
    const e404 = await editError(edit({ model: 'gemini-9-image' }));
    expect([e404.code, e404.status, e404.retryable]).toEqual(['provider_rejected', 404, false]);
  });

  it('a bad key is provider_auth_failed and the key never reaches the message', async () => {
    const wrong = createGeminiProvider({ apiKey: 'AIza-wrong-key', baseURL: fake.url });
    const err = await editError(wrong.edit({ model: MODEL, prompt: 'x', images: [input(opaque256, 'png', 'a.png')], n: 1 }));
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['provider_auth_failed', 400, false, 'API key not valid. Please pass a valid API key.']);
    expect(err.message).not.toContain('AIza-wrong-key');

    fake.respondWith(geminiError(403, `Permission denied for key ${API_KEY}.`));
    const echoed = await editError(edit({}));
    expect([echoed.code, echoed.retryable]).toEqual(['provider_auth_failed', false]);
    expect(echoed.message).toBe('Permission denied for key ***.');
  });

  it('a closed port is upstream_unreachable', async () => {
    const server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const p = createGeminiProvider({ apiKey: API_KEY, baseURL: `http://127.0.0.1:${port}` });
    const err = await editError(p.edit({ model: MODEL, prompt: 'x', images: [input(opaque256, 'png', 'a.png')], n: 1 }));
    expect([err.code, err.retryable]).toEqual(['upstream_unreachable', true]);
    expect(err.message).not.toContain(API_KEY);
  });

  it('a timeout is upstream_timeout', async () => {
    const release = fake.hold();
    try {
      const err = await editError(provider(300).edit({ model: MODEL, prompt: 'x', images: [input(opaque256, 'png', 'a.png')], n: 1 }));
      expect([err.code, err.retryable]).toEqual(['upstream_timeout', true]);
    } finally {
      release();
    }
  });

  it('an abort while the request is in flight is aborted, not retryable', async () => {
    const release = fake.hold();
    try {
      const controller = new AbortController();
      const pending = editError(edit({}, { signal: controller.signal }));
      await fake.waitForRequests(1);
      controller.abort();
      const err = await pending;
      expect([err.code, err.retryable]).toEqual(['aborted', false]);
    } finally {
      release();
    }
  });
});
