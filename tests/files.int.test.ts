import { createHash } from 'node:crypto';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { makePng, startTestService, type TestService } from '@image-edits/testing';
import { fileKey, ObjectNotFoundError } from '@image-edits/storage';
import OpenAI, { toFile } from 'openai';
import { get } from './helpers';

/** OpenAI's Files API on real Postgres and S3: upload, list, read, download, delete, expiry, streaming. */
let svc: TestService;
beforeAll(async () => {
  // a fast housekeeping sweep, so expiry is observable
  svc = await startTestService({ RECONCILE_INTERVAL_MS: '200' });
});
afterAll(async () => {
  await svc?.stop();
});

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field by the assertions
type Json = any;

const files = () => `${svc.url}/v1/files`;
const jsonl = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/images/edits', body: { prompt: 'x' } })).join('\n') + '\n');

function fileForm(fields: Record<string, string>, file?: [Buffer, string, string?]): FormData {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  if (file) form.append('file', new Blob([new Uint8Array(file[0])], { type: file[2] ?? 'application/octet-stream' }), file[1]);
  return form;
}

async function upload(form: FormData, key = svc.apiKey, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Json }> {
  const res = await fetch(files(), { method: 'POST', headers: { authorization: `Bearer ${key}`, ...headers }, body: form });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

async function s3Keys(prefix = 'files/'): Promise<string[]> {
  const res = await fetch(`${svc.testEnv.s3.endpoint}/test-bucket?list-type=2&prefix=${encodeURIComponent(prefix)}`);
  return [...(await res.text()).matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]!);
}

async function objectExists(id: string): Promise<boolean> {
  try {
    const { body } = await svc.api.deps.store.getStream(fileKey(id));
    body.destroy();
    return true;
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return false;
    throw err;
  }
}

