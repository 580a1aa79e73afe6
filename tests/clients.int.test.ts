import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { type FakeOpenAI, makeMask, makeOpaque, makePng, openAIError, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import OpenAI, { toFile } from 'openai';
import OpenAIv4, { toFile as toFileV4 } from 'openai-v4';
import { decode, get } from './helpers';

/**
 * Every OpenAI client, unchanged, against the running service: the official `openai` SDK (current
 * and 4.x) and the Vercel AI SDK, against the offline local-inpaint model and against gpt-image-1 on
 * a fake OpenAI (and Azure) upstream. Answers, defaults, usage and errors as OpenAI gives them.
 */

// biome-ignore lint/suspicious/noExplicitAny: SDK answers and job objects are JSON taken apart by the assertions
type Json = any;

const ROOT = path.resolve(__dirname, '..');
let svc: TestService;
let upstream: FakeOpenAI;
let azure: FakeOpenAI;
let dir: string;

beforeAll(async () => {
  upstream = await startFakeOpenAI({ apiKey: 'sk-upstream' });
  azure = await startFakeOpenAI({ azure: { apiKey: 'azure-key' } });
  svc = await startTestService({
    OPENAI_API_KEY: 'sk-upstream',
    OPENAI_BASE_URL: upstream.url,
    AZURE_OPENAI_ENDPOINT: azure.origin,
    AZURE_OPENAI_API_KEY: 'azure-key',
    OPENAI_API_VERSION: '2025-04-01-preview',
    AZURE_OPENAI_DEPLOYMENTS: 'gpt-image-1=my-image-deployment',
  });
  dir = mkdtempSync(path.join(os.tmpdir(), 'clients-'));
});
afterAll(async () => {
  await svc?.stop();
  await upstream?.close();
  await azure?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  upstream.reset();
  azure.reset();
});

const hole = { x: 16, y: 16, width: 16, height: 16 };
/** What the fake upstream reports: input details and output details, to be relayed whole. */
const UPSTREAM_USAGE = {
  input_tokens: 980,
  input_tokens_details: { image_tokens: 969, text_tokens: 11 },
  output_tokens: 4160,
  total_tokens: 5140,
  output_tokens_details: { image_tokens: 4096, text_tokens: 64 },
};

interface Sdk {
  name: string;
  /** one edit through the SDK's images.edit, with the job id from the answer's headers */
  edit(body: Record<string, unknown>): Promise<{ data: Json; jobId: string | null }>;
  file(data: Buffer, name: string, type?: string): Promise<unknown>;
  BadRequestError: abstract new (...args: never[]) => Error;
}

const sdks: Sdk[] = [
  {
    name: 'openai (current)',
    async edit(body) {
      const client = new OpenAI({ apiKey: svc.apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });
      const { data, response } = await client.images.edit(body as never).withResponse();
      return { data, jobId: response.headers.get('x-job-id') };
    },
    file: (data, name, type = 'image/png') => toFile(data, name, { type }),
    BadRequestError: OpenAI.BadRequestError,
  },
  {
    name: 'openai 4.x',
    async edit(body) {
      const client = new OpenAIv4({ apiKey: svc.apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });
      const { data, response } = await client.images.edit(body as never).withResponse();
      return { data, jobId: response.headers.get('x-job-id') };
    },
    file: (data, name, type = 'image/png') => toFileV4(data, name, { type }),
    BadRequestError: OpenAIv4.BadRequestError,
  },
];

async function fetchPng(url: string) {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return decode(Buffer.from(await res.arrayBuffer()));
}

async function failure(p: Promise<unknown>): Promise<Error & { status?: number; param?: string | null; code?: string | null }> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the edit to fail');
}

