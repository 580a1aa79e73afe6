import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import sharp from 'sharp';
// deep imports: the package index also exports the integration harness (databases, servers)
import { type FakeFal, falError, startFakeFal } from '@image-edits/testing/src/fake-fal';
import { makeMask, makeOpaque, makePng } from '@image-edits/testing/src/fixtures';
import type { InputImage, ProviderEditRequest } from '../types';
import { ProviderError } from '../types';
import { createFalProvider, type FalProviderConfig } from './fal-provider';

const API_KEY = 'fal-key-id:fal-key-secret-123';
const MODEL = 'fal-ai/flux-pro/v1/fill';
const HOLE = { x: 64, y: 64, width: 64, height: 64 };

let fake: FakeFal;
let png256: Buffer;
let mask256: Buffer;

const input = (data: Buffer, format: InputImage['format'], filename: string, width = 256, height = width): InputImage => ({ data, format, filename, width, height });

const provider = (cfg: Partial<FalProviderConfig> = {}) => createFalProvider({ apiKey: API_KEY, baseURL: fake.url, timeoutMs: 10_000, pollIntervalMs: 5, ...cfg });

const request = (over: Partial<ProviderEditRequest> = {}): ProviderEditRequest => ({
  model: MODEL,
  prompt: 'a red balloon',
  images: [input(png256, 'png', 'canvas.png')],
  mask: input(mask256, 'png', 'mask.png'),
  n: 1,
  ...over,
});

async function editError(p: Promise<unknown>): Promise<ProviderError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ProviderError);
    return err as ProviderError;
  }
  throw new Error('expected the edit to fail');
}

function fromDataUri(uri: unknown): { mime: string; data: Buffer } {
  const m = /^data:([^;,]+);base64,(.*)$/s.exec(String(uri));
  if (!m) throw new Error(`not a base64 data URI: ${String(uri).slice(0, 40)}`);
  return { mime: m[1]!, data: Buffer.from(m[2]!, 'base64') };
}

/** Grey value of each pixel of a mask, row by row. */
async function maskPixels(png: Buffer): Promise<{ width: number; height: number; at(x: number, y: number): number }> {
  const { data, info } = await sharp(png).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, at: (x, y) => data[y * info.width + x]! };
}

const kinds = () => fake.requests.map((r) => r.kind);

beforeAll(async () => {
  fake = await startFakeFal({ apiKey: API_KEY });
  png256 = await makePng(256, 256, { hole: HOLE });
  mask256 = await makeMask(256, 256, HOLE);
});

afterAll(async () => {
  await fake.close();
});

beforeEach(() => fake.reset());

