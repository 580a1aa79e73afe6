import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type FakeOpenAI, makeMask, makeOpaque, makePng, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import OpenAI, { toFile } from 'openai';
import { decode } from './helpers';

/**
 * The official `openai` SDK pointed at this service, unchanged, with OpenAI and Azure faked by real
 * HTTP servers that record what they receive.
 */
let svc: TestService;
let upstream: FakeOpenAI;
let azure: FakeOpenAI;
let client: OpenAI;

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
  client = new OpenAI({ apiKey: svc.apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });
});
afterAll(async () => {
  await svc?.stop();
  await upstream?.close();
  await azure?.close();
});

const hole = { x: 32, y: 32, width: 32, height: 32 };
const png = (data: Buffer, name = 'image.png') => toFile(data, name, { type: 'image/png' });

async function fetchPng(url: string) {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return decode(Buffer.from(await res.arrayBuffer()));
}

describe('official openai SDK as the client', () => {
  it('local-inpaint: image + mask, n=2, url: both URLs are PNGs of the requested size', async () => {
    const res = await client.images.edit({
      model: 'local-inpaint',
      image: await png(await makePng(128, 128)),
      mask: await png(await makeMask(128, 128, hole), 'mask.png'),
      prompt: 'fill the square',
      n: 2,
      size: '256x256',
      response_format: 'url',
    });
    expect(res.data).toHaveLength(2);
    for (const d of res.data ?? []) expect(await fetchPng(d.url!)).toMatchObject({ format: 'png', width: 256, height: 256 });
  });

  it('local-inpaint: b64_json', async () => {
    const res = await client.images.edit({ model: 'local-inpaint', image: await png(await makePng(128, 128, { hole })), prompt: 'x', response_format: 'b64_json' });
    const out = await decode(Buffer.from(res.data![0]!.b64_json!, 'base64'));
    expect(out).toMatchObject({ format: 'png', width: 128, height: 128 });
  });

  it('dall-e-2 through OpenAI: image and mask bytes and every parameter arrive unchanged', async () => {
    upstream.reset();
    const image = await makePng(256, 256);
    const mask = await makeMask(256, 256, hole);
    const res = await client.images.edit({ model: 'dall-e-2', image: await png(image, 'room.png'), mask: await png(mask, 'mask.png'), prompt: 'a red hat', n: 2, size: '512x512', user: 'user-42' });
    expect(res.data).toHaveLength(2);
    expect(await fetchPng(res.data![0]!.url!)).toMatchObject({ width: 512, height: 512 });

    expect(upstream.requests).toHaveLength(1);
    const got = upstream.requests[0]!;
    expect(got.path).toBe('/v1/images/edits');
    expect(got.headers.authorization).toBe('Bearer sk-upstream');
    expect(got.fields).toMatchObject({ prompt: 'a red hat', model: 'dall-e-2', n: '2', size: '512x512', user: 'user-42', response_format: 'b64_json' });
    const sentImage = got.files.find((f) => f.field === 'image')!;
    const sentMask = got.files.find((f) => f.field === 'mask')!;
    expect(sentImage.data.equals(image)).toBe(true);
    expect(sentImage.filename).toBe('room.png');
    expect(sentImage.contentType).toBe('image/png');
    expect(sentMask.data.equals(mask)).toBe(true);
  });

  it('gpt-image-1 through OpenAI: an image array and the GPT image parameters arrive unchanged', async () => {
    upstream.reset();
    const images = [await makePng(300, 200), await makeOpaque(300, 200, 'jpeg'), await makeOpaque(300, 200, 'webp')];
    const res = await client.images.edit({
      model: 'gpt-image-1',
      image: [await png(images[0]!, 'a.png'), await toFile(images[1]!, 'b.jpg', { type: 'image/jpeg' }), await toFile(images[2]!, 'c.webp', { type: 'image/webp' })],
      prompt: 'combine them',
      quality: 'high',
      background: 'opaque',
      output_format: 'webp',
      output_compression: 80,
      input_fidelity: 'high',
      size: '1536x1024',
      response_format: 'b64_json',
    });
    expect(res.data).toHaveLength(1);
    expect(res.data![0]!.b64_json).toEqual(expect.any(String));
    expect(res.usage).toMatchObject({ input_tokens: expect.any(Number), output_tokens: expect.any(Number) });

    const got = upstream.requests[0]!;
    const sent = got.files.filter((f) => f.field === 'image[]' || f.field === 'image');
    expect(sent).toHaveLength(3);
    for (const [i, f] of sent.entries()) expect(f.data.equals(images[i]!)).toBe(true);
    expect(got.fields).toMatchObject({ model: 'gpt-image-1', prompt: 'combine them', quality: 'high', background: 'opaque', output_format: 'webp', output_compression: '80', input_fidelity: 'high', size: '1536x1024' });
    expect(got.fields.response_format).toBeUndefined();
  });

  it('gpt-image-1 answers with a stored URL too, even though GPT image models return base64 upstream', async () => {
    const res = await client.images.edit({ model: 'gpt-image-1', image: await png(await makePng(64, 64)), prompt: 'x', response_format: 'url', size: '1024x1024' });
    expect(await fetchPng(res.data![0]!.url!)).toMatchObject({ width: 1024, height: 1024 });
  });

  it('Azure OpenAI: deployment URL, api-version and api-key header', async () => {
    azure.reset();
    const image = await makePng(64, 64);
    const res = await client.images.edit({ model: 'azure-openai/gpt-image-1', image: await png(image), prompt: 'on azure', quality: 'low' });
    expect(res.data).toHaveLength(1);
    const got = azure.requests[0]!;
    expect(got.path).toBe('/openai/deployments/my-image-deployment/images/edits');
    expect(got.query['api-version']).toBe('2025-04-01-preview');
    expect(got.headers['api-key']).toBe('azure-key');
    expect(got.headers.authorization).toBeUndefined();
    expect(got.fields).toMatchObject({ prompt: 'on azure', quality: 'low' });
    expect(got.files.find((f) => f.field.startsWith('image'))!.data.equals(image)).toBe(true);
  });

  it('an upstream content-policy refusal comes back as an OpenAI error the SDK raises', async () => {
    upstream.respondWith({ status: 400, body: { error: { message: 'Your request was rejected by the safety system', type: 'invalid_request_error', param: null, code: 'content_policy_violation' } } });
    const err = await client.images.edit({ model: 'dall-e-2', image: await png(await makePng(64, 64, { hole })), prompt: 'bad' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('content_policy_violation');
    expect((err as Error).message).toContain('safety system');
  });

  it('async mode from the SDK: Prefer: respond-async returns the job, client.get polls it (README example)', async () => {
    const image = await png(await makePng(128, 128, { hole }));
    const job = (await client.images.edit({ model: 'local-inpaint', image, prompt: 'x' }, { headers: { Prefer: 'respond-async' } })) as unknown as { id: string; status: string };
    expect(job.status).toBe('queued');
    let current = job;
    for (let i = 0; i < 100 && !['succeeded', 'failed'].includes(current.status); i++) {
      await new Promise((r) => setTimeout(r, 100));
      current = await client.get(`/jobs/${job.id}`);
    }
    // the job's result answers as the edit would have: b64_json, local-inpaint's default
    expect(current).toMatchObject({ id: job.id, status: 'succeeded', result: { data: [{ b64_json: expect.any(String) }] } });
  });

  it('lists the configured models', async () => {
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toEqual(expect.arrayContaining(['local-inpaint', 'dall-e-2', 'gpt-image-1']));
    // provider/model ids are not listed, but work: each model names the providers it can pin
    expect(ids).not.toContain('azure-openai/gpt-image-1');
    expect((await client.models.retrieve('gpt-image-1')).id).toBe('gpt-image-1');
    expect(await client.models.retrieve('azure-openai/gpt-image-1')).toMatchObject({ id: 'azure-openai/gpt-image-1', owned_by: 'azure-openai' });
    await expect(client.models.retrieve('dall-e-3')).rejects.toMatchObject({ status: 404 });
  });
});
