import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import sharp from 'sharp';
// deep imports: the package index also exports the integration harness (databases, servers)
import { type FakeReplicate, replicateProblem, startFakeReplicate } from '@image-edits/testing/src/fake-replicate';
import { makeMask, makeOpaque, makePng } from '@image-edits/testing/src/fixtures';
import type { InputImage, ProviderEditRequest } from '../types';
import { ProviderError } from '../types';
import { createReplicateProvider } from './replicate-provider';

const API_KEY = 'r8_test-secret-token-123';
const PRO = 'black-forest-labs/flux-fill-pro';
const DEV = 'black-forest-labs/flux-fill-dev';
const HOLE = { x: 64, y: 64, width: 64, height: 64 };

let fake: FakeReplicate;
let png256: Buffer;
let mask256: Buffer;
let opaque256: Buffer;

const input = (data: Buffer, format: InputImage['format'], filename: string, width = 256, height = width): InputImage => ({ data, format, filename, width, height });

const provider = (opts: { timeoutMs?: number; baseURL?: string; apiKey?: string } = {}) =>
  createReplicateProvider({ apiKey: opts.apiKey ?? API_KEY, baseURL: opts.baseURL ?? fake.url, timeoutMs: opts.timeoutMs ?? 10_000, pollIntervalMs: 10 });

