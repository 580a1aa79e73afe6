import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { inRect, makeMask, makeOpaque, makePng, pictureRgba, startTestService, type TestService } from '@image-edits/testing';
import { decode, editForm, get, pollJob, post } from './helpers';

/** The whole pipeline with the built-in provider: HTTP → S3 → Postgres → BullMQ → worker → S3 → client. */
let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => {
  await svc?.stop();
});

const hole = { x: 96, y: 96, width: 64, height: 64 };
const edits = () => `${svc.url}/v1/images/edits`;

async function countJobs(): Promise<number> {
  return svc.db.job.count();
}

describe('POST /v1/images/edits with local-inpaint', () => {
  it('sync mode answers in OpenAI shape with a presigned URL (asked for) to a filled PNG of the requested size', async () => {
    const image = await makePng(256, 256);
    const mask = await makeMask(256, 256, hole);
    const res = await post(edits(), svc.apiKey, editForm({ prompt: 'fill it', model: 'local-inpaint', size: '256x256', response_format: 'url' }, [['image', image, 'in.png'], ['mask', mask, 'mask.png']]));
    expect(res.status).toBe(200);
    expect(res.body.created).toEqual(expect.any(Number));
    expect(res.body.data).toHaveLength(1);
    const url: string = res.body.data[0].url;
    expect(new URL(url).searchParams.get('X-Amz-Expires')).toBe('3600');
    const fetched = await fetch(url);
    expect(fetched.status).toBe(200);
    const out = await decode(Buffer.from(await fetched.arrayBuffer()));
    expect(out).toMatchObject({ format: 'png', width: 256, height: 256 });
    // unmasked pixels kept, masked pixels filled (opaque)
    const input = pictureRgba(256, 256);
    let changedOutside = 0;
    let transparentInside = 0;
    for (let y = 0; y < 256; y++) {
      for (let x = 0; x < 256; x++) {
        const i = (y * 256 + x) * 4;
        if (inRect(x, y, hole)) transparentInside += out.raw[i + 3] === 255 ? 0 : 1;
        else if (out.raw.subarray(i, i + 4).compare(input.subarray(i, i + 4)) !== 0) changedOutside++;
      }
    }
    expect(changedOutside).toBe(0);
    expect(transparentInside).toBe(0);
    const jobId = res.headers.get('x-job-id');
    expect(jobId).toMatch(/^job_/);
    const row = await svc.db.job.findUniqueOrThrow({ where: { id: jobId! }, include: { usage: true } });
    expect(row.status).toBe('succeeded');
    expect(row.usage).toMatchObject({ images: 1, model: 'local-inpaint', provider: 'local' });
  });

  it('answers b64_json by default, at the input\'s size (size auto, as /v1/models advertises)', async () => {
    const image = await makePng(96, 96, { hole: { x: 8, y: 8, width: 16, height: 16 } });
    const res = await post(edits(), svc.apiKey, editForm({ prompt: 'x', model: 'local-inpaint' }, [['image', image, 'in.png']]));
    expect(res.status).toBe(200);
    expect(Object.keys(res.body.data[0])).toEqual(['b64_json']);
    expect(await decode(Buffer.from(res.body.data[0].b64_json, 'base64'))).toMatchObject({ format: 'png', width: 96, height: 96 });
    const model = await get(`${svc.url}/v1/models/local-inpaint`, svc.apiKey);
    expect(model.body.capabilities).toMatchObject({ default_size: 'auto', default_response_format: 'b64_json' });
    expect(model.body.capabilities.sizes).toContain('auto');
  });

  it('uses the image transparency as the mask, honours n and b64_json, and is deterministic', async () => {
    const image = await makePng(256, 256, { hole });
    const form = () => editForm({ prompt: 'x', n: '2', response_format: 'b64_json', size: '256x256' }, [['image', image, 'in.png']]);
    const a = await post(edits(), svc.apiKey, form());
    const b = await post(edits(), svc.apiKey, form());
    expect(a.status).toBe(200);
    expect(a.body.data).toHaveLength(2);
    const [first, second] = a.body.data.map((d: { b64_json: string }) => Buffer.from(d.b64_json, 'base64'));
    expect((await decode(first)).format).toBe('png');
    expect(first.equals(second)).toBe(false);
    expect(b.body.data.map((d: { b64_json: string }) => d.b64_json)).toEqual(a.body.data.map((d: { b64_json: string }) => d.b64_json));
    const out = await decode(first);
    for (let y = hole.y; y < hole.y + hole.height; y++) for (let x = hole.x; x < hole.x + hole.width; x++) expect(out.raw[(y * 256 + x) * 4 + 3]).toBe(255);
  });

  it('async mode answers 202 with Location and the job; every read presigns afresh', async () => {
    const image = await makePng(256, 256, { hole });
    const res = await post(edits(), svc.apiKey, editForm({ prompt: 'x', size: '512x512', response_format: 'url' }, [['image', image, 'in.png']]), { prefer: 'respond-async' });
    expect(res.status).toBe(202);
    expect(res.headers.get('location')).toBe(`/v1/jobs/${res.body.id}`);
    expect(res.body).toMatchObject({ object: 'image.edit.job', status: 'queued', model: 'local-inpaint', result: null, error: null, metadata: {} });
    expect(res.body.created_at).toEqual(expect.any(Number));
    const done = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(done).toMatchObject({ status: 'succeeded', usage: { images: 1 }, error: null });
    expect(done.started_at).toBeGreaterThanOrEqual(done.created_at);
    expect(done.completed_at).toBeGreaterThanOrEqual(done.started_at);
    const png = await fetch(done.result.data[0].url);
    expect((await decode(Buffer.from(await png.arrayBuffer()))).width).toBe(512);
    await new Promise((r) => setTimeout(r, 1100));
    const again = await get(`${svc.url}/v1/jobs/${res.body.id}`, svc.apiKey);
    expect(again.body.result.data[0].url).not.toBe(done.result.data[0].url);
  });

  it('honours output_format for local-inpaint', async () => {
    const image = await makePng(256, 256, { hole });
    const res = await post(edits(), svc.apiKey, editForm({ prompt: 'x', output_format: 'webp', response_format: 'b64_json' }, [['image', image, 'in.png']]));
    expect(res.status).toBe(200);
    expect((await decode(Buffer.from(res.body.data[0].b64_json, 'base64'))).format).toBe('webp');
  });
});

