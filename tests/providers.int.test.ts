import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import {
  type FakeFal,
  type FakeGemini,
  type FakeOpenAI,
  type FakeReplicate,
  type FakeStability,
  makeMask,
  makePng,
  openAIError,
  falError,
  startFakeFal,
  startFakeGemini,
  startFakeOpenAI,
  startFakeReplicate,
  startFakeStability,
  startTestService,
  type TestService,
} from '@image-edits/testing';
import { decode, editForm, get, pollJob, post } from './helpers';

/**
 * Routing, retries, rate limits, isolation, fallback and cost through the whole pipeline: real API,
 * worker, Postgres, Redis and S3, with each provider faked by a real HTTP server on loopback.
 */
let svc: TestService;
let openai: FakeOpenAI;
let azure: FakeOpenAI;
let stability: FakeStability;
let fal: FakeFal;
let gemini: FakeGemini;
let replicate: FakeReplicate;
let png: Buffer;
let mask: Buffer;

beforeAll(async () => {
  openai = await startFakeOpenAI({ apiKey: 'sk-upstream' });
  azure = await startFakeOpenAI({ azure: { apiKey: 'azure-key' } });
  stability = await startFakeStability({ apiKey: 'sk-stability' });
  fal = await startFakeFal({ apiKey: 'fal-key' });
  gemini = await startFakeGemini({ apiKey: 'gemini-key' });
  replicate = await startFakeReplicate({ apiKey: 'r8_token' });
  svc = await startTestService({
    OPENAI_API_KEY: 'sk-upstream',
    OPENAI_BASE_URL: openai.url,
    AZURE_OPENAI_ENDPOINT: azure.origin,
    AZURE_OPENAI_API_KEY: 'azure-key',
    AZURE_OPENAI_DEPLOYMENTS: 'gpt-image-1=img-deployment',
    STABILITY_API_KEY: 'sk-stability',
    STABILITY_BASE_URL: stability.url,
    FAL_KEY: 'fal-key',
    FAL_BASE_URL: fal.url,
    GEMINI_API_KEY: 'gemini-key',
    GEMINI_BASE_URL: gemini.url,
    REPLICATE_API_TOKEN: 'r8_token',
    REPLICATE_BASE_URL: replicate.url,
    // three tries per target, quick backoff; openai's queue runs 2 at a time
    MODEL_REGISTRY: JSON.stringify({ providers: { openai: { attempts: 3, backoffMs: 50, concurrency: 2 }, 'azure-openai': { attempts: 3, backoffMs: 50 }, stability: { attempts: 3, backoffMs: 50 }, fal: { attempts: 2, backoffMs: 50 }, gemini: { rateLimit: { max: 1, durationMs: 1000 } } } }),
  });
  png = await makePng(256, 256, { hole: { x: 64, y: 64, width: 64, height: 64 } });
  mask = await makeMask(256, 256, { x: 64, y: 64, width: 64, height: 64 });
});

afterAll(async () => {
  await svc?.stop();
  await Promise.all([openai?.close(), azure?.close(), stability?.close(), fal?.close(), gemini?.close(), replicate?.close()]);
});

beforeEach(() => {
  openai.reset();
  azure.reset();
  stability.reset();
  fal.reset();
  gemini.reset();
  replicate.reset();
});

const submit = (fields: Record<string, string>, files: [string, Buffer, string, string?][] = [['image', png, 'in.png'], ['mask', mask, 'mask.png']]) =>
  post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'a red balloon', ...fields }, files), { prefer: 'respond-async' });

async function usageRow(jobId: string) {
  return svc.db.usage.findUnique({ where: { jobId } });
}