describe('fal FLUX fill provider', () => {
  it('submits image and white-edit mask as data URIs, polls the app id and downloads the output', async () => {
    const p = provider();
    expect(p.id).toBe('fal');
    const result = await p.edit(request({ outputFormat: 'png', user: 'user-42' }));

    expect(kinds()).toEqual(['submit', 'status', 'result', 'file']);
    const [submit, status, res, file] = fake.requests;
    expect([submit!.method, submit!.path]).toEqual(['POST', '/fal-ai/flux-pro/v1/fill']);
    const requestId = fake.submissions[0]!.requestId;
    // status and result drop the model id's sub-path (/v1/fill)
    expect([status!.method, status!.path, status!.query]).toEqual(['GET', `/fal-ai/flux-pro/requests/${requestId}/status`, { logs: '0' }]);
    expect([res!.method, res!.path]).toEqual(['GET', `/fal-ai/flux-pro/requests/${requestId}`]);
    expect(file!.method).toBe('GET');
    for (const r of [submit, status, res]) expect(r!.headers.authorization).toBe(`Key ${API_KEY}`);
    expect(submit!.headers['content-type']).toBe('application/json');

    const body = fake.submissions[0]!.input;
    expect(Object.keys(body).sort()).toEqual(['image_url', 'mask_url', 'num_images', 'output_format', 'prompt', 'seed', 'sync_mode']);
    expect(body).toMatchObject({ prompt: 'a red balloon', num_images: 1, output_format: 'png', sync_mode: false });
    expect(Number.isInteger(body.seed)).toBe(true);
    const image = fromDataUri(body.image_url);
    expect(image.mime).toBe('image/png');
    expect(image.data.equals(png256)).toBe(true);

    // OpenAI's "alpha 0 = edit" became FLUX fill's "white = inpaint", canvas-sized
    const mask = fromDataUri(body.mask_url);
    expect(mask.mime).toBe('image/png');
    const px = await maskPixels(mask.data);
    expect([px.width, px.height]).toEqual([256, 256]);
    expect([px.at(64, 64), px.at(100, 100), px.at(127, 127)]).toEqual([255, 255, 255]);
    expect([px.at(0, 0), px.at(63, 64), px.at(128, 128), px.at(255, 255)]).toEqual([0, 0, 0, 0]);

    expect(result.images).toHaveLength(1);
    const out = result.images[0]!;
    const meta = await sharp(out.data).metadata();
    expect([out.format, meta.format, meta.width, meta.height]).toEqual(['png', 'png', 256, 256]);
  });

  it("without a mask uses the canvas's transparency; jpeg output and jpeg canvases", async () => {
    const result = await provider().edit(request({ mask: undefined, outputFormat: 'jpeg' }));
    const body = fake.submissions[0]!.input;
    expect(body.output_format).toBe('jpeg');
    const px = await maskPixels(fromDataUri(body.mask_url).data);
    expect([px.at(80, 80), px.at(10, 10)]).toEqual([255, 0]);
    expect(result.images[0]!.format).toBe('jpeg');
    expect((await sharp(result.images[0]!.data).metadata()).format).toBe('jpeg');

    fake.reset();
    const jpeg = await makeOpaque(320, 200, 'jpeg');
    const mask = await makeMask(320, 200, HOLE);
    await provider().edit(request({ images: [input(jpeg, 'jpeg', 'photo.jpg', 320, 200)], mask: input(mask, 'png', 'm.png', 320, 200) }));
    const sent = fake.submissions[0]!.input;
    expect(fromDataUri(sent.image_url)).toEqual({ mime: 'image/jpeg', data: jpeg });
    // no output_format asked for: png (OpenAI's default), not fal's jpeg
    expect(sent.output_format).toBe('png');
  });

  it('polls through IN_QUEUE and IN_PROGRESS until COMPLETED', async () => {
    fake.respondWith({ pending: ['IN_QUEUE', 'IN_QUEUE', 'IN_PROGRESS'] });
    const result = await provider().edit(request());
    expect(kinds()).toEqual(['submit', 'status', 'status', 'status', 'status', 'result', 'file']);
    expect(fake.submissions[0]!.polls).toBe(4);
    expect(result.images).toHaveLength(1);
  });

  it('translates sizes: auto keeps the output, WxH resizes it exactly', async () => {
    const auto = await provider().edit(request({ size: 'auto' }));
    expect(await dims(auto.images[0]!.data)).toEqual([256, 256]);

    const scaled = await provider().edit(request({ size: '128x128' }));
    expect(await dims(scaled.images[0]!.data)).toEqual([128, 128]);

    const cropped = await provider().edit(request({ size: '256x128', outputFormat: 'jpeg' }));
    expect(await dims(cropped.images[0]!.data)).toEqual([256, 128]);
    expect(cropped.images[0]!.format).toBe('jpeg');

    // whatever size the upstream answers with is kept when no exact size was asked for
    fake.reset();
    fake.respondWith({
      result: async ({ addFile }) => ({
        body: { images: [{ url: addFile(await makeOpaque(300, 200, 'png'), 'image/png'), width: 300, height: 200, content_type: 'image/png' }], seed: 1, has_nsfw_concepts: [false], prompt: 'x' },
      }),
    });
    const kept = await provider().edit(request());
    expect(await dims(kept.images[0]!.data)).toEqual([300, 200]);
  });

  it('n > 4 takes several calls of at most 4 images, each with its own seed', async () => {
    const result = await provider().edit(request({ n: 6 }));
    expect(fake.submissions.map((s) => s.input.num_images)).toEqual([4, 2]);
    const [a, b] = fake.submissions.map((s) => s.input.seed as number);
    expect(b).toBe(a! + 1);
    expect(result.images).toHaveLength(6);
    for (const img of result.images) expect(await dims(img.data)).toEqual([256, 256]);
  });

  it('fal-ai/flux-lora-fill keeps the input size and polls its own app id', async () => {
    await provider().edit(request({ model: 'fal-ai/flux-lora-fill' }));
    const sub = fake.submissions[0]!;
    expect(sub.modelId).toBe('fal-ai/flux-lora-fill');
    expect(sub.input.resize_to_original).toBe(true);
    expect(fake.requests[1]!.path).toBe(`/fal-ai/flux-lora-fill/requests/${sub.requestId}/status`);
  });

  it('refuses what FLUX fill cannot honour, before calling the upstream', async () => {
    const cases: Array<[Partial<ProviderEditRequest>, RegExp]> = [
      [{ outputFormat: 'webp' }, /output_format 'webp'.*fal-ai\/flux-pro\/v1\/fill/],
      [{ quality: 'high' }, /quality 'high'/],
      [{ background: 'transparent' }, /background 'transparent'/],
      [{ outputCompression: 80 }, /output_compression/],
      [{ inputFidelity: 'high' }, /input_fidelity/],
      [{ images: [input(png256, 'png', 'a.png'), input(png256, 'png', 'b.png')] }, /exactly one image/],
      [{ model: 'fal-ai/flux/dev' }, /model 'fal-ai\/flux\/dev'/],
      [{ size: 'large' }, /size 'large'/],
    ];
    for (const [over, message] of cases) {
      const err = await editError(provider().edit(request(over)));
      expect([err.code, err.retryable, err.provider]).toEqual(['unsupported_parameter', false, 'fal']);
      expect(err.message).toMatch(message);
    }
    const opaque = await makeOpaque(64, 64, 'png');
    const empty = await editError(provider().edit(request({ images: [input(opaque, 'png', 'o.png', 64)], mask: undefined })));
    expect([empty.code, empty.retryable]).toEqual(['invalid_request', false]);
    expect(fake.requests).toHaveLength(0);
  });
});