describe('validation through the API: status, OpenAI error shape, param, and nothing stored', () => {
  const cases: [string, () => Promise<FormData>, number, string | null][] = [
    ['missing prompt', async () => editForm({}, [['image', await makePng(64, 64, { hole: { x: 0, y: 0, width: 8, height: 8 } }), 'a.png']]), 400, 'prompt'],
    ['missing image', async () => editForm({ prompt: 'x' }, []), 400, 'image'],
    ['unknown model', async () => editForm({ prompt: 'x', model: 'dall-e-9' }, [['image', await makePng(64, 64), 'a.png']]), 404, 'model'],
    ['not a PNG though named .png', async () => editForm({ prompt: 'x' }, [['image', Buffer.from('definitely not an image'), 'fake.png']]), 400, 'image'],
    ['JPEG for a PNG-only model', async () => editForm({ prompt: 'x' }, [['image', await makeOpaque(64, 64, 'jpeg'), 'a.png']]), 400, 'image'],
    ['not square', async () => editForm({ prompt: 'x' }, [['image', await makePng(64, 32, { hole: { x: 0, y: 0, width: 8, height: 8 } }), 'a.png']]), 400, 'image'],
    ['no mask and no transparency', async () => editForm({ prompt: 'x' }, [['image', await makePng(64, 64), 'a.png']]), 400, 'image'],
    ['mask of another size', async () => editForm({ prompt: 'x' }, [['image', await makePng(64, 64), 'a.png'], ['mask', await makeMask(32, 32, hole), 'm.png']]), 400, 'mask'],
    ['two images for a one-image model', async () => editForm({ prompt: 'x' }, [['image', await makePng(64, 64), 'a.png'], ['image', await makePng(64, 64), 'b.png']]), 400, 'image'],
    ['size the model does not have', async () => editForm({ prompt: 'x', size: '1536x1024' }, [['image', await makePng(64, 64), 'a.png']]), 400, 'size'],
    ['n out of range', async () => editForm({ prompt: 'x', n: '11' }, [['image', await makePng(64, 64), 'a.png']]), 400, 'n'],
    ['prompt too long', async () => editForm({ prompt: 'x'.repeat(1001) }, [['image', await makePng(64, 64), 'a.png']]), 400, 'prompt'],
    ['input_fidelity on a model without it', async () => editForm({ prompt: 'x', input_fidelity: 'high' }, [['image', await makePng(64, 64), 'a.png']]), 400, 'input_fidelity'],
    ['over 4 MB for a 4 MB model', async () => editForm({ prompt: 'x' }, [['image', Buffer.concat([await makePng(64, 64, { hole }), Buffer.alloc(4 * 1024 * 1024)]), 'big.png']]), 413, 'image'],
    ['an unexpected file field', async () => editForm({ prompt: 'x' }, [['picture', await makePng(64, 64), 'a.png']]), 400, 'picture'],
    ['an unknown field', async () => editForm({ prompt: 'x', colour: 'red' }, [['image', await makePng(64, 64, { hole }), 'a.png']]), 400, 'colour'],
    ['an unknown bracketed field', async () => editForm({ prompt: 'x', 'extra[a]': 'b' }, [['image', await makePng(64, 64, { hole }), 'a.png']]), 400, 'extra'],
    ['moderation on a model without it', async () => editForm({ prompt: 'x', moderation: 'low' }, [['image', await makePng(64, 64, { hole }), 'a.png']]), 400, 'moderation'],
    ['safety_identifier on a model without it', async () => editForm({ prompt: 'x', safety_identifier: 'u1' }, [['image', await makePng(64, 64, { hole }), 'a.png']]), 400, 'safety_identifier'],
    ["OpenAI's complexity, which no model here takes", async () => editForm({ prompt: 'x', complexity: 'high' }, [['image', await makePng(64, 64, { hole }), 'a.png']]), 400, 'complexity'],
    ["OpenAI's markup file", async () => editForm({ prompt: 'x' }, [['image', await makePng(64, 64, { hole }), 'a.png'], ['markup', await makePng(64, 64, { hole }), 'm.png']]), 400, 'markup'],
  ];
  it.each(cases)('%s', async (_name, build, status, param) => {
    const before = await countJobs();
    const res = await post(edits(), svc.apiKey, await build(), { prefer: 'respond-async' });
    expect({ status: res.status, param: res.body.error?.param }).toEqual({ status, param });
    expect(res.body.error).toEqual({ message: expect.any(String), type: expect.any(String), param, code: expect.anything() });
    expect(res.headers.get('x-request-id')).toMatch(/^req_/);
    expect(await countJobs()).toBe(before);
  });

  it('codes unknown and unsupported parameters as OpenAI does; our own bracketed fields are known', async () => {
    const image = await makePng(64, 64, { hole: { x: 0, y: 0, width: 8, height: 8 } });
    const unknown = await post(edits(), svc.apiKey, editForm({ prompt: 'x', colour: 'red' }, [['image', image, 'a.png']]));
    expect(unknown.body.error).toEqual({ message: "Unknown parameter: 'colour'.", type: 'invalid_request_error', param: 'colour', code: 'unknown_parameter' });
    const unsupported = await post(edits(), svc.apiKey, editForm({ prompt: 'x', moderation: 'low' }, [['image', image, 'a.png']]));
    expect(unsupported.body.error).toMatchObject({ param: 'moderation', code: 'unsupported_parameter' });
    const ok = await post(edits(), svc.apiKey, editForm({ prompt: 'x', 'metadata[order]': '42', cancel_after: '5m', response_format: 'url', size: 'auto' }, [['image', image, 'a.png']]), { prefer: 'respond-async' });
    expect(ok.status).toBe(202);
    expect(ok.body.metadata).toEqual({ order: '42' });
  });

  it('rejects a decompression bomb by its header, before decoding', async () => {
    const svcBomb = await startTestService({ MAX_INPUT_PIXELS: '1000000' }, { worker: false });
    try {
      const res = await post(`${svcBomb.url}/v1/images/edits`, svcBomb.apiKey, editForm({ prompt: 'x' }, [['image', await makePng(1024, 1024, { hole }), 'a.png']]));
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ param: 'image', code: 'image_too_many_pixels' });
      const objects = await fetch(`${svcBomb.testEnv.s3.endpoint}/test-bucket?list-type=2`);
      expect(await objects.text()).not.toContain('<Key>');
    } finally {
      await svcBomb.stop();
    }
  });

  it('asks for multipart when given another content type', async () => {
    const res = await fetch(edits(), { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': 'text/plain' }, body: 'hi' });
    expect(res.status).toBe(415);
    expect((await res.json()).error.code).toBe('unsupported_media_type');
  });
});

