import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import express from 'express';
import { createMemoryBudget } from './upload-storage';
import { multipartUpload, uploadedFiles } from './uploads';

/** What the route saw of each request's files, and whether a temporary file existed at that moment. */
interface Seen {
  files: { field: string; size: number; inMemory: boolean; onDisk: boolean }[];
  budgetInUse: number;
}

const KB = 1024;
const dir = mkdtempSync(path.join(os.tmpdir(), 'upload-storage-test-'));
// room for one 100 KB request in memory; requests over 200 KB always go to disk
const budget = createMemoryBudget(150 * KB);
let base = '';
let server: ReturnType<express.Express['listen']>;
/** the route waits for this before answering, so tests can hold requests open */
let gate: Promise<void> = Promise.resolve();

beforeAll(async () => {
  const app = express();
  app.post('/upload', multipartUpload(dir, { budget, maxInMemoryRequestBytes: 200 * KB }), async (req, res) => {
    const files = uploadedFiles(req);
    const onDisk = new Set(readdirSync(dir).map((f) => path.join(dir, f)));
    const seen: Seen = {
      files: files.map((f) => ({ field: f.field, size: f.size, inMemory: f.buffer !== undefined, onDisk: f.path !== undefined && onDisk.has(f.path) })),
      budgetInUse: budget.inUse(),
    };
    await gate;
    res.json(seen);
  });
  server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

function form(bytes: number): FormData {
  const f = new FormData();
  f.append('prompt', 'x');
  f.append('image', new Blob([new Uint8Array(bytes)], { type: 'image/png' }), 'a.png');
  return f;
}

async function upload(body: FormData | ReadableStream<Uint8Array>, headers: Record<string, string> = {}): Promise<Seen> {
  const res = await fetch(`${base}/upload`, { method: 'POST', body, headers, ...(body instanceof ReadableStream ? { duplex: 'half' } : {}) } as RequestInit);
  expect(res.status).toBe(200);
  return (await res.json()) as Seen;
}

/** Waits until the files of finished requests are gone: they are deleted when the response closes. */
async function settled(): Promise<void> {
  for (let i = 0; i < 100 && (readdirSync(dir).length > 0 || budget.inUse() > 0); i++) await new Promise((r) => setTimeout(r, 10));
}

describe('upload storage: small requests in memory, large ones on disk, memory bounded', () => {
  it('keeps a small upload in memory: no temporary file, its bytes reserved while the request runs', async () => {
    const seen = await upload(form(100 * KB));
    expect(seen.files).toEqual([{ field: 'image', size: 100 * KB, inMemory: true, onDisk: false }]);
    expect(seen.budgetInUse).toBeGreaterThan(100 * KB);
    await settled();
    expect(budget.inUse()).toBe(0);
  });

  it('spools a large upload to disk and deletes the file when the response ends', async () => {
    const seen = await upload(form(300 * KB));
    expect(seen.files).toEqual([{ field: 'image', size: 300 * KB, inMemory: false, onDisk: true }]);
    expect(seen.budgetInUse).toBe(0);
    await settled();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('sends a request to disk when the budget is taken by others', async () => {
    let open: () => void = () => undefined;
    gate = new Promise((r) => {
      open = r;
    });
    const first = upload(form(100 * KB));
    for (let i = 0; i < 100 && budget.inUse() === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const second = upload(form(100 * KB));
    // the second request is parsed (to disk) while the first still holds the budget
    for (let i = 0; i < 100 && readdirSync(dir).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    open();
    gate = Promise.resolve();
    const [a, b] = await Promise.all([first, second]);
    expect(a.files[0]).toMatchObject({ inMemory: true, onDisk: false });
    expect(b.files[0]).toMatchObject({ inMemory: false, onDisk: true });
    await settled();
    expect(budget.inUse()).toBe(0);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('spools a request without Content-Length (chunked) to disk', async () => {
    const f = form(10 * KB);
    const encoded = new Response(f);
    const seen = await upload(encoded.body!, { 'content-type': encoded.headers.get('content-type')! });
    expect(seen.files[0]).toMatchObject({ size: 10 * KB, inMemory: false, onDisk: true });
    await settled();
    expect(readdirSync(dir)).toEqual([]);
  });
});
