import type { ChildProcess } from 'node:child_process';
import type { ObjectStore } from '@image-edits/storage';
import sharp from 'sharp';

/** Response bodies are arbitrary JSON that the assertions take apart. */
// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field by the assertions
type Json = any;

/** A multipart body as OpenAI clients send it. Files are [fieldName, bytes, filename, contentType]. */
export function editForm(fields: Record<string, string>, files: [string, Buffer, string, string?][]): FormData {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  for (const [field, data, name, type] of files) form.append(field, new Blob([new Uint8Array(data)], { type: type ?? 'image/png' }), name);
  return form;
}

export async function post(url: string, key: string, form: FormData, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Json }> {
  const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${key}`, ...headers }, body: form });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

export async function get(url: string, key: string): Promise<{ status: number; body: Json }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, body: await res.json() };
}

export async function decode(data: Buffer): Promise<{ format: string | undefined; width: number; height: number; raw: Buffer; channels: number }> {
  const meta = await sharp(data).metadata();
  const { data: raw, info } = await sharp(data).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  return { format: meta.format, width: info.width, height: info.height, raw, channels: info.channels };
}

export async function pollJob(base: string, key: string, id: string, timeoutMs = 30_000): Promise<Json> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await get(`${base}/v1/jobs/${id}`, key);
    if (['succeeded', 'failed', 'canceled', 'expired'].includes(body.status)) return body;
    if (Date.now() > end) throw new Error(`job ${id} still ${body.status}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every key under `prefix`, page by page, as a client of the store lists them. */
export async function allKeys(store: Pick<ObjectStore, 'listKeys'>, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await store.listKeys(prefix, after ? { startAfter: after } : {});
    out.push(...page.keys);
    if (!page.truncated || page.keys.length === 0) return out;
    after = page.keys.at(-1);
  }
}

/** Waits until `cond` holds, checking every 50 ms; fails after `timeoutMs`. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves with a child process's exit code once it has exited. */
export const exited = (c: ChildProcess) => new Promise<number | null>((resolve) => (c.exitCode !== null ? resolve(c.exitCode) : c.once('exit', (code) => resolve(code))));
