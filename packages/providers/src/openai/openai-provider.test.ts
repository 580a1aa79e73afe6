import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import sharp from 'sharp';
// deep imports: the package index also exports the integration harness (databases, servers)
import { type FakeOpenAI, openAIError, startFakeOpenAI } from '@image-edits/testing/src/fake-openai';
import { makeMask, makeOpaque, makePng } from '@image-edits/testing/src/fixtures';
import type { InputImage, ProviderEditRequest } from '../types';
import { ProviderError } from '../types';
import { createAzureOpenAIProvider, createOpenAIProvider } from './openai-provider';

const API_KEY = 'sk-test-secret-key-123';
const AZURE_KEY = 'azure-secret-key-456';

let fake: FakeOpenAI;
let png256: Buffer;
let mask256: Buffer;

const input = (data: Buffer, format: InputImage['format'], filename: string, size = 256): InputImage => ({ data, format, filename, width: size, height: size });

async function editError(p: Promise<unknown>): Promise<ProviderError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ProviderError);
    return err as ProviderError;
  }
  throw new Error('expected the edit to fail');
}

beforeAll(async () => {
  fake = await startFakeOpenAI({ apiKey: API_KEY, azure: { apiKey: AZURE_KEY } });
  png256 = await makePng(256, 256, { hole: { x: 64, y: 64, width: 64, height: 64 } });
  mask256 = await makeMask(256, 256, { x: 64, y: 64, width: 64, height: 64 });
});

afterAll(async () => {
  await fake.close();
});

beforeEach(() => fake.reset());