async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('POST /v1/files', () => {
  it('stores a JSONL batch file and answers with the file object (batch files expire after 30 days)', async () => {
    const data = jsonl(3);
    const res = await upload(fileForm({ purpose: 'batch' }, [data, 'input.jsonl', 'application/jsonl']));
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      id: expect.stringMatching(/^file-[0-9a-z]+$/),
      object: 'file',
      bytes: data.length,
      created_at: expect.any(Number),
      expires_at: expect.any(Number),
      filename: 'input.jsonl',
      purpose: 'batch',
      status: 'processed',
    });
    expect(res.body.expires_at - res.body.created_at).toBe(30 * 24 * 3600);
    const content = await fetch(`${files()}/${res.body.id}/content`, { headers: { authorization: `Bearer ${svc.apiKey}` } });
    expect(content.status).toBe(200);
    expect(content.headers.get('content-type')).toBe('application/jsonl');
    expect(Buffer.from(await content.arrayBuffer()).equals(data)).toBe(true);
  });

  it('checks an image (purpose vision) with sharp and serves it with its real content type', async () => {
    const png = await makePng(64, 48);
    const res = await upload(fileForm({ purpose: 'vision' }, [png, 'photo.bin', 'application/octet-stream']));
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ purpose: 'vision', bytes: png.length, filename: 'photo.bin', expires_at: null });
    const row = await svc.db.file.findUniqueOrThrow({ where: { id: res.body.id } });
    expect(row.image).toEqual({ format: 'png', width: 64, height: 48, hasAlpha: true });
    const content = await fetch(`${files()}/${res.body.id}/content`, { headers: { authorization: `Bearer ${svc.apiKey}` } });
    expect(content.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await content.arrayBuffer()).equals(png)).toBe(true);
  });

  it('takes expires_after as OpenAI does', async () => {
    const res = await upload(fileForm({ purpose: 'user_data', 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '3600' }, [await makePng(8, 8), 'a.png', 'image/png']));
    expect(res.status).toBe(200);
    expect(res.body.expires_at - res.body.created_at).toBe(3600);
  });

  const cases: [string, () => Promise<FormData>, number, string][] = [
    ['no purpose', async () => fileForm({}, [jsonl(1), 'a.jsonl']), 400, 'purpose'],
    ['an unknown purpose', async () => fileForm({ purpose: 'fine-tune' }, [jsonl(1), 'a.jsonl']), 400, 'purpose'],
    ['no file', async () => fileForm({ purpose: 'batch' }), 400, 'file'],
    ['a file under another field', async () => {
      const form = fileForm({ purpose: 'batch' });
      form.append('document', new Blob([new Uint8Array(jsonl(1))]), 'a.jsonl');
      return form;
    }, 400, 'document'],
    ['an image purpose with bytes that are not an image', async () => fileForm({ purpose: 'vision' }, [Buffer.from('not an image'), 'a.png', 'image/png']), 400, 'file'],
    ['an image purpose with a GIF', async () => fileForm({ purpose: 'vision' }, [Buffer.from('R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64'), 'a.gif', 'image/gif']), 400, 'file'],
    ['expires_after below an hour', async () => fileForm({ purpose: 'batch', 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '60' }, [jsonl(1), 'a.jsonl']), 400, 'expires_after.seconds'],
    ['expires_after with another anchor', async () => fileForm({ purpose: 'batch', 'expires_after[anchor]': 'last_active_at', 'expires_after[seconds]': '3600' }, [jsonl(1), 'a.jsonl']), 400, 'expires_after.anchor'],
  ];
  it.each(cases)('refuses %s with an error naming the parameter, and keeps nothing', async (_name, build, status, param) => {
    const rowsBefore = await svc.db.file.count();
    const keysBefore = await s3Keys();
    const res = await upload(await build());
    expect({ status: res.status, param: res.body.error?.param }).toEqual({ status, param });
    expect(res.body.error).toEqual({ message: expect.any(String), type: 'invalid_request_error', param, code: expect.any(String) });
    expect(await svc.db.file.count()).toBe(rowsBefore);
    expect(await s3Keys()).toEqual(keysBefore);
  });

  it('415 for a body that is not multipart', async () => {
    const res = await fetch(files(), { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(415);
  });

  it('413 past MAX_FILE_BYTES, leaving nothing in S3', async () => {
    const small = await startTestService({ MAX_FILE_BYTES: String(64 * 1024) }, { worker: false });
    try {
      const res = await fetch(`${small.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${small.apiKey}` }, body: fileForm({ purpose: 'batch' }, [Buffer.alloc(200 * 1024, 'x'), 'big.jsonl']) });
      expect(res.status).toBe(413);
      expect((await res.json()).error).toMatchObject({ param: 'file', code: 'file_too_large' });
      expect(await small.db.file.count()).toBe(0);
      const listing = await (await fetch(`${small.testEnv.s3.endpoint}/test-bucket?list-type=2`)).text();
      expect(listing).not.toContain('<Key>');
    } finally {
      await small.stop();
    }
  });

  it('Idempotency-Key: the same upload replays the first file object; other content is a 422; no object is left over', async () => {
    const form = () => fileForm({ purpose: 'batch' }, [jsonl(2), 'idem.jsonl']);
    const first = await upload(form(), svc.apiKey, { 'idempotency-key': 'upload-1' });
    const again = await upload(form(), svc.apiKey, { 'idempotency-key': 'upload-1' });
    expect(first.status).toBe(200);
    expect(again.status).toBe(200);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body).toEqual(first.body);
    const other = await upload(fileForm({ purpose: 'batch' }, [jsonl(3), 'idem.jsonl']), svc.apiKey, { 'idempotency-key': 'upload-1' });
    expect(other.status).toBe(422);
    expect(await svc.db.file.count({ where: { filename: 'idem.jsonl' } })).toBe(1);
    await new Promise((r) => setTimeout(r, 200)); // the replays' objects are deleted as their responses close
    const rows = await svc.db.file.findMany({ select: { id: true } });
    expect((await s3Keys()).sort()).toEqual(rows.map((r) => fileKey(r.id)).sort());
  });
});