const request = (over: Partial<ProviderEditRequest> = {}): ProviderEditRequest => ({
  model: PRO,
  prompt: 'a red balloon in the hole',
  images: [input(opaque256, 'png', 'canvas.png')],
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

/** method + path with ids and file names blanked, for checking the sequence of calls */
const calls = () => fake.requests.map((r) => `${r.method} ${r.path.replace(/\/predictions\/[a-z0-9]+/, '/predictions/:id').replace(/\/files\/.*/, '/files/:name')}`);

/** pixel value of a one-channel image at (x, y) */
async function grey(png: Buffer, x: number, y: number): Promise<number> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return data[(y * info.width + x) * info.channels] ?? -1;
}

beforeAll(async () => {
  fake = await startFakeReplicate({ apiToken: API_KEY });
  png256 = await makePng(256, 256, { hole: HOLE });
  mask256 = await makeMask(256, 256, HOLE);
  opaque256 = await makeOpaque(256, 256, 'png');
});

afterAll(async () => {
  await fake.close();
});

beforeEach(() => fake.reset());

describe('Replicate provider: the request', () => {
  it('creates a flux-fill-pro prediction with every input field, polls it and downloads the output', async () => {
    const p = provider();
    expect(p.id).toBe('replicate');
    const result = await p.edit(request({ outputFormat: 'jpeg', size: 'auto', quality: 'auto', background: 'opaque', user: 'user-42' }));

    expect(calls()).toEqual(['POST /v1/models/black-forest-labs/flux-fill-pro/predictions', 'GET /v1/predictions/:id', 'GET /files/:name']);
    const create = fake.requests[0]!;
    expect(create.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(create.headers['content-type']).toBe('application/json');
    expect(create.headers.prefer).toBeUndefined();
    expect(Object.keys(create.body ?? {})).toEqual(['input']); // official model: no version
    expect(JSON.stringify(create.body)).not.toContain(API_KEY);
    const fields = create.body!.input as Record<string, unknown>;
    expect(Object.keys(fields).sort()).toEqual(['image', 'mask', 'output_format', 'prompt', 'seed']);
    expect(fields.prompt).toBe('a red balloon in the hole');
    expect(fields.output_format).toBe('jpg');
    expect(Number.isInteger(fields.seed)).toBe(true);

    const image = create.inputFiles.find((f) => f.field === 'image')!;
    expect(image.contentType).toBe('image/png');
    expect(image.data.equals(opaque256)).toBe(true);
    const mask = create.inputFiles.find((f) => f.field === 'mask')!;
    expect(mask.contentType).toBe('image/png');
    const meta = await sharp(mask.data).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 256, 256]);
    // white = inpaint inside the (transparent) hole, black = keep outside it
    expect(await grey(mask.data, 64, 64)).toBe(255);
    expect(await grey(mask.data, 127, 127)).toBe(255);
    expect(await grey(mask.data, 63, 64)).toBe(0);
    expect(await grey(mask.data, 128, 128)).toBe(0);
    expect(await grey(mask.data, 5, 250)).toBe(0);

    // the output URL is fetched without the API token
    expect(fake.requests[2]!.headers.authorization).toBeUndefined();
    expect(result.images).toHaveLength(1);
    const out = result.images[0]!;
    expect(out.format).toBe('jpeg');
    const outMeta = await sharp(out.data).metadata();
    expect([outMeta.format, outMeta.width, outMeta.height]).toEqual(['jpeg', 256, 256]);
  });

  it("uses the canvas's own transparency when there is no mask, and sends a jpeg canvas as image/jpeg", async () => {
    await provider().edit(request({ mask: undefined, images: [input(png256, 'png', 'holed.png')] }));
    const mask = fake.requests[0]!.inputFiles.find((f) => f.field === 'mask')!;
    expect([await grey(mask.data, 100, 100), await grey(mask.data, 10, 10)]).toEqual([255, 0]);
    expect((fake.requests[0]!.body!.input as Record<string, unknown>).output_format).toBeUndefined();

    fake.reset();
    const jpeg = await makeOpaque(300, 200, 'jpeg');
    const mask300 = await makeMask(300, 200, { x: 10, y: 10, width: 20, height: 20 });
    const result = await provider().edit(request({ images: [input(jpeg, 'jpeg', 'a.jpg', 300, 200)], mask: input(mask300, 'png', 'm.png', 300, 200), outputFormat: 'png' }));
    const image = fake.requests[0]!.inputFiles.find((f) => f.field === 'image')!;
    expect([image.contentType, image.data.equals(jpeg)]).toEqual(['image/jpeg', true]);
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([result.images[0]!.format, meta.width, meta.height]).toEqual(['png', 300, 200]);
  });

  it('sends a multi-megabyte canvas intact, and refuses one over the 10 MB inline limit', async () => {
    const noise = Buffer.from(Array.from({ length: 1024 * 1024 * 3 }, (_, i) => (i * 2654435761) >>> 24));
    const big = await sharp(noise, { raw: { width: 1024, height: 1024, channels: 3 } }).png({ compressionLevel: 0 }).toBuffer();
    expect(big.length).toBeGreaterThan(3_000_000);
    const bigMask = await makeMask(1024, 1024, { x: 0, y: 0, width: 10, height: 10 });
    const result = await provider().edit(request({ images: [input(big, 'png', 'big.png', 1024)], mask: input(bigMask, 'png', 'm.png', 1024) }));
    expect(fake.requests[0]!.inputFiles.find((f) => f.field === 'image')!.data.equals(big)).toBe(true);
    expect((await sharp(result.images[0]!.data).metadata()).width).toBe(1024);

    fake.reset();
    const huge = Buffer.concat([big, big, big, big]);
    const err = await editError(provider().edit(request({ images: [input(huge, 'png', 'huge.png', 1024)] })));
    expect([err.code, err.status, err.retryable]).toEqual(['provider_rejected', 413, false]);
    expect(err.message).toContain('10000000');
    expect(fake.requests).toHaveLength(0);
  });

  it('refuses a mask with nothing to edit before calling Replicate', async () => {
    const err = await editError(provider().edit(request({ mask: undefined })));
    expect([err.code, err.retryable]).toEqual(['invalid_mask', false]);
    expect(fake.requests).toHaveLength(0);
  });

  it('runs n flux-fill-pro predictions with distinct seeds', async () => {
    const result = await provider().edit(request({ n: 3, outputFormat: 'png' }));
    expect(fake.predictions).toHaveLength(3);
    const seeds = fake.predictions.map((p) => p.input.seed as number).sort((a, b) => a - b);
    expect(new Set(seeds).size).toBe(3);
    expect(seeds[2]! - seeds[0]!).toBe(2);
    expect(result.images).toHaveLength(3);
    for (const img of result.images) expect(img.format).toBe('png');
  });

  it('asks flux-fill-dev for up to 4 outputs per prediction, at the input size, with its quality', async () => {
    const result = await provider().edit(request({ model: DEV, n: 6, outputFormat: 'webp', outputCompression: 70 }));
    expect(fake.requests.filter((r) => r.method === 'POST').map((r) => r.path)).toEqual([
      '/v1/models/black-forest-labs/flux-fill-dev/predictions',
      '/v1/models/black-forest-labs/flux-fill-dev/predictions',
    ]);
    const inputs = fake.predictions.map((p) => p.input);
    expect(inputs.map((i) => i.num_outputs).sort()).toEqual([2, 4]);
    for (const i of inputs) {
      expect(Object.keys(i).sort()).toEqual(['image', 'mask', 'megapixels', 'num_outputs', 'output_format', 'output_quality', 'prompt', 'seed']);
      expect([i.megapixels, i.output_format, i.output_quality]).toEqual(['match_input', 'webp', 70]);
    }
    const seeds = inputs.map((i) => i.seed as number).sort((a, b) => a - b);
    expect(seeds[1]! - seeds[0]!).toBe(4);
    expect(result.images).toHaveLength(6);
    for (const img of result.images) {
      const meta = await sharp(img.data).metadata();
      expect([img.format, meta.format, meta.width, meta.height]).toEqual(['webp', 'webp', 256, 256]);
    }
  });
});