describe.each(sdks)('$name', (sdk) => {
  it('local-inpaint, image + mask, no response_format: b64_json (as gpt-image answers) at the input\'s size', async () => {
    const { data } = await sdk.edit({ model: 'local-inpaint', image: await sdk.file(await makePng(96, 96), 'in.png'), mask: await sdk.file(await makeMask(96, 96, hole), 'mask.png'), prompt: 'fill it' });
    expect(Object.keys(data.data[0])).toEqual(['b64_json']);
    expect(await decode(Buffer.from(data.data[0].b64_json, 'base64'))).toMatchObject({ format: 'png', width: 96, height: 96 });
  });

  it('local-inpaint, response_format url: a presigned URL to the PNG', async () => {
    const { data } = await sdk.edit({ model: 'local-inpaint', image: await sdk.file(await makePng(64, 64, { hole }), 'in.png'), prompt: 'x', response_format: 'url', size: '256x256' });
    expect(await fetchPng(data.data[0].url)).toMatchObject({ format: 'png', width: 256, height: 256 });
  });

  it('gpt-image-1: several images and a mask arrive unchanged; b64_json by default; the upstream usage whole in the answer and the job', async () => {
    upstream.respondWith(async (ctx) => ({ body: { ...(await ctx.defaultBody()), usage: UPSTREAM_USAGE } }));
    const images = [await makePng(128, 96), await makeOpaque(128, 96, 'jpeg'), await makeOpaque(128, 96, 'webp')];
    const mask = await makeMask(128, 96, hole);
    const { data, jobId } = await sdk.edit({
      model: 'gpt-image-1',
      image: [await sdk.file(images[0]!, 'a.png'), await sdk.file(images[1]!, 'b.jpg', 'image/jpeg'), await sdk.file(images[2]!, 'c.webp', 'image/webp')],
      mask: await sdk.file(mask, 'mask.png'),
      prompt: 'combine them',
      quality: 'low',
    });
    expect(Object.keys(data.data[0])).toEqual(['b64_json']);
    expect(await decode(Buffer.from(data.data[0].b64_json, 'base64'))).toMatchObject({ format: 'png', width: 1024, height: 1024 });
    expect(data).toMatchObject({ background: expect.any(String), output_format: 'png', quality: 'low', size: '1024x1024' });
    expect(data.usage).toEqual(UPSTREAM_USAGE);

    const got = upstream.requests[0]!;
    const sent = got.files.filter((f) => f.field.startsWith('image'));
    expect(sent.map((f) => f.data.equals(images[sent.indexOf(f)]!))).toEqual([true, true, true]);
    expect(got.files.find((f) => f.field === 'mask')!.data.equals(mask)).toBe(true);
    expect(got.fields.response_format).toBeUndefined();

    const job = await get(`${svc.url}/v1/jobs/${jobId}`, svc.apiKey);
    expect(job.body.result.usage).toEqual(UPSTREAM_USAGE);
    expect(job.body.usage).toEqual({ images: 1, ...UPSTREAM_USAGE, cost_usd: expect.any(Number) });
    const row = await svc.db.usage.findUniqueOrThrow({ where: { jobId: jobId! } });
    expect(row.details).toEqual(UPSTREAM_USAGE);
    expect([row.inputTokens, row.outputTokens]).toEqual([980, 4160]);
  });

  it('gpt-image-1: url when asked', async () => {
    const { data } = await sdk.edit({ model: 'gpt-image-1', image: await sdk.file(await makePng(64, 64), 'in.png'), prompt: 'x', response_format: 'url', size: '1024x1536' });
    expect(await fetchPng(data.data[0].url)).toMatchObject({ width: 1024, height: 1536 });
    expect(data.usage).toMatchObject({ input_tokens: expect.any(Number), input_tokens_details: { image_tokens: 323, text_tokens: 1 } });
  });

  it('an upstream 400 keeps its param, code and message, in the answer and on the job', async () => {
    upstream.respondWith(openAIError(400, 'Your prompt mentions something we cannot draw.', { code: 'invalid_prompt', param: 'prompt' }));
    const err = await failure(sdk.edit({ model: 'gpt-image-1', image: await sdk.file(await makePng(64, 64), 'in.png'), prompt: 'x' }));
    expect(err).toBeInstanceOf(sdk.BadRequestError);
    expect([err.status, err.param, err.code]).toEqual([400, 'prompt', 'invalid_prompt']);
    expect(err.message).toContain('something we cannot draw');
    const jobId = (err as { headers?: Headers | Record<string, string> }).headers;
    const id = jobId instanceof Headers ? jobId.get('x-job-id') : jobId?.['x-job-id'];
    const job = await get(`${svc.url}/v1/jobs/${id}`, svc.apiKey);
    expect(job.body).toMatchObject({ status: 'failed', error: { param: 'prompt', code: 'invalid_prompt', type: 'invalid_request_error' } });
  });

  it('an unknown parameter is a 400 naming it, and nothing reaches the upstream', async () => {
    const err = await failure(sdk.edit({ model: 'gpt-image-1', image: await sdk.file(await makePng(64, 64), 'in.png'), prompt: 'x', colour: 'red' }));
    expect(err).toBeInstanceOf(sdk.BadRequestError);
    expect([err.status, err.param, err.code]).toEqual([400, 'colour', 'unknown_parameter']);
    expect(upstream.requests).toHaveLength(0);
  });

  it('moderation and safety_identifier reach OpenAI and Azure; a model without them refuses them', async () => {
    await sdk.edit({ model: 'gpt-image-1', image: await sdk.file(await makePng(64, 64), 'in.png'), prompt: 'x', moderation: 'low', safety_identifier: 'user-7f3a' });
    expect(upstream.requests[0]!.fields).toMatchObject({ moderation: 'low', safety_identifier: 'user-7f3a' });
    await sdk.edit({ model: 'azure-openai/gpt-image-1', image: await sdk.file(await makePng(64, 64), 'in.png'), prompt: 'x', moderation: 'auto', safety_identifier: 'user-7f3a' });
    expect(azure.requests[0]!.fields).toMatchObject({ moderation: 'auto', safety_identifier: 'user-7f3a' });
    const err = await failure(sdk.edit({ model: 'local-inpaint', image: await sdk.file(await makePng(64, 64, { hole }), 'in.png'), prompt: 'x', moderation: 'low' }));
    expect([err.status, err.param, err.code]).toEqual([400, 'moderation', 'unsupported_parameter']);
  });
});