describe('retries and failure classification', () => {
  it('waits out a 429 with Retry-After: 2 without spending an attempt, then succeeds', async () => {
    openai.respondWith(openAIError(429, 'Rate limit reached for images', { code: 'rate_limit_exceeded', headers: { 'retry-after': '2' } }));
    const started = Date.now();
    const res = await submit({ model: 'openai/gpt-image-1' });
    expect(res.status).toBe(202);
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('succeeded');
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect(job.attempts).toBe(2);
    expect(openai.requests).toHaveLength(2);
    // the retry re-sent the full upload, read again from S3
    expect(openai.requests[1]!.files.find((f) => f.field === 'image')!.data.equals(png)).toBe(true);
    expect(job.provider).toBe('openai');
  });

  it('fails after the configured attempts on 500s, with the provider message', async () => {
    openai.respondWith(openAIError(500, 'The server had an error while processing your request'), { times: Infinity });
    const res = await submit({ model: 'openai/gpt-image-1' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('failed');
    expect(job.attempts).toBe(3);
    expect(openai.requests).toHaveLength(3);
    expect(job.error).toMatchObject({ code: 'upstream_error', message: 'The server had an error while processing your request' });
    expect(await usageRow(job.id)).toBeNull();
  });

  it('fails at once on a content policy refusal', async () => {
    openai.respondWith(openAIError(400, 'Your request was rejected by the safety system', { code: 'moderation_blocked' }), { times: Infinity });
    const res = await submit({ model: 'openai/gpt-image-1' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('failed');
    expect(job.attempts).toBe(1);
    expect(openai.requests).toHaveLength(1);
    expect(job.error).toMatchObject({ code: 'content_policy_violation', type: 'invalid_request_error', message: 'Your request was rejected by the safety system' });
  });

  it('answers a sync request for a refused edit with 400 and the provider message', async () => {
    stability.respondWith({ status: 403, body: { id: 'e1', name: 'content_moderation', errors: ['Your request was flagged by our content moderation system'] } });
    const res = await post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'x', model: 'stable-image-inpaint' }, [['image', png, 'in.png'], ['mask', mask, 'mask.png']]));
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'content_policy_violation' });
    expect(res.body.error.message).toContain('flagged');
  });
});

describe('isolation', () => {
  it('runs other providers while OpenAI is stalled', async () => {
    const release = openai.hold();
    try {
      // fill every OpenAI slot (concurrency 2) and queue one more behind them
      const stalled = await Promise.all([1, 2, 3].map(() => submit({ model: 'openai/gpt-image-1' })));
      await openai.waitForRequests(2);
      const other = await Promise.all([submit({ model: 'stable-image-inpaint' }), submit({ model: 'local-inpaint' })]);
      for (const r of other) {
        const job = await pollJob(svc.url, svc.apiKey, r.body.id, 20_000);
        expect(job.status).toBe('succeeded');
      }
      for (const r of stalled) expect((await get(`${svc.url}/v1/jobs/${r.body.id}`, svc.apiKey)).body.status).not.toBe('succeeded');
      release();
      for (const r of stalled) expect((await pollJob(svc.url, svc.apiKey, r.body.id)).status).toBe('succeeded');
    } finally {
      release();
    }
  });
});

describe('rate limits from the registry', () => {
  it('starts at most max jobs per duration for a provider (gemini: 1 per second)', async () => {
    // one job first, so that the three measured ones all find the worker's Gemini path warm (a cold
    // first call spends longer before it reaches the upstream, which would shorten the measured span)
    expect((await pollJob(svc.url, svc.apiKey, (await submit({ model: 'gemini-2.5-flash-image' })).body.id)).status).toBe('succeeded');
    const arrivals: number[] = [];
    gemini.respondWith(() => {
      arrivals.push(Date.now());
      return undefined;
    }, { times: 3 });
    const subs = await Promise.all([1, 2, 3].map(() => submit({ model: 'gemini-2.5-flash-image' })));
    for (const r of subs) expect((await pollJob(svc.url, svc.apiKey, r.body.id)).status).toBe('succeeded');
    expect(arrivals).toHaveLength(3);
    arrivals.sort((a, b) => a - b);
    expect(arrivals[2]! - arrivals[0]!).toBeGreaterThanOrEqual(1900);
  });
});