describe('reading, listing and deleting files', () => {
  it("lists a key's files with a cursor, newest first or oldest first, filtered by purpose", async () => {
    const key = await svc.newKey('lister');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await upload(fileForm({ purpose: 'batch' }, [jsonl(1), `l${i}.jsonl`]), key)).body.id);
    ids.push((await upload(fileForm({ purpose: 'vision' }, [await makePng(8, 8), 'v.png', 'image/png']), key)).body.id);

    const all = await get(`${files()}`, key);
    expect(all.body).toMatchObject({ object: 'list', has_more: false, first_id: ids[3], last_id: ids[0] });
    expect(all.body.data.map((f: Json) => f.id)).toEqual([...ids].reverse());

    const page1 = await get(`${files()}?limit=2&order=asc`, key);
    expect(page1.body.data.map((f: Json) => f.id)).toEqual(ids.slice(0, 2));
    expect(page1.body.has_more).toBe(true);
    const page2 = await get(`${files()}?limit=2&order=asc&after=${page1.body.last_id}`, key);
    expect(page2.body.data.map((f: Json) => f.id)).toEqual(ids.slice(2));
    expect(page2.body.has_more).toBe(false);

    const batch = await get(`${files()}?purpose=batch&limit=1`, key);
    expect(batch.body.data.map((f: Json) => f.id)).toEqual([ids[2]]);
    expect(batch.body.has_more).toBe(true);

    for (const [q, param] of [['limit=0', 'limit'], ['order=up', 'order'], ['after=job_1', 'after']]) {
      const bad = await get(`${files()}?${q}`, key);
      expect({ status: bad.status, param: bad.body.error.param }).toEqual({ status: 400, param });
    }
  });

  it("another key's file is not found, for every route", async () => {
    const mine = (await upload(fileForm({ purpose: 'batch' }, [jsonl(1), 'mine.jsonl']))).body;
    const other = await svc.newKey();
    for (const path of [`/${mine.id}`, `/${mine.id}/content`]) {
      const res = await get(`${files()}${path}`, other);
      expect({ path, status: res.status, code: res.body.error.code }).toEqual({ path, status: 404, code: 'file_not_found' });
    }
    const del = await fetch(`${files()}/${mine.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${other}` } });
    expect(del.status).toBe(404);
    expect((await get(`${files()}`, other)).body.data).toEqual([]);
    expect((await get(`${files()}/${mine.id}`, svc.apiKey)).status).toBe(200);
    expect(await objectExists(mine.id)).toBe(true);
  });

  it('DELETE removes the row and the S3 object', async () => {
    const f = (await upload(fileForm({ purpose: 'batch' }, [jsonl(1), 'gone.jsonl']))).body;
    const res = await fetch(`${files()}/${f.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${svc.apiKey}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ id: f.id, object: 'file', deleted: true });
    expect((await get(`${files()}/${f.id}`, svc.apiKey)).status).toBe(404);
    expect(await objectExists(f.id)).toBe(false);
    const again = await fetch(`${files()}/${f.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${svc.apiKey}` } });
    expect(again.status).toBe(404);
  });

  it('an expired file answers 404 at once and the housekeeping sweep deletes it', async () => {
    const f = (await upload(fileForm({ purpose: 'batch', 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '3600' }, [jsonl(1), 'old.jsonl']))).body;
    // an hour passes
    await svc.db.file.update({ where: { id: f.id }, data: { expiresAt: new Date(Date.now() - 1000) } });
    expect((await get(`${files()}/${f.id}`, svc.apiKey)).status).toBe(404);
    expect((await get(`${files()}/${f.id}/content`, svc.apiKey)).status).toBe(404);
    expect((await get(`${files()}`, svc.apiKey)).body.data.map((x: Json) => x.id)).not.toContain(f.id);
    await until(async () => (await svc.db.file.count({ where: { id: f.id } })) === 0);
    expect(await objectExists(f.id)).toBe(false);
  });
});

describe('the official openai SDK', () => {
  it('creates, retrieves, lists, downloads and deletes a file', async () => {
    const client = new OpenAI({ apiKey: svc.apiKey, baseURL: `${svc.url}/v1`, maxRetries: 0 });
    const data = jsonl(5);
    const created = await client.files.create({ file: await toFile(data, 'sdk.jsonl'), purpose: 'batch', expires_after: { anchor: 'created_at', seconds: 7200 } });
    expect(created).toMatchObject({ object: 'file', purpose: 'batch', filename: 'sdk.jsonl', bytes: data.length, status: 'processed' });
    expect(created.expires_at! - created.created_at).toBe(7200);
    expect(await client.files.retrieve(created.id)).toEqual(created);
    const listed: string[] = [];
    for await (const f of client.files.list({ purpose: 'batch', limit: 2 })) listed.push(f.id);
    expect(listed).toContain(created.id);
    expect(new Set(listed).size).toBe(listed.length);
    const content = await client.files.content(created.id);
    expect(Buffer.from(await content.arrayBuffer()).equals(data)).toBe(true);
    expect(await client.files.delete(created.id)).toEqual({ id: created.id, object: 'file', deleted: true });
  });
});

describe('streaming: a 200 MB JSONL never sits in memory', () => {
  const SIZE = 200 * 1024 * 1024;

  /**
   * The client runs in its own process (generating the JSONL as it sends it, with node's http), so
   * the RSS measured here is the API's, with the S3 server and the worker that share its process.
   */
  const CLIENT = `
    const http = require('node:http');
    const crypto = require('node:crypto');
    const [url, key, size] = process.argv.slice(1);
    const total = Number(size);
    const boundary = '----jsonl' + Date.now();
    const hash = crypto.createHash('sha256');
    const req = http.request(url, { method: 'POST', headers: { authorization: 'Bearer ' + key, 'content-type': 'multipart/form-data; boundary=' + boundary } });
    req.on('response', async (res) => {
      let text = '';
      for await (const chunk of res) text += chunk;
      process.stdout.write(JSON.stringify({ httpStatus: res.statusCode, body: JSON.parse(text), sha256: hash.digest('hex') }));
    });
    async function send() {
      const write = (b) => (req.write(b) ? undefined : new Promise((r) => req.once('drain', r)));
      await write('--' + boundary + '\\r\\nContent-Disposition: form-data; name="purpose"\\r\\n\\r\\nbatch\\r\\n');
      await write('--' + boundary + '\\r\\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\\r\\nContent-Type: application/jsonl\\r\\n\\r\\n');
      let sent = 0, i = 0;
      while (sent < total) {
        const lines = [];
        for (let k = 0; k < 256; k++) lines.push(JSON.stringify({ custom_id: 'req-' + i++, method: 'POST', url: '/v1/images/edits', body: { prompt: 'p'.repeat(900), n: 1 } }) + '\\n');
        let chunk = Buffer.from(lines.join(''));
        if (sent + chunk.length > total) chunk = chunk.subarray(0, total - sent);
        sent += chunk.length;
        hash.update(chunk);
        await write(chunk);
      }
      req.end('\\r\\n--' + boundary + '--\\r\\n');
    }
    send();
  `;

  function runClient(url: string, key: string, size: number): Promise<Json> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', CLIENT, url, key, String(size)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (c) => {
        out += c;
      });
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`client exited with ${code}`))));
    });
  }

  function sampleRss(): { stop(): number } {
    let peak = process.memoryUsage().rss;
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 20);
    return {
      stop() {
        clearInterval(timer);
        return Math.max(peak, process.memoryUsage().rss);
      },
    };
  }

  it('uploads and downloads 200 MB with the API process (S3 and worker in it too) growing RSS by < 100 MB', async () => {
    // warm-up: the first multipart upload and download load code and grow pools once, whatever the size
    const warm = await runClient(files(), svc.apiKey, 12 * 1024 * 1024);
    expect(warm.httpStatus).toBe(200);
    await (await fetch(`${files()}/${warm.body.id}/content`, { headers: { authorization: `Bearer ${svc.apiKey}` } })).arrayBuffer();

    const before = process.memoryUsage().rss;
    const up = sampleRss();
    const result = await runClient(files(), svc.apiKey, SIZE);
    const uploadPeak = up.stop();
    expect(result.httpStatus).toBe(200);
    const created = result.body;
    expect(created.bytes).toBe(SIZE);
    const digest = result.sha256;

    const down = sampleRss();
    const got = createHash('sha256');
    let bytes = 0;
    const length = await new Promise<string | undefined>((resolve, reject) => {
      http
        .get(`${files()}/${created.id}/content`, { headers: { authorization: `Bearer ${svc.apiKey}` } }, async (res) => {
          for await (const chunk of res) {
            got.update(chunk as Buffer);
            bytes += (chunk as Buffer).length;
          }
          resolve(res.headers['content-length']);
        })
        .on('error', reject);
    });
    const downloadPeak = down.stop();
    expect(length).toBe(String(SIZE));
    expect(bytes).toBe(SIZE);
    expect(got.digest('hex')).toBe(digest);

    const mb = (n: number) => Math.round(n / 1024 / 1024);
    console.log(`200 MB file: RSS before ${mb(before)} MB, peak during upload +${mb(uploadPeak - before)} MB, during download +${mb(downloadPeak - before)} MB`);
    expect(uploadPeak - before).toBeLessThan(100 * 1024 * 1024);
    expect(downloadPeak - before).toBeLessThan(100 * 1024 * 1024);
  }, 180_000);
});