describe('OpenAI provider', () => {
  const provider = () => createOpenAIProvider({ apiKey: API_KEY, baseURL: fake.url, timeoutMs: 10_000 });

  it('sends dall-e-2 image + mask unchanged and returns decodable PNGs', async () => {
    const result = await provider().edit({
      model: 'dall-e-2',
      prompt: 'a red balloon in the hole',
      images: [input(png256, 'png', 'canvas.png')],
      mask: input(mask256, 'png', 'mask.png'),
      n: 2,
      size: '256x256',
      user: 'user-42',
    });

    expect(fake.requests).toHaveLength(1);
    const req = fake.requests[0]!;
    expect(req.path).toBe('/v1/images/edits');
    expect(req.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(req.fields).toEqual({ prompt: 'a red balloon in the hole', model: 'dall-e-2', n: '2', size: '256x256', user: 'user-42', response_format: 'b64_json' });
    expect(req.files).toHaveLength(2);
    const image = req.files.find((f) => f.field === 'image');
    const mask = req.files.find((f) => f.field === 'mask');
    expect(image?.filename).toBe('canvas.png');
    expect(image?.contentType).toBe('image/png');
    expect(image?.data.equals(png256)).toBe(true);
    expect(mask?.filename).toBe('mask.png');
    expect(mask?.contentType).toBe('image/png');
    expect(mask?.data.equals(mask256)).toBe(true);

    expect(result.images).toHaveLength(2);
    expect(result.usage).toBeUndefined();
    for (const img of result.images) {
      expect(img.format).toBe('png');
      const meta = await sharp(img.data).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(['png', 256, 256]);
    }
  });

  it('sends several GPT images as image[] with GPT parameters unchanged and captures usage', async () => {
    const jpeg = await makeOpaque(300, 200, 'jpeg');
    const webp = await makeOpaque(200, 300, 'webp');
    const result = await provider().edit({
      model: 'gpt-image-1',
      prompt: 'combine these into a poster',
      images: [input(png256, 'png', 'a.png'), input(jpeg, 'jpeg', 'b.jpg'), input(webp, 'webp', 'c.webp')],
      n: 1,
      size: '1536x1024',
      quality: 'high',
      background: 'opaque',
      outputFormat: 'webp',
      outputCompression: 70,
      inputFidelity: 'high',
    });

    const req = fake.requests[0]!;
    expect(req.files.map((f) => [f.field, f.filename, f.contentType])).toEqual([
      ['image[]', 'a.png', 'image/png'],
      ['image[]', 'b.jpg', 'image/jpeg'],
      ['image[]', 'c.webp', 'image/webp'],
    ]);
    expect(req.files[0]!.data.equals(png256)).toBe(true);
    expect(req.files[1]!.data.equals(jpeg)).toBe(true);
    expect(req.files[2]!.data.equals(webp)).toBe(true);
    expect(req.fields).toEqual({
      prompt: 'combine these into a poster',
      model: 'gpt-image-1',
      n: '1',
      size: '1536x1024',
      quality: 'high',
      background: 'opaque',
      output_format: 'webp',
      output_compression: '70',
      input_fidelity: 'high',
    });
    expect(req.fields.response_format).toBeUndefined();

    expect(result.images).toHaveLength(1);
    expect(result.images[0]!.format).toBe('webp');
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['webp', 1536, 1024]);
    expect(result.usage).toEqual({
      inputTokens: expect.any(Number),
      outputTokens: expect.any(Number),
      totalTokens: expect.any(Number),
      imageTokens: expect.any(Number),
      textTokens: expect.any(Number),
    });
    expect(result.usage!.totalTokens).toBe(result.usage!.inputTokens! + result.usage!.outputTokens!);
  });

  it('does not send parameters that are not set', async () => {
    const result = await provider().edit({ model: 'gpt-image-1', prompt: 'x', images: [input(png256, 'png', 'only.png')], n: 1 });
    const req = fake.requests[0]!;
    expect(req.fields).toEqual({ prompt: 'x', model: 'gpt-image-1', n: '1' });
    expect(req.files.map((f) => f.field)).toEqual(['image']);
    // no output_format in a request: the format comes from the response (or the bytes)
    expect(result.images[0]!.format).toBe('png');
  });

  it('passes moderation and safety_identifier, and keeps output_tokens_details', async () => {
    fake.respondWith(async (ctx) => {
      const body = await ctx.defaultBody();
      return { body: { ...body, usage: { ...(body.usage as object), output_tokens_details: { image_tokens: 1000, text_tokens: 56 } } } };
    });
    const result = await provider().edit({ model: 'gpt-image-1', prompt: 'x', images: [input(png256, 'png', 'only.png')], n: 1, moderation: 'low', safetyIdentifier: 'user-hash' });
    expect(fake.requests[0]!.fields).toMatchObject({ moderation: 'low', safety_identifier: 'user-hash' });
    expect(result.usage!.outputTokensDetails).toEqual({ image_tokens: 1000, text_tokens: 56 });
  });

  it('fetches the bytes when the upstream answers with url', async () => {
    fake.respondWith(({ defaultBody }) => defaultBody({ responseFormat: 'url' }).then((body) => ({ body })));
    const result = await provider().edit({ model: 'gpt-image-1', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 2, size: '1024x1024' });
    expect(fake.requests.map((r) => `${r.method} ${r.path.split('/').slice(0, 2).join('/')}`)).toEqual(['POST /v1', 'GET /files', 'GET /files']);
    expect(result.images).toHaveLength(2);
    for (const img of result.images) {
      const meta = await sharp(img.data).metadata();
      expect([img.format, meta.width, meta.height]).toEqual(['png', 1024, 1024]);
    }
  });

  it('sniffs the format when the response does not declare one', async () => {
    const jpeg = await makeOpaque(16, 16, 'jpeg');
    fake.respondWith({ body: { created: 1, data: [{ b64_json: jpeg.toString('base64'), revised_prompt: 'a better prompt' }] } });
    const result = await provider().edit({ model: 'dall-e-2', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 1 });
    // the provider's base64 kept beside the bytes: a waiting client gets that text as it came
    expect(result.images[0]).toEqual({ data: jpeg, format: 'jpeg', revisedPrompt: 'a better prompt', base64: jpeg.toString('base64') });
  });
});