describe('API keys', () => {
  it('401 without a key or with a wrong one, in OpenAI shape', async () => {
    const none = await fetch(`${svc.url}/v1/models`);
    expect(none.status).toBe(401);
    expect((await none.json()).error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key' });
    const wrong = await get(`${svc.url}/v1/models`, 'sk-ie-wrong');
    expect(wrong.status).toBe(401);
  });

  it("a key sees only its own jobs: another key's job id is 404", async () => {
    const res = await post(edits(), svc.apiKey, editForm({ prompt: 'x' }, [['image', await makePng(64, 64, { hole: { x: 0, y: 0, width: 8, height: 8 } }), 'a.png']]), { prefer: 'respond-async' });
    expect(res.status).toBe(202);
    const other = await svc.newKey();
    const theirs = await get(`${svc.url}/v1/jobs/${res.body.id}`, other);
    expect(theirs.status).toBe(404);
    expect(theirs.body.error.code).toBe('job_not_found');
    expect((await get(`${svc.url}/v1/jobs/${res.body.id}`, svc.apiKey)).status).toBe(200);
  });

  it('stores keys only as hashes', async () => {
    const rows = await svc.db.apiKey.findMany();
    for (const r of rows) expect(r.keyHash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(rows)).not.toContain(svc.apiKey);
  });
});

describe('models and health', () => {
  it('lists configured models', async () => {
    const res = await get(`${svc.url}/v1/models`, svc.apiKey);
    expect(res.body.object).toBe('list');
    expect(res.body.data.map((m: { id: string }) => m.id)).toEqual(['local-inpaint']);
  });
  it('healthz and readyz', async () => {
    expect((await fetch(`${svc.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${svc.url}/readyz`);
    expect(ready.status).toBe(200);
    expect((await ready.json()).checks).toEqual({ postgres: 'ok', redis: 'ok', s3: 'ok' });
  });
  it('unknown URLs are 404 in OpenAI shape', async () => {
    const res = await get(`${svc.url}/v1/nothing`, svc.apiKey);
    expect(res.status).toBe(404);
    expect(res.body.error.message).toContain('/v1/nothing');
  });
});