describe('Replicate provider: size', () => {
  it('resizes the output to an explicit WxH that differs from it', async () => {
    const result = await provider().edit(request({ size: '512x384', outputFormat: 'jpeg' }));
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([result.images[0]!.format, meta.format, meta.width, meta.height]).toEqual(['jpeg', 'jpeg', 512, 384]);
  });

  it('brings an output FLUX rounded (e.g. to multiples of 32) back to the asked size', async () => {
    fake.planPredictions({ outputSize: { width: 224, height: 224 } });
    const result = await provider().edit(request({ size: '256x256', outputFormat: 'png' }));
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 256, 256]);
  });

  it('keeps the output as it is for auto, unset, or a size it already has', async () => {
    fake.planPredictions({ outputSize: { width: 224, height: 224 } });
    const auto = await provider().edit(request({ size: 'auto' }));
    expect((await sharp(auto.images[0]!.data).metadata()).width).toBe(224);

    fake.reset();
    await provider().edit(request({ size: '256x256', outputFormat: 'png' }));
    const served = await fetch(`${fake.origin}${fake.requests[2]!.path}`).then(async (r) => Buffer.from(await r.arrayBuffer()));
    fake.reset();
    const same = await provider().edit(request({ size: '256x256', outputFormat: 'png' }));
    // not re-encoded: the same generated picture comes back byte for byte
    expect(same.images[0]!.data.equals(served)).toBe(true);
  });
});

describe('Replicate provider: parameters it cannot honour', () => {
  const cases: Array<[string, Partial<ProviderEditRequest>, string]> = [
    ['webp on flux-fill-pro', { outputFormat: 'webp' }, 'output_format'],
    ['output_compression on flux-fill-pro', { outputCompression: 80 }, 'output_compression'],
    ['quality', { quality: 'high' }, 'quality'],
    ['a transparent background', { background: 'transparent' }, 'background'],
    ['input_fidelity', { inputFidelity: 'high' }, 'input_fidelity'],
    ['an unknown model', { model: 'black-forest-labs/flux-kontext-pro' }, 'model'],
    ['a malformed size', { size: 'big' }, 'size'],
  ];
  it.each(cases)('%s is unsupported_parameter, before any request', async (_name, over, parameter) => {
    const err = await editError(provider().edit(request(over)));
    expect([err.code, err.retryable, err.provider]).toEqual(['unsupported_parameter', false, 'replicate']);
    expect(err.message).toContain(parameter);
    expect(fake.requests).toHaveLength(0);
  });

  it('several input images are refused', async () => {
    const err = await editError(provider().edit(request({ images: [input(opaque256, 'png', 'a.png'), input(opaque256, 'png', 'b.png')] })));
    expect([err.code, err.retryable]).toEqual(['unsupported_parameter', false]);
    expect(err.message).toContain('exactly one image');
  });
});