describe('fal error classification', () => {
  it('429 on submit is rate_limited with Retry-After, and the SDK does not retry it', async () => {
    fake.respondWith({ submit: falError(429, 'Too many concurrent requests', { headers: { 'retry-after': '2' } }) });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.status, err.retryable, err.retryAfterMs, err.message]).toEqual(['rate_limited', 429, true, 2000, 'Too many concurrent requests']);
    expect(kinds()).toEqual(['submit']);
  });

  it('5xx on submit is retryable upstream_error, tried once', async () => {
    fake.respondWith({ submit: { status: 503, body: { detail: 'No runner could be allocated', error_type: 'runner_scheduling_failure' } } });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['upstream_error', 503, true, 'No runner could be allocated']);
    expect(kinds()).toEqual(['submit']);
  });

  it('a 422 validation error is permanent and names the field', async () => {
    fake.respondWith({ submit: falError(422, 'Mask and image dimensions do not match', { type: 'value_error', loc: ['body', 'mask_url'] }) });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['value_error', 422, false, 'mask_url: Mask and image dimensions do not match']);
  });

  it('a request that fails upstream (COMPLETED, result with an error) keeps its status and message', async () => {
    fake.respondWith({ pending: ['IN_PROGRESS'], result: falError(422, 'The content was flagged by a content checker.', { type: 'content_policy_violation' }) });
    const refused = await editError(provider().edit(request()));
    expect([refused.code, refused.status, refused.retryable, refused.message]).toEqual([
      'content_policy_violation',
      422,
      false,
      'The content was flagged by a content checker.',
    ]);

    // a server-side failure: the result is asked for a few times, then the job is retryable
    fake.reset();
    fake.respondWith({ result: { status: 500, body: { detail: 'Runner encountered an internal error', error_type: 'runner_server_error' } } });
    const failed = await editError(provider().edit(request()));
    expect([failed.code, failed.status, failed.retryable, failed.message]).toEqual(['upstream_error', 500, true, 'Runner encountered an internal error']);
    expect(kinds().filter((k) => k === 'result')).toHaveLength(4);
    expect(kinds().filter((k) => k === 'submit')).toHaveLength(1);
  });

  it('a transient failure of a status poll does not fail the job', async () => {
    fake.respondWith({ pending: ['IN_QUEUE'], statusResponses: [{ status: 503, body: { detail: 'busy' } }, { status: 429, body: { detail: 'slow down' } }] });
    const result = await provider().edit(request());
    expect(result.images).toHaveLength(1);
    expect(kinds()).toEqual(['submit', 'status', 'status', 'status', 'status', 'result', 'file']);
  });

  it('has_nsfw_concepts is a permanent content_policy_violation', async () => {
    fake.respondWith({ result: async ({ defaultOutput }) => ({ body: { ...(await defaultOutput()), has_nsfw_concepts: [true] } }) });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.retryable]).toEqual(['content_policy_violation', false]);
    expect(err.message).toMatch(/safety checker/);
  });

  it('an output without images is an invalid response', async () => {
    fake.respondWith({ result: { body: { images: [], seed: 1, has_nsfw_concepts: [], prompt: 'x' } } });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.retryable]).toEqual(['upstream_invalid_response', true]);
  });

  it('a wrong key is provider_auth_failed and no message ever carries the key', async () => {
    const wrong = 'fal-wrong-key:secret-999';
    const err = await editError(provider({ apiKey: wrong }).edit(request()));
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['provider_auth_failed', 401, false, 'No user found for Key ID and Secret']);
    expect(fake.requests[0]!.headers.authorization).toBe(`Key ${wrong}`);

    fake.respondWith({ submit: falError(400, `Invalid credentials: ${API_KEY}`) });
    const echoed = await editError(provider().edit(request()));
    expect(echoed.message).toBe('Invalid credentials: ***');
    expect(echoed.message).not.toContain(API_KEY);
  });

  it('a closed port is upstream_unreachable, without SDK retries', async () => {
    const server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const started = Date.now();
    const err = await editError(provider({ baseURL: `http://127.0.0.1:${port}` }).edit(request()));
    expect([err.code, err.retryable]).toEqual(['upstream_unreachable', true]);
    expect(err.message).not.toContain(API_KEY);
    // the SDK's own retries would wait a second or more
    expect(Date.now() - started).toBeLessThan(900);
  });

  it('the deadline during polling is upstream_timeout, leaves the request running, and a retry collects it', async () => {
    // the model takes longer than one attempt's deadline: at most ~15 polls fit in 300 ms at 20 ms apart
    fake.respondWith({ pending: Array(40).fill('IN_PROGRESS') });
    let recorded: string[] = [];
    const err = await editError(
      provider({ timeoutMs: 300, pollIntervalMs: 20 }).edit(request(), {
        onSubmitted: async (ids) => {
          recorded = ids;
        },
      }),
    );
    expect([err.code, err.retryable]).toEqual(['upstream_timeout', true]);
    const requestId = fake.submissions[0]!.requestId;
    expect(recorded).toEqual([requestId]);
    await sleep(50); // a cancel sent late would have arrived by now
    expect(kinds()).not.toContain('cancel');
    expect(fake.submissions[0]!.cancelled).toBe(false);

    const reported: string[][] = [];
    const result = await provider().edit(request(), { resume: recorded, onSubmitted: async (ids) => void reported.push(ids) });
    expect(fake.submissions).toHaveLength(1);
    expect(kinds().filter((k) => k === 'submit')).toHaveLength(1);
    expect(reported).toEqual([]);
    expect(fake.requests.filter((r) => r.kind === 'result').map((r) => r.requestId)).toEqual([requestId]);
    expect(kinds()).not.toContain('cancel');
    expect(result.images).toHaveLength(1);
  });

  it("the deadline while resuming leaves the request running too, a caller's signal that did not fire notwithstanding", async () => {
    fake.respondWith({ neverComplete: true });
    let recorded: string[] = [];
    await editError(
      provider({ timeoutMs: 200, pollIntervalMs: 20 }).edit(request(), {
        onSubmitted: async (ids) => {
          recorded = ids;
        },
      }),
    );
    const timedOut = await editError(provider({ timeoutMs: 200, pollIntervalMs: 20 }).edit(request(), { resume: recorded, signal: new AbortController().signal }));
    expect([timedOut.code, timedOut.retryable]).toEqual(['upstream_timeout', true]);
    await sleep(50);
    expect(kinds()).not.toContain('cancel');
    expect(fake.submissions).toHaveLength(1);
    expect(fake.submissions[0]!.cancelled).toBe(false);
  });

  it('the deadline during the submit is upstream_timeout', async () => {
    const release = fake.hold();
    try {
      const err = await editError(provider({ timeoutMs: 300 }).edit(request()));
      expect([err.code, err.retryable]).toEqual(['upstream_timeout', true]);
    } finally {
      release();
    }
  });

  it("the caller's abort stops polling at once and cancels the queued request", async () => {
    fake.respondWith({ neverComplete: true });
    const controller = new AbortController();
    const pending = editError(provider({ pollIntervalMs: 20 }).edit(request(), { signal: controller.signal }));
    await fake.waitForRequests(3); // submit + two polls
    controller.abort();
    const err = await pending;
    expect([err.code, err.retryable]).toEqual(['aborted', false]);
    expect(fake.submissions[0]!.cancelled).toBe(true);
    const polls = kinds().filter((k) => k === 'status').length;
    await new Promise((r) => setTimeout(r, 100));
    expect(kinds().filter((k) => k === 'status')).toHaveLength(polls);
  });
});