describe('fallback', () => {
  it('moves to the next target when the first one keeps answering 503, and records who served', async () => {
    openai.respondWith(openAIError(503, 'The engine is currently overloaded'), { times: Infinity });
    const res = await submit({ model: 'gpt-image-1', quality: 'low', size: '1024x1024' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('succeeded');
    expect(job.provider).toBe('azure-openai');
    expect(job.attempts).toBe(4);
    expect(openai.requests).toHaveLength(3);
    expect(azure.requests).toHaveLength(1);
    expect(azure.requests[0]!.deployment).toBe('img-deployment');
    const usage = await usageRow(job.id);
    expect(usage).toMatchObject({ provider: 'azure-openai', model: 'gpt-image-1', images: 1, quality: 'low', size: '1024x1024' });
  });

  it('does not fall back on a permanent error', async () => {
    openai.respondWith(openAIError(400, 'Invalid image file', { code: 'invalid_image' }), { times: Infinity });
    const res = await submit({ model: 'gpt-image-1' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('failed');
    expect(job.provider).toBe('openai');
    expect(azure.requests).toHaveLength(0);
  });
});

describe('providers through the pipeline', () => {
  it('stability: inpaint with the mask converted to white = edit', async () => {
    const res = await post(`${svc.url}/v1/images/edits`, svc.apiKey, editForm({ prompt: 'a red balloon', model: 'stable-image-inpaint', size: '512x512', response_format: 'b64_json' }, [['image', png, 'in.png'], ['mask', mask, 'mask.png']]));
    expect(res.status).toBe(200);
    const out = await decode(Buffer.from(res.body.data[0].b64_json, 'base64'));
    expect([out.width, out.height]).toEqual([512, 512]);
    const sent = stability.requests[0]!;
    expect(sent.path).toBe('/v2beta/stable-image/edit/inpaint');
    const sentMask = await decode(sent.files.find((f) => f.field === 'mask')!.data);
    const at = (x: number, y: number) => sentMask.raw[(y * sentMask.width + x) * sentMask.channels]!;
    expect(at(96, 96)).toBe(255);
    expect(at(10, 10)).toBe(0);
  });

  it('stability: search-and-replace needs search_prompt and takes no mask', async () => {
    const noSearch = await submit({ model: 'stable-image-search-and-replace' }, [['image', png, 'in.png']]);
    expect(noSearch.status).toBe(400);
    expect(noSearch.body.error.param).toBe('search_prompt');
    const withMask = await submit({ model: 'stable-image-search-and-replace', search_prompt: 'cat' });
    expect(withMask.status).toBe(400);
    expect(withMask.body.error.param).toBe('mask');
    const ok = await submit({ model: 'stable-image-search-and-replace', search_prompt: 'cat' }, [['image', png, 'in.png']]);
    expect((await pollJob(svc.url, svc.apiKey, ok.body.id)).status).toBe('succeeded');
    expect(stability.requests[0]!.fields.search_prompt).toBe('cat');
  });

  it('fal: FLUX fill through the queue API, priced per megapixel', async () => {
    const res = await submit({ model: 'flux-fill-pro', n: '2' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('succeeded');
    expect(job.provider).toBe('fal');
    expect(job.result.data).toHaveLength(2);
    expect(fal.submissions).toHaveLength(1);
    expect((await usageRow(job.id))?.costUsd.toNumber()).toBe(0.1);
  });

  it('gemini: the mask is sent as a highlighted copy with an instruction, never dropped', async () => {
    const res = await submit({ model: 'gemini-2.5-flash-image', size: '1536x1024' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('succeeded');
    expect(job.provider).toBe('gemini');
    const sent = gemini.requests[0]!;
    expect(sent.headers['x-goog-api-key']).toBe('gemini-key');
    expect(sent.parts.filter((p) => p.inlineData)).toHaveLength(2);
    expect(sent.parts.find((p) => p.text)?.text).toContain('a red balloon');
    expect(sent.generationConfig).toMatchObject({ imageConfig: { aspectRatio: '3:2' } });
    const out = await decode(Buffer.from(await (await fetch(job.result.data[0].url)).arrayBuffer()));
    expect([out.width, out.height]).toEqual([1536, 1024]);
    // token usage reported by Gemini is what the job is priced on
    expect(job.usage.output_tokens).toBeGreaterThan(0);
  });

  it('replicate: FLUX Fill predictions polled to completion', async () => {
    replicate.planPredictions({ steps: ['starting', 'processing'] });
    const res = await submit({ model: 'replicate/flux-fill-pro', output_format: 'jpeg' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('succeeded');
    expect(job.provider).toBe('replicate');
    expect(replicate.predictions[0]!.model).toBe('black-forest-labs/flux-fill-pro');
    expect(replicate.predictions[0]!.input).toMatchObject({ prompt: 'a red balloon', output_format: 'jpg' });
    expect((await usageRow(job.id))?.costUsd.toNumber()).toBe(0.05);
  });

  it('flux-fill-pro falls back from fal to Replicate when fal keeps failing', async () => {
    fal.respondWith({ submit: falError(502, 'Bad gateway') }, { times: Infinity });
    const res = await submit({ model: 'flux-fill-pro' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('succeeded');
    expect(job.provider).toBe('replicate');
    expect(job.attempts).toBe(3);
    expect(replicate.predictions).toHaveLength(1);
  });
});

describe('the synchronous answer in base64', () => {
  const syncEdit = async () => {
    const res = await fetch(`${svc.url}/v1/images/edits`, { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}` }, body: editForm({ prompt: 'a red balloon', model: 'openai/gpt-image-1' }, [['image', png, 'in.png'], ['mask', mask, 'mask.png']]) });
    return { status: res.status, type: res.headers.get('content-type'), length: Number(res.headers.get('content-length')), jobId: res.headers.get('x-job-id')!, text: await res.text() };
  };
  const stored = async (jobId: string) => ((await get(`${svc.url}/v1/jobs/${jobId}`, svc.apiKey)).body.result.data[0].b64_json as string);

  it("relays the provider's own base64 text, in a body JSON clients parse, the same image as the job keeps", async () => {
    let sent = '';
    const revised = 'a "red" balloon \\ \u2603 b64-00000000-0000-0000-0000-000000000000:0';
    openai.respondWith(async (ctx) => {
      const body = await ctx.defaultBody({ responseFormat: 'b64_json' });
      sent = (body.data as { b64_json: string }[])[0]!.b64_json;
      return { body: { ...body, data: [{ b64_json: sent, revised_prompt: revised }] } };
    });
    const res = await syncEdit();
    expect(res.status).toBe(200);
    expect(res.type).toBe('application/json; charset=utf-8');
    expect(res.length).toBe(Buffer.byteLength(res.text));
    const body = JSON.parse(res.text);
    expect(body.data).toEqual([{ b64_json: sent, revised_prompt: revised }]);
    expect(body).toMatchObject({ output_format: 'png', size: '1024x1024' });
    expect(await stored(res.jobId)).toBe(sent);
  });

  it('answers canonical base64 when the provider wrapped its lines', async () => {
    let sent = '';
    openai.respondWith(async (ctx) => {
      const body = await ctx.defaultBody({ responseFormat: 'b64_json' });
      sent = (body.data as { b64_json: string }[])[0]!.b64_json;
      return { body: { ...body, data: [{ b64_json: sent.replace(/.{76}/g, '$&\r\n') }] } };
    });
    const res = await syncEdit();
    expect(res.status).toBe(200);
    const answered = JSON.parse(res.text).data[0].b64_json as string;
    expect(answered).toBe(sent);
    expect(await stored(res.jobId)).toBe(sent);
  });
});

describe('validation from the registry', () => {
  it('refuses a parameter the model cannot honour before anything is stored', async () => {
    const before = await svc.db.job.count();
    for (const [fields, param] of [
      [{ model: 'stable-image-inpaint', quality: 'high' }, 'quality'],
      [{ model: 'flux-fill-pro', output_format: 'webp' }, 'output_format'],
      [{ model: 'stable-image-inpaint', input_fidelity: 'high' }, 'input_fidelity'],
      [{ model: 'dall-e-2', background: 'transparent' }, 'background'],
    ] as const) {
      const res = await submit(fields);
      expect({ fields, status: res.status, param: res.body.error?.param }).toEqual({ fields, status: 400, param });
      expect(res.body.error.message).toContain(fields.model);
    }
    expect(await svc.db.job.count()).toBe(before);
  });

  it('prices every finished job, auto and unset included', async () => {
    const res = await submit({ model: 'azure-openai/gpt-image-1' });
    const job = await pollJob(svc.url, svc.apiKey, res.body.id);
    expect(job.status).toBe('succeeded');
    const usage = await usageRow(job.id);
    expect(usage?.costUsd.toNumber()).toBeGreaterThan(0);
    expect(job.usage.cost_usd).toBe(usage?.costUsd.toNumber());
  });

  it('lists each model with its providers, limits and prices', async () => {
    const res = await get(`${svc.url}/v1/models`, svc.apiKey);
    const byId = Object.fromEntries(res.body.data.map((m: { id: string }) => [m.id, m]));
    expect(byId['gpt-image-1'].providers).toEqual(['openai', 'azure-openai']);
    expect(byId['dall-e-2'].capabilities.max_image_bytes).toBe(4 * 1024 * 1024);
    expect(byId['gpt-image-1'].capabilities.max_image_bytes).toBe(50 * 1024 * 1024);
    expect(byId['flux-fill-pro'].providers).toEqual(['fal', 'replicate']);
    expect(byId['flux-fill-pro'].pricing).toEqual({ perMegapixel: 0.05 });
    expect(byId['stable-image-inpaint'].pricing).toEqual({ perImage: 0.03 });
  });
});