describe('Replicate provider: prediction lifecycle', () => {
  it('keeps polling while the prediction is starting/processing, then returns its output', async () => {
    fake.planPredictions({ steps: ['starting', 'processing', 'processing'] });
    const result = await provider().edit(request());
    expect(calls()).toEqual([
      'POST /v1/models/black-forest-labs/flux-fill-pro/predictions',
      'GET /v1/predictions/:id',
      'GET /v1/predictions/:id',
      'GET /v1/predictions/:id',
      'GET /v1/predictions/:id',
      'GET /files/:name',
    ]);
    expect(fake.predictions[0]!.status).toBe('succeeded');
    expect(result.images).toHaveLength(1);
  });

  it('rides out a 503 while polling instead of paying for a new prediction', async () => {
    fake.planPredictions({ steps: ['processing'] });
    fake.respondWith(replicateProblem(503, 'Service Unavailable', 'try again'), { route: 'get' });
    const result = await provider().edit(request());
    expect(fake.predictions).toHaveLength(1);
    expect(result.images).toHaveLength(1);
  });

  it('a failed prediction flagged as sensitive is a permanent content_policy_violation with its message', async () => {
    const message = 'Flagged as sensitive. Please try with different inputs. (E005)';
    fake.planPredictions({ steps: ['processing'], outcome: { status: 'failed', error: message } });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.retryable, err.message]).toEqual(['content_policy_violation', false, message]);

    fake.planPredictions({ outcome: { status: 'failed', error: 'NSFW content detected. Try running it again, or try a different prompt.' } });
    expect((await editError(provider().edit(request({ model: DEV })))).code).toBe('content_policy_violation');
  });

  it('a failed prediction blaming the input is permanent; an unknown failure is retryable', async () => {
    fake.planPredictions({ outcome: { status: 'failed', error: 'Mask and image must have the same size' } });
    const bad = await editError(provider().edit(request()));
    expect([bad.code, bad.retryable]).toEqual(['provider_rejected', false]);
    expect(bad.message).toContain('Mask and image must have the same size');

    fake.planPredictions({ outcome: { status: 'failed', error: 'CUDA error: an illegal memory access was encountered' } });
    const unknown = await editError(provider().edit(request()));
    expect([unknown.code, unknown.retryable]).toEqual(['upstream_error', true]);
    expect(unknown.message).toContain('illegal memory access');
  });

  it('a prediction canceled or aborted upstream is retryable', async () => {
    fake.planPredictions({ outcome: { status: 'canceled' } });
    const canceled = await editError(provider().edit(request()));
    expect([canceled.code, canceled.retryable]).toEqual(['upstream_error', true]);
    fake.planPredictions({ outcome: { status: 'aborted' } });
    const aborted = await editError(provider().edit(request()));
    expect([aborted.code, aborted.retryable]).toEqual(['upstream_timeout', true]);
  });

  it('succeeded without an image URL is upstream_invalid_response', async () => {
    fake.planPredictions({ outcome: { status: 'succeeded', output: null } });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.retryable]).toEqual(['upstream_invalid_response', true]);
  });

  it('a failed download is upstream_error with its status', async () => {
    fake.planPredictions({ outcome: { status: 'succeeded', output: `${fake.origin}/files/gone.jpg` } });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.status, err.retryable]).toEqual(['upstream_error', 404, false]);
  });

  it('when one of n predictions fails, the others are cancelled and its failure is reported', async () => {
    fake.planPredictions({ outcome: { status: 'failed', error: 'Flagged as sensitive. (E005)' } });
    fake.planPredictions({ steps: Array(1000).fill('processing') }, { times: 2 });
    const err = await editError(provider().edit(request({ n: 3 })));
    expect(err.code).toBe('content_policy_violation');
    expect(fake.predictions.map((p) => p.status).sort()).toEqual(['canceled', 'canceled', 'failed']);
    expect(calls().filter((c) => c.endsWith('/cancel'))).toHaveLength(2);
  });

  it('an abort through the signal cancels the running prediction at Replicate', async () => {
    fake.planPredictions({ steps: Array(1000).fill('processing') });
    const controller = new AbortController();
    const pending = editError(provider().edit(request(), { signal: controller.signal }));
    await fake.waitForRequests(3); // create and two polls
    controller.abort();
    const err = await pending;
    expect([err.code, err.retryable]).toEqual(['aborted', false]);
    const prediction = fake.predictions[0]!;
    expect([prediction.status, prediction.cancelRequests]).toEqual(['canceled', 1]);
    const cancel = fake.requests.find((r) => r.path.endsWith('/cancel'))!;
    expect([cancel.method, cancel.path, cancel.headers.authorization]).toEqual(['POST', `/v1/predictions/${prediction.id}/cancel`, `Bearer ${API_KEY}`]);
  });
});