describe('fal: paid requests are resumed, not submitted again', () => {
  const submits = () => kinds().filter((k) => k === 'submit').length;

  it('reports the request_id to onSubmitted, and waits for it, before polling', async () => {
    const seen: Array<{ ids: string[]; requests: string[] }> = [];
    const result = await provider().edit(request(), {
      onSubmitted: async (ids) => {
        seen.push({ ids, requests: kinds() });
        await sleep(50);
        seen.push({ ids, requests: kinds() });
      },
    });
    const id = fake.submissions[0]!.requestId;
    expect(seen).toEqual([
      { ids: [id], requests: ['submit'] },
      { ids: [id], requests: ['submit'] },
    ]);
    expect(kinds()).toEqual(['submit', 'status', 'result', 'file']);
    expect(result.images).toHaveLength(1);
  });

  it('a retry collects the request of a worker that froze mid-wait, with no second submission', async () => {
    fake.respondWith({ pending: ['IN_QUEUE', 'IN_PROGRESS'] });
    const thaw = fake.hold({ kind: 'status', times: 1 }); // the first worker's first poll is never answered
    let recorded: string[] = [];
    const frozen = provider().edit(request({ outputFormat: 'png' }), {
      onSubmitted: async (ids) => {
        recorded = ids;
      },
    });
    await fake.waitForRequests(2);
    expect(recorded).toEqual([fake.submissions[0]!.requestId]);

    const reported: string[][] = [];
    const result = await provider().edit(request({ outputFormat: 'png' }), { resume: recorded, onSubmitted: async (ids) => void reported.push(ids) });
    expect(fake.submissions).toHaveLength(1);
    expect(submits()).toBe(1);
    expect(reported).toEqual([]);
    expect(kinds()).not.toContain('cancel');
    expect(result.images).toHaveLength(1);
    expect([result.images[0]!.format, ...(await dims(result.images[0]!.data))]).toEqual(['png', 256, 256]);

    // the first worker, if it ever wakes, collects the same paid result
    thaw();
    expect((await frozen).images).toHaveLength(1);
    expect(fake.submissions).toHaveLength(1);
  });

  it('an onSubmitted failure is thrown as it is, cancels nothing, and the retry resumes the request', async () => {
    fake.respondWith({ pending: ['IN_PROGRESS', 'IN_PROGRESS'] });
    const dbDown = new Error('database unavailable');
    let recorded: string[] = [];
    const err = await provider()
      .edit(request(), {
        onSubmitted: async (ids) => {
          recorded = ids;
          throw dbDown;
        },
      })
      .catch((e: unknown) => e);
    expect(err).toBe(dbDown);
    expect(kinds()).toEqual(['submit']);
    expect(fake.submissions[0]!.cancelled).toBe(false);

    const result = await provider().edit(request(), { resume: recorded });
    expect(submits()).toBe(1);
    expect(result.images).toHaveLength(1);
  });

  it('a resumed id fal does not know (404) is replaced by a new submission, which is reported', async () => {
    const reported: string[][] = [];
    const result = await provider().edit(request(), { resume: ['00000000-0000-0000-0000-000000000000'], onSubmitted: async (ids) => void reported.push(ids) });
    expect(kinds()).toEqual(['status', 'submit', 'status', 'result', 'file']);
    expect(fake.requests[0]!.path).toBe('/fal-ai/flux-pro/requests/00000000-0000-0000-0000-000000000000/status');
    expect(submits()).toBe(1);
    expect(reported).toEqual([[fake.submissions[0]!.requestId]]);
    expect(result.images).toHaveLength(1);
  });

  it('a resumed request that failed upstream is replaced by a new submission', async () => {
    fake.respondWith({ result: { status: 500, body: { detail: 'Runner encountered an internal error', error_type: 'runner_server_error' } } });
    let recorded: string[] = [];
    const failed = await editError(
      provider().edit(request(), {
        onSubmitted: async (ids) => {
          recorded = ids;
        },
      }),
    );
    expect([failed.code, failed.retryable]).toEqual(['upstream_error', true]);

    const reported: string[][] = [];
    const result = await provider().edit(request(), { resume: recorded, onSubmitted: async (ids) => void reported.push(ids) });
    expect(fake.submissions).toHaveLength(2);
    const fresh = fake.submissions[1]!.requestId;
    expect(fresh).not.toBe(recorded[0]);
    expect(reported).toEqual([[fresh]]);
    expect(result.images).toHaveLength(1);
  });

  it('n > 4: resumes the requests recorded before the crash and submits only the missing one', async () => {
    // the first worker dies right after recording its second request_id (its call never returns)
    const recorded = await new Promise<string[]>((died) => {
      void provider().edit(request({ n: 10 }), {
        onSubmitted: async (ids) => {
          if (ids.length < 2) return;
          died(ids);
          await new Promise(() => {});
        },
      });
    });
    expect(fake.submissions).toHaveLength(2);

    const reported: string[][] = [];
    const result = await provider().edit(request({ n: 10 }), { resume: recorded, onSubmitted: async (ids) => void reported.push(ids) });
    expect(fake.submissions.map((s) => s.input.num_images)).toEqual([4, 4, 2]);
    expect(reported).toEqual([[...recorded, fake.submissions[2]!.requestId]]);
    expect(result.images).toHaveLength(10);
    for (const img of result.images) expect(await dims(img.data)).toEqual([256, 256]);
  });

  it("the caller's abort cancels a resumed request too", async () => {
    fake.respondWith({ neverComplete: true });
    let recorded: string[] = [];
    await provider()
      .edit(request(), {
        onSubmitted: async (ids) => {
          recorded = ids;
          throw new Error('worker lost');
        },
      })
      .catch(() => undefined);

    const controller = new AbortController();
    const pending = editError(provider({ pollIntervalMs: 20 }).edit(request(), { resume: recorded, signal: controller.signal }));
    await fake.waitForRequests(3); // the submit, two polls of the resumed request
    controller.abort();
    const err = await pending;
    expect([err.code, err.retryable]).toEqual(['aborted', false]);
    expect(submits()).toBe(1);
    expect(fake.submissions[0]!.cancelled).toBe(true);
    expect(fake.requests.find((r) => r.kind === 'cancel')?.requestId).toBe(recorded[0]);
  });
});

async function dims(data: Buffer): Promise<[number | undefined, number | undefined]> {
  const meta = await sharp(data).metadata();
  return [meta.width, meta.height];
}
