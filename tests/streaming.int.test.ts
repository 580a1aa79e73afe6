import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { startApi } from '@image-edits/api';
import { type FakeOpenAI, makeMask, makePng, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import OpenAI, { toFile } from 'openai';
import { decode, editForm } from './helpers';

/**
 * Streaming as OpenAI does it (`stream: true`, `partial_images`), with the official SDK unchanged,
 * and the job event stream (`GET /v1/jobs/{id}/events`) for polling clients. The edit stays a durable
 * job: the worker relays partial images through Redis to whichever API process holds the stream.
 */
let svc: TestService;
let upstream: FakeOpenAI;
let client: OpenAI;
let image: Buffer;
let mask: Buffer;

beforeAll(async () => {
  upstream = await startFakeOpenAI({ apiKey: 'sk-upstream' });
  svc = await startTestService({ OPENAI_API_KEY: 'sk-upstream', OPENAI_BASE_URL: upstream.url, MODEL_REGISTRY: JSON.stringify({ providers: { openai: { concurrency: 1 } } }) });
  client = new OpenAI({ apiKey: svc.apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });
  image = await makePng(128, 128);
  mask = await makeMask(128, 128, { x: 32, y: 32, width: 64, height: 64 });
});
afterAll(async () => {
  await svc?.stop();
  await upstream?.close();
});
beforeEach(() => upstream.reset());

const png = (data: Buffer, name: string) => toFile(data, name, { type: 'image/png' });

interface Sse {
  id?: string;
  event: string;
  data: Record<string, unknown>;
  at: number;
}

/** Reads a text/event-stream answer event by event (comments skipped), until it ends or `until` says stop. */
async function readEvents(res: Response, until: (e: Sse) => boolean = () => false): Promise<Sse[]> {
  const events: Sse[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return events;
    buffer += decoder.decode(value, { stream: true });
    for (let cut = buffer.indexOf('\n\n'); cut >= 0; cut = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const fields = Object.fromEntries(block.split('\n').filter((l) => !l.startsWith(':') && l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
      if (!fields.event) continue;
      const e: Sse = { event: fields.event, data: JSON.parse(fields.data ?? 'null'), at: Date.now(), ...(fields.id ? { id: fields.id } : {}) };
      events.push(e);
      if (until(e)) {
        await reader.cancel();
        return events;
      }
    }
  }
}

describe('stream: true, as OpenAI streams', () => {
  it('the official SDK gets partial images as the provider sends them, then the completed image with its usage', async () => {
    upstream.respondWith({ streamIntervalMs: 700 });
    const stream = await client.images.edit({ model: 'gpt-image-1', prompt: 'a red hat', image: await png(image, 'in.png'), mask: await png(mask, 'mask.png'), stream: true, partial_images: 2 });
    const events: { type: string; at: number; index?: number; b64?: string; usage?: unknown }[] = [];
    for await (const e of stream) {
      events.push({ type: e.type, at: Date.now(), b64: e.b64_json, ...(e.type === 'image_edit.partial_image' ? { index: e.partial_image_index } : { usage: e.usage }) });
    }
    expect(events.map((e) => e.type)).toEqual(['image_edit.partial_image', 'image_edit.partial_image', 'image_edit.completed']);
    expect(events.slice(0, 2).map((e) => e.index)).toEqual([0, 1]);
    // relayed as they came: the first partial reached the client well before the upstream finished
    expect(events[2]!.at - events[0]!.at).toBeGreaterThan(1000);
    const done = await decode(Buffer.from(events[2]!.b64!, 'base64'));
    expect([done.width, done.height]).toEqual([1024, 1024]);
    expect(events[2]!.usage).toMatchObject({ input_tokens: expect.any(Number), output_tokens: expect.any(Number), total_tokens: expect.any(Number) });
    // the provider was asked to stream them
    expect(upstream.requests[0]!.fields).toMatchObject({ stream: 'true', partial_images: '2' });
    // and the edit is a job like any other
    const jobs = await svc.db.job.findMany({ where: { apiKeyId: svc.apiKeyId }, orderBy: { createdAt: 'desc' }, take: 1 });
    expect(jobs[0]).toMatchObject({ status: 'succeeded' });
  });

  it('the JSON form streams too; without partial images it is the completed event alone', async () => {
    const res = await fetch(`${svc.url}/v1/images/edits`, {
      method: 'POST',
      headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-image-1', prompt: 'a hat', stream: true, images: [{ image_url: `data:image/png;base64,${image.toString('base64')}` }] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('x-job-id')).toMatch(/^job_/);
    const events = await readEvents(res);
    expect(events.map((e) => e.event)).toEqual(['image_edit.completed']);
    expect(events[0]!.data).toMatchObject({ type: 'image_edit.completed', b64_json: expect.any(String), size: '1024x1024', output_format: 'png' });
  });

  it('local-inpaint streams its completed image (it has no partials), with no keys at all', async () => {
    const stream = await client.images.edit({ model: 'local-inpaint', prompt: 'fill', image: await png(image, 'in.png'), mask: await png(mask, 'mask.png'), stream: true, partial_images: 1 });
    const types: string[] = [];
    for await (const e of stream) types.push(e.type);
    expect(types).toEqual(['image_edit.completed']);
  });

  it('an error in the middle of the stream arrives as an error event the SDK throws, with the provider code', async () => {
    upstream.respondWith({ streamError: { message: 'Your request was rejected by the safety system.', code: 'moderation_blocked' } });
    const stream = await client.images.edit({ model: 'gpt-image-1', prompt: 'something', image: await png(image, 'in.png'), stream: true, partial_images: 1 });
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const e of stream) seen.push(e.type);
      })(),
    ).rejects.toMatchObject({ message: expect.stringContaining('safety system'), code: expect.any(String) });
    expect(seen).toEqual(['image_edit.partial_image']);
  });

  it('a model that does not stream at OpenAI refuses stream with a 400 naming it', async () => {
    const err = await client.images
      .edit({ model: 'dall-e-2', prompt: 'x', image: await png(image, 'in.png'), mask: await png(mask, 'mask.png'), stream: true })
      .then(
        () => undefined,
        (e: unknown) => e as InstanceType<typeof OpenAI.APIError>,
      );
    expect(err?.status).toBe(400);
    expect(err?.error).toMatchObject({ param: 'stream', code: 'unsupported_parameter' });
    expect(await svc.db.job.count({ where: { apiKeyId: svc.apiKeyId, model: 'dall-e-2' } })).toBe(0);
  });

  it('a client that leaves mid-stream does not stop the job', async () => {
    upstream.respondWith({ streamIntervalMs: 500 });
    const res = await fetch(`${svc.url}/v1/images/edits`, {
      method: 'POST',
      headers: { authorization: `Bearer ${svc.apiKey}` },
      body: editForm({ model: 'gpt-image-1', prompt: 'leave early', stream: 'true', partial_images: '2' }, [['image', image, 'in.png']]),
    });
    const jobId = res.headers.get('x-job-id')!;
    const first = await readEvents(res, (e) => e.event === 'image_edit.partial_image');
    expect(first).toHaveLength(1);
    const row = async () => svc.db.job.findUniqueOrThrow({ where: { id: jobId } });
    for (let i = 0; i < 100 && (await row()).status !== 'succeeded'; i++) await new Promise((r) => setTimeout(r, 100));
    expect((await row()).status).toBe('succeeded');
  });
});

describe('GET /v1/jobs/{id}/events', () => {
  it('status changes, the place in the queue, partial images and the final job, on any API process; resumable with Last-Event-ID', async () => {
    // one slot upstream: the first job holds it, the second waits in line
    const release = upstream.hold();
    upstream.respondWith({ streamIntervalMs: 400 }, { times: 2 });
    const submit = async (fields: Record<string, string>) =>
      (
        await fetch(`${svc.url}/v1/images/edits`, {
          method: 'POST',
          headers: { authorization: `Bearer ${svc.apiKey}`, prefer: 'respond-async' },
          body: editForm({ model: 'gpt-image-1', prompt: 'a hat', ...fields }, [['image', image, 'in.png']]),
        })
      ).json() as Promise<{ id: string; queue_position?: number | null }>;
    const running = await submit({});
    await upstream.waitForRequests(1);
    const queued = await submit({ stream: 'true', partial_images: '2' });
    // the job object says where it stands
    const read = (await (await fetch(`${svc.url}/v1/jobs/${queued.id}`, { headers: { authorization: `Bearer ${svc.apiKey}` } })).json()) as { status: string; queue_position: number | null };
    expect(read).toMatchObject({ status: 'queued', queue_position: 0 });

    // a second API process (same Redis, Postgres, S3): the events reach it too
    const other = await startApi(svc.config);
    try {
      const res = await fetch(`${other.url}/v1/jobs/${queued.id}/events`, { headers: { authorization: `Bearer ${svc.apiKey}` } });
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      setTimeout(release, 300);
      const firstPart = await readEvents(res, (e) => e.event === 'partial_image');
      expect(firstPart[0]).toMatchObject({ event: 'status', data: { status: 'queued', queue_position: 0 } });
      expect(firstPart.map((e) => e.event)).toContain('partial_image');
      expect(firstPart.some((e) => e.event === 'status' && e.data.status === 'in_progress')).toBe(true);
      const lastSeen = firstPart.at(-1)!;
      expect(lastSeen.id).toBeDefined();

      // reconnect where it left off: only what came after
      const again = await fetch(`${svc.url}/v1/jobs/${queued.id}/events`, { headers: { authorization: `Bearer ${svc.apiKey}`, 'last-event-id': lastSeen.id! } });
      const rest = await readEvents(again);
      const partials = rest.filter((e) => e.event === 'partial_image');
      expect(partials.map((e) => e.data.partial_image_index)).toEqual([1]);
      const final = rest.at(-1)!;
      expect(final.event).toBe('job');
      expect(final.data).toMatchObject({ id: queued.id, status: 'succeeded', queue_position: null });
    } finally {
      await other.close();
    }
    expect((await (await fetch(`${svc.url}/v1/jobs/${running.id}?wait=10`, { headers: { authorization: `Bearer ${svc.apiKey}` } })).json()) as object).toMatchObject({ status: 'succeeded' });

    // a finished job's stream is its status and the job, then it ends
    const done = await readEvents(await fetch(`${svc.url}/v1/jobs/${running.id}/events`, { headers: { authorization: `Bearer ${svc.apiKey}` } }));
    expect(done.map((e) => e.event)).toEqual(['status', 'job']);
    // another key's job is not found
    const stranger = await svc.newKey();
    expect((await fetch(`${svc.url}/v1/jobs/${running.id}/events`, { headers: { authorization: `Bearer ${stranger}` } })).status).toBe(404);
  }, 60_000);
});