describe('Replicate provider: paid predictions are resumed, not created again', () => {
  const creates = () => fake.requests.filter((r) => r.method === 'POST' && !r.path.endsWith('/cancel')).length;

  it('reports the prediction id to onSubmitted, and waits for it, before polling', async () => {
    const seen: Array<{ ids: string[]; calls: string[] }> = [];
    const result = await provider().edit(request(), {
      onSubmitted: async (ids) => {
        seen.push({ ids, calls: calls() });
        await sleep(50);
        seen.push({ ids, calls: calls() });
      },
    });
    const id = fake.predictions[0]!.id;
    const created = ['POST /v1/models/black-forest-labs/flux-fill-pro/predictions'];
    expect(seen).toEqual([
      { ids: [id], calls: created },
      { ids: [id], calls: created },
    ]);
    expect(result.images).toHaveLength(1);
  });

  it('a retry collects the prediction of a worker that froze mid-wait, with no second prediction', async () => {
    fake.planPredictions({ steps: ['processing', 'processing'] });
    const thaw = fake.hold({ route: 'get', times: 1 }); // the first worker's first poll is never answered
    let recorded: string[] = [];
    const frozen = provider().edit(request({ outputFormat: 'png' }), {
      onSubmitted: async (ids) => {
        recorded = ids;
      },
    });
    await fake.waitForRequests(2);
    expect(recorded).toEqual([fake.predictions[0]!.id]);

    const reported: string[][] = [];
    const result = await provider().edit(request({ outputFormat: 'png' }), { resume: recorded, onSubmitted: async (ids) => void reported.push(ids) });
    expect(fake.predictions).toHaveLength(1);
    expect(creates()).toBe(1);
    expect(reported).toEqual([]);
    expect(fake.predictions[0]!.cancelRequests).toBe(0);
    const meta = await sharp(result.images[0]!.data).metadata();
    expect([result.images.length, meta.format, meta.width, meta.height]).toEqual([1, 'png', 256, 256]);

    // the first worker, if it ever wakes, collects the same paid output
    thaw();
    expect((await frozen).images).toHaveLength(1);
    expect(fake.predictions).toHaveLength(1);
  });

  it('an onSubmitted failure is thrown as it is, cancels nothing, and the retry resumes the prediction', async () => {
    fake.planPredictions({ steps: ['processing'] });
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
    expect(calls()).toEqual(['POST /v1/models/black-forest-labs/flux-fill-pro/predictions']);

    const result = await provider().edit(request(), { resume: recorded });
    expect(creates()).toBe(1);
    expect(fake.predictions[0]!.cancelRequests).toBe(0);
    expect(result.images).toHaveLength(1);
  });

  it('a resumed id Replicate does not know (404) is replaced by a new prediction, which is reported', async () => {
    const reported: string[][] = [];
    const result = await provider().edit(request(), { resume: ['zzzzzzzzzzzzzzzzzzzzzzzzzz'], onSubmitted: async (ids) => void reported.push(ids) });
    expect(calls()).toEqual([
      'GET /v1/predictions/:id',
      'POST /v1/models/black-forest-labs/flux-fill-pro/predictions',
      'GET /v1/predictions/:id',
      'GET /files/:name',
    ]);
    expect(fake.requests[0]!.path).toBe('/v1/predictions/zzzzzzzzzzzzzzzzzzzzzzzzzz');
    expect(reported).toEqual([[fake.predictions[0]!.id]]);
    expect(result.images).toHaveLength(1);
  });

  it.each(['failed', 'canceled'] as const)('a resumed prediction that %s is replaced by a new one', async (status) => {
    fake.planPredictions({ outcome: status === 'failed' ? { status, error: 'CUDA error: out of memory' } : { status } });
    let recorded: string[] = [];
    const first = await editError(
      provider().edit(request(), {
        onSubmitted: async (ids) => {
          recorded = ids;
        },
      }),
    );
    expect(first.retryable).toBe(true);

    const reported: string[][] = [];
    const result = await provider().edit(request(), { resume: recorded, onSubmitted: async (ids) => void reported.push(ids) });
    expect(fake.predictions.map((p) => p.status)).toEqual([status, 'succeeded']);
    expect(reported).toEqual([[fake.predictions[1]!.id]]);
    expect(result.images).toHaveLength(1);
  });

  it('n predictions: resumes the ones recorded before the crash and creates only the missing one', async () => {
    fake.planPredictions({ steps: ['processing'] }, { times: 2 });
    // the first worker dies right after recording its second prediction id (its call never returns)
    const recorded = await new Promise<string[]>((died) => {
      void provider().edit(request({ n: 3 }), {
        onSubmitted: async (ids) => {
          if (ids.length < 2) return;
          died(ids);
          await new Promise(() => {});
        },
      });
    });
    expect(fake.predictions).toHaveLength(2);

    const reported: string[][] = [];
    const result = await provider().edit(request({ n: 3 }), { resume: recorded, onSubmitted: async (ids) => void reported.push(ids) });
    expect(fake.predictions).toHaveLength(3);
    expect(creates()).toBe(3);
    expect(reported).toEqual([[...recorded, fake.predictions[2]!.id]]);
    expect(fake.predictions.map((p) => p.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    expect(result.images).toHaveLength(3);
  });

  it("the caller's abort cancels a resumed prediction too", async () => {
    fake.planPredictions({ steps: Array(1000).fill('processing') });
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
    const pending = editError(provider().edit(request(), { resume: recorded, signal: controller.signal }));
    await fake.waitForRequests(3); // the create, two reads of the resumed prediction
    controller.abort();
    const err = await pending;
    expect([err.code, err.retryable]).toEqual(['aborted', false]);
    expect(creates()).toBe(1);
    expect([fake.predictions[0]!.status, fake.predictions[0]!.cancelRequests]).toEqual(['canceled', 1]);
  });
});

describe('Replicate provider: HTTP errors', () => {
  it('429 with retry-after is rate_limited with retryAfterMs, and the SDK does not retry it itself', async () => {
    fake.respondWith(replicateProblem(429, 'Request was throttled.', 'Request was throttled. Expected available in 2 seconds.', { 'retry-after': '2' }));
    const err = await editError(provider().edit(request()));
    expect([err.code, err.status, err.retryable, err.retryAfterMs, err.message]).toEqual(['rate_limited', 429, true, 2000, 'Request was throttled. Expected available in 2 seconds.']);
    expect(fake.requests).toHaveLength(1);
  });

  it('5xx on create is retryable upstream_error', async () => {
    fake.respondWith(replicateProblem(502, 'Bad Gateway', 'upstream connect error'));
    const err = await editError(provider().edit(request()));
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['upstream_error', 502, true, 'upstream connect error']);
    expect(fake.requests).toHaveLength(1);
  });

  it('a 5xx that is not JSON still classifies by status', async () => {
    fake.respondWith({ status: 500, body: '<html>oops</html>' });
    const err = await editError(provider().edit(request()));
    expect([err.code, err.retryable, err.message]).toEqual(['upstream_error', true, 'Replicate answered HTTP 500']);
  });

  it('422 is permanent with the problem detail as message', async () => {
    fake.respondWith(replicateProblem(422, 'Input validation failed', '- input.steps: Must be less than or equal to 50\n'));
    const err = await editError(provider().edit(request()));
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['provider_rejected', 422, false, '- input.steps: Must be less than or equal to 50']);
  });

  it('a 4xx refusing the content is content_policy_violation', async () => {
    fake.respondWith(replicateProblem(422, 'Input flagged', 'The prompt was flagged by moderation.'));
    const err = await editError(provider().edit(request()));
    expect([err.code, err.retryable, err.message]).toEqual(['content_policy_violation', false, 'The prompt was flagged by moderation.']);
  });

  it('402 insufficient credit is permanent', async () => {
    fake.respondWith(replicateProblem(402, 'Insufficient credit', 'You have insufficient credit to run this model.'));
    const err = await editError(provider().edit(request()));
    expect([err.code, err.status, err.retryable]).toEqual(['provider_rejected', 402, false]);
  });

  it('a bad token is provider_auth_failed and the token never appears in messages', async () => {
    const err = await editError(provider({ apiKey: 'r8_wrong-token' }).edit(request()));
    expect([err.code, err.status, err.retryable, err.message]).toEqual(['provider_auth_failed', 401, false, 'You did not pass a valid authentication token']);
    expect(err.message).not.toContain('r8_wrong-token');

    fake.respondWith(replicateProblem(400, 'Bad request', `token ${API_KEY} is not allowed here`));
    const echoed = await editError(provider().edit(request()));
    expect(echoed.message).toBe('token *** is not allowed here');
    fake.planPredictions({ outcome: { status: 'failed', error: `could not use ${API_KEY}` } });
    const failed = await editError(provider().edit(request()));
    expect(failed.message).not.toContain(API_KEY);
  });

  it('a closed port is upstream_unreachable', async () => {
    const server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const err = await editError(provider({ baseURL: `http://127.0.0.1:${port}/v1` }).edit(request()));
    expect([err.code, err.retryable]).toEqual(['upstream_unreachable', true]);
    expect(err.message).not.toContain(API_KEY);
  });

  it('a create that never answers is upstream_timeout', async () => {
    const release = fake.hold();
    try {
      const err = await editError(provider({ timeoutMs: 300 }).edit(request()));
      expect([err.code, err.retryable]).toEqual(['upstream_timeout', true]);
    } finally {
      release();
    }
  });

  it('predictions that outlive the deadline are upstream_timeout, left running, and a retry collects them', async () => {
    // slower than one attempt's deadline: at most ~30 reads fit in 300 ms at 10 ms apart
    fake.planPredictions({ steps: Array(60).fill('processing') }, { times: 2 });
    let recorded: string[] = [];
    const err = await editError(
      provider({ timeoutMs: 300 }).edit(request({ n: 2 }), {
        onSubmitted: async (ids) => {
          recorded = ids;
        },
      }),
    );
    expect([err.code, err.retryable]).toEqual(['upstream_timeout', true]);
    expect(recorded).toEqual(fake.predictions.map((p) => p.id));
    await sleep(50); // a cancel sent late would have arrived by now
    expect(calls().filter((c) => c.endsWith('/cancel'))).toEqual([]);
    expect(fake.predictions.map((p) => [p.status, p.cancelRequests])).toEqual([
      ['processing', 0],
      ['processing', 0],
    ]);

    const reported: string[][] = [];
    const result = await provider().edit(request({ n: 2 }), { resume: recorded, onSubmitted: async (ids) => void reported.push(ids) });
    expect(fake.predictions).toHaveLength(2);
    expect(fake.requests.filter((r) => r.method === 'POST' && !r.path.endsWith('/cancel'))).toHaveLength(2);
    expect(reported).toEqual([]);
    expect(calls().filter((c) => c.endsWith('/cancel'))).toEqual([]);
    expect(fake.predictions.map((p) => p.status)).toEqual(['succeeded', 'succeeded']);
    expect(result.images).toHaveLength(2);
  });

  it('the deadline while creating the next prediction leaves the started one running', async () => {
    fake.planPredictions({ steps: Array(1000).fill('processing') });
    let release = () => {};
    const err = await editError(
      provider({ timeoutMs: 300 }).edit(request({ n: 2 }), {
        onSubmitted: async () => {
          release = fake.hold({ route: 'create', times: 1 }); // the second create is never answered in time
        },
      }),
    );
    expect([err.code, err.retryable]).toEqual(['upstream_timeout', true]);
    await sleep(50);
    expect(calls().filter((c) => c.endsWith('/cancel'))).toEqual([]);
    expect([fake.predictions[0]!.status, fake.predictions[0]!.cancelRequests]).toEqual(['starting', 0]);
    // let the held create end here, not in a later test
    release();
    while (fake.predictions.length < 2) await sleep(5);
  });
});