describe('Azure OpenAI provider', () => {
  it('calls the deployment URL with api-version and the api-key header', async () => {
    const provider = createAzureOpenAIProvider({ endpoint: `${fake.origin}/`, apiKey: AZURE_KEY, apiVersion: '2025-04-01-preview' });
    expect(provider.id).toBe('azure-openai');
    const result = await provider.edit({ model: 'my-gpt-image', prompt: 'x', images: [input(png256, 'png', 'a.png')], mask: input(mask256, 'png', 'm.png'), n: 1, quality: 'low' });

    const req = fake.requests[0]!;
    expect(req.path).toBe('/openai/deployments/my-gpt-image/images/edits');
    expect(req.deployment).toBe('my-gpt-image');
    expect(req.query).toEqual({ 'api-version': '2025-04-01-preview' });
    expect(req.headers['api-key']).toBe(AZURE_KEY);
    expect(req.headers.authorization ?? '').not.toContain(AZURE_KEY);
    expect(req.fields.response_format).toBeUndefined();
    expect(req.fields.quality).toBe('low');
    expect(req.files.map((f) => f.field)).toEqual(['image', 'mask']);
    expect(result.images).toHaveLength(1);
  });

  it('asks DALL·E deployments for b64_json', async () => {
    const provider = createAzureOpenAIProvider({ endpoint: fake.origin, apiKey: AZURE_KEY, apiVersion: '2024-02-01', dallEDeployments: ['painter'] });
    await provider.edit({ model: 'painter', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 1, size: '256x256' });
    expect(fake.requests[0]!.fields.response_format).toBe('b64_json');
  });

  it('classifies a bad key as provider_auth_failed', async () => {
    const provider = createAzureOpenAIProvider({ endpoint: fake.origin, apiKey: 'wrong-key', apiVersion: '2024-02-01' });
    const err = await editError(provider.edit({ model: 'd', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 1 }));
    expect([err.code, err.status, err.retryable, err.provider]).toEqual(['provider_auth_failed', 401, false, 'azure-openai']);
    expect(err.message).not.toContain('wrong-key');
  });

  it('classifies an Azure content filter refusal', async () => {
    fake.respondWith({ status: 400, body: { error: { code: 'contentFilter', message: 'Your request was filtered.' } } });
    const provider = createAzureOpenAIProvider({ endpoint: fake.origin, apiKey: AZURE_KEY, apiVersion: '2024-02-01' });
    const err = await editError(provider.edit({ model: 'd', prompt: 'x', images: [input(png256, 'png', 'a.png')], n: 1 }));
    expect([err.code, err.retryable, err.message]).toEqual(['content_policy_violation', false, 'Your request was filtered.']);
  });
});