describe('Vercel AI SDK (generateImage, in a child process: it is ESM only)', () => {
  const aiEdit = async (args: Record<string, unknown>): Promise<{ result: Json; images: Buffer[] }> => {
    const outDir = mkdtempSync(path.join(dir, 'ai-'));
    const all = { apiKey: svc.apiKey, baseURL: `${svc.url}/v1`, prompt: 'ai sdk', maxRetries: 0, outDir, ...args };
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(__dirname, 'clients/ai-sdk-edit.mjs'), JSON.stringify(all)], { cwd: ROOT });
    const result = JSON.parse(stdout.trim().split('\n').pop()!);
    const images = result.ok ? (result.images as number[]).map((_, i) => readFileSync(path.join(outDir, `${i}.bin`))) : [];
    return { result, images };
  };
  const inputs = async (w: number, h: number): Promise<{ image: string; mask: string }> => {
    const image = path.join(dir, `in-${w}x${h}.png`);
    const mask = path.join(dir, `mask-${w}x${h}.png`);
    writeFileSync(image, await makePng(w, h));
    writeFileSync(mask, await makeMask(w, h, hole));
    return { image, mask };
  };

  it('local-inpaint, image + mask: succeeds with the edited image\'s bytes (npm start, no keys)', async () => {
    const { result, images } = await aiEdit({ model: 'local-inpaint', ...(await inputs(80, 80)) });
    expect(result).toMatchObject({ ok: true, images: [expect.any(Number)] });
    expect(await decode(images[0]!)).toMatchObject({ format: 'png', width: 80, height: 80 });
  });

  it('gpt-image-1 on the fake OpenAI, image + mask and provider options: the bytes, the usage, moderation upstream', async () => {
    upstream.respondWith(async (ctx) => ({ body: { ...(await ctx.defaultBody()), usage: UPSTREAM_USAGE } }));
    const files = await inputs(64, 64);
    const { result, images } = await aiEdit({ model: 'gpt-image-1', ...files, providerOptions: { openai: { moderation: 'low', safetyIdentifier: 'user-7f3a', quality: 'low' } } });
    expect(result).toMatchObject({ ok: true, usage: { inputTokens: 980, outputTokens: 4160, totalTokens: 5140 } });
    expect(await decode(images[0]!)).toMatchObject({ format: 'png', width: 1024, height: 1024 });
    const got = upstream.requests[0]!;
    expect(got.fields).toMatchObject({ model: 'gpt-image-1', prompt: 'ai sdk', moderation: 'low', safety_identifier: 'user-7f3a', quality: 'low' });
    expect(got.files.find((f) => f.field === 'image')!.data.equals(readFileSync(files.image))).toBe(true);
    expect(got.files.find((f) => f.field === 'mask')!.data.equals(readFileSync(files.mask))).toBe(true);
  });
});