describe('error classification', () => {
  const provider = () => createOpenAIProvider({ apiKey: API_KEY, baseURL: fake.url, timeoutMs: 10_000 });
  const request: ProviderEditRequest = { model: 'gpt-image-1', prompt: 'x', images: [], n: 1 };
  const edit = (opts?: { signal?: AbortSignal }, p = provider()) => p.edit({ ...request, images: [input(png256, 'png', 'a.png')] }, opts);

  it('429 with retry-after seconds', async () => {
    fake.respondWith(openAIError(429, 'Rate limit reached', { code: 'rate_limit_exceeded', type: 'requests', headers: { 'retry-after': '2' } }));
    const err = await editError(edit());
    expect([err.code, err.status, err.retryable, err.retryAfterMs, err.message]).toEqual(['rate_limited', 429, true, 2000, 'Rate limit reached']);
  });

  it('429 prefers retry-after-ms', async () => {
    fake.respondWith(openAIError(429, 'slow down', { headers: { 'retry-after': '2', 'retry-after-ms': '150' } }));
    const err = await editError(edit());
    expect([err.code, err.retryable, err.retryAfterMs]).toEqual(['rate_limited', true, 150]);
  });

  it('429 with an HTTP date', async () => {
    fake.respondWith(openAIError(429, 'slow down', { headers: { 'retry-after': new Date(Date.now() + 5000).toUTCString() } }));
    const err = await editError(edit());
    expect(err.retryAfterMs).toBeGreaterThan(2000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(5000);
  });

  it('500 and 409 are retryable', async () => {
    fake.respondWith(openAIError(500, 'The server had an error'));
    const e500 = await editError(edit());
    expect([e500.code, e500.status, e500.retryable, e500.message]).toEqual(['upstream_error', 500, true, 'The server had an error']);
    fake.respondWith(openAIError(409, 'conflict'));
    const e409 = await editError(edit());
    expect([e409.code, e409.retryable]).toEqual(['upstream_error', true]);
  });

  it('400 content_policy_violation is not retryable and keeps the upstream message', async () => {
    fake.respondWith(openAIError(400, 'Your request was rejected as a result of our safety system.', { code: 'content_policy_violation' }));
    const err = await editError(edit());
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['content_policy_violation', 400, false, 'Your request was rejected as a result of our safety system.']);
  });

  it('moderation_blocked is a content policy violation', async () => {
    fake.respondWith(openAIError(400, 'blocked by moderation', { code: 'moderation_blocked' }));
    expect((await editError(edit())).code).toBe('content_policy_violation');
  });

  it('other 4xx keep the upstream code, or provider_rejected', async () => {
    fake.respondWith(openAIError(400, "Invalid value: 'foo'.", { code: 'invalid_value', param: 'quality' }));
    const coded = await editError(edit());
    expect([coded.code, coded.retryable, coded.message, coded.param]).toEqual(['invalid_value', false, "Invalid value: 'foo'.", 'quality']);
    fake.respondWith(openAIError(413, 'too large'));
    const plain = await editError(edit());
    expect([plain.code, plain.status, plain.retryable, plain.param]).toEqual(['provider_rejected', 413, false, null]);
  });

  it('401 is not retryable and never echoes the key', async () => {
    const err = await editError(edit({}, createOpenAIProvider({ apiKey: 'sk-wrong', baseURL: fake.url })));
    expect([err.code, err.status, err.retryable]).toEqual(['provider_auth_failed', 401, false]);
    expect(err.message).toBe('Incorrect API key provided.');
    expect(err.message).not.toContain('sk-wrong');
  });

  it('a closed port is upstream_unreachable', async () => {
    const server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const err = await editError(edit({}, createOpenAIProvider({ apiKey: API_KEY, baseURL: `http://127.0.0.1:${port}/v1` })));
    expect([err.code, err.retryable]).toEqual(['upstream_unreachable', true]);
    expect(err.message).not.toContain(API_KEY);
  });

  it('a timeout is upstream_timeout', async () => {
    const release = fake.hold();
    try {
      const err = await editError(edit({}, createOpenAIProvider({ apiKey: API_KEY, baseURL: fake.url, timeoutMs: 300 })));
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

describe('fake OpenAI server', () => {
  it('accepts repeated image parts on the Azure v1 surface and rejects a missing key', async () => {
    const form = new FormData();
    form.append('image', new Blob([png256], { type: 'image/png' }), 'one.png');
    form.append('image', new Blob([png256], { type: 'image/png' }), 'two.png');
    form.append('prompt', 'x');
    form.append('model', 'gpt-image-1');
    const ok = await fetch(`${fake.origin}/openai/v1/images/edits`, { method: 'POST', headers: { 'api-key': AZURE_KEY }, body: form });
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as { data: { b64_json: string }[]; usage: { total_tokens: number }; output_format: string };
    expect(body.data).toHaveLength(1);
    expect(body.output_format).toBe('png');
    expect(fake.requests[0]!.files.map((f) => [f.field, f.filename])).toEqual([
      ['image', 'one.png'],
      ['image', 'two.png'],
    ]);

    const denied = await fetch(`${fake.url}/images/edits`, { method: 'POST', body: form });
    expect(denied.status).toBe(401);
    expect(((await denied.json()) as { error: { code: string } }).error.code).toBe('invalid_api_key');
  });
});
