import http from 'node:http';
import https from 'node:https';
import { checkEgress, EgressError, type LookupAll, pinnedLookup } from '@image-edits/core';

/** What one HTTP attempt of a delivery came to. */
export interface SendResult {
  /** delivered: 2xx; retry: network error, timeout, 429, 5xx; gone: 410; failed: refused, 3xx, other 4xx */
  outcome: 'delivered' | 'retry' | 'gone' | 'failed';
  /** null when no response came */
  statusCode: number | null;
  latencyMs: number;
  error: string | null;
  retryAfterMs: number | null;
}

export interface SendInput {
  url: string;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
  allowPrivate: boolean;
  /** DNS, injectable for tests */
  lookup?: LookupAll;
}

/** Of a receiver's answer only this much is read (for the error message); the rest is dropped. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/**
 * One POST through the egress guard: the host is resolved and checked (again: it may resolve
 * elsewhere than at submission), and the connection goes to the address that was checked, so a
 * DNS rebinding between check and connect cannot reach a private address. No redirects are
 * followed, the whole attempt has one deadline, and the response body is read only up to a cap.
 */
export async function sendWebhook(input: SendInput): Promise<SendResult> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  let target: Awaited<ReturnType<typeof checkEgress>>;
  try {
    target = await checkEgress(input.url, { allowPrivate: input.allowPrivate, ...(input.lookup ? { lookup: input.lookup } : {}) });
  } catch (err) {
    if (!(err instanceof EgressError)) throw err;
    // a name that does not resolve now may later; a forbidden address or scheme will not change
    const outcome = err.reason === 'unresolvable' ? 'retry' : 'failed';
    return { outcome, statusCode: null, latencyMs: elapsed(), error: `refused by the egress guard: ${err.message}`, retryAfterMs: null };
  }

  const pinned = pinnedLookup(target);
  const transport = target.url.protocol === 'https:' ? https : http;

  return new Promise<SendResult>((resolve) => {
    let settled = false;
    const finish = (r: Omit<SendResult, 'latencyMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...r, latencyMs: elapsed() });
    };
    const req = transport.request(target.url, {
      method: 'POST',
      headers: { ...input.headers, 'content-length': String(Buffer.byteLength(input.body)) },
      lookup: pinned as unknown as http.RequestOptions['lookup'],
      // a fresh connection per attempt: a pooled socket could be connected to an address checked earlier
      agent: false,
    });
    // set once the status line arrived: a body that then stalls does not hide the status
    let answered: (() => void) | null = null;
    const timer = setTimeout(() => {
      if (answered) answered();
      else finish({ outcome: 'retry', statusCode: null, error: `timed out after ${input.timeoutMs} ms`, retryAfterMs: null });
      req.destroy();
    }, input.timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => {
      finish({ outcome: 'retry', statusCode: null, error: `connection failed: ${err.code ?? err.message}`, retryAfterMs: null });
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let size = 0;
      const done = () => {
        finish(classify(status, Buffer.concat(chunks).toString('utf8'), res.headers['retry-after']));
        res.destroy();
      };
      answered = done;
      // a success needs no body
      if (status >= 200 && status < 300) {
        done();
        return;
      }
      res.on('data', (chunk: Buffer) => {
        if (size >= MAX_RESPONSE_BYTES) return;
        chunks.push(chunk.subarray(0, MAX_RESPONSE_BYTES - size));
        size += chunk.length;
        if (size >= MAX_RESPONSE_BYTES) done();
      });
      res.on('end', done);
      res.on('error', done);
    });
    req.end(input.body);
  });
}

function classify(status: number, body: string, retryAfter: string | undefined): Omit<SendResult, 'latencyMs'> {
  if (status >= 200 && status < 300) return { outcome: 'delivered', statusCode: status, error: null, retryAfterMs: null };
  const snippet = body.replace(/\s+/g, ' ').trim().slice(0, 200);
  const error = `HTTP ${status}${status >= 300 && status < 400 ? ' (redirects are not followed)' : ''}${snippet ? `: ${snippet}` : ''}`;
  if (status === 410) return { outcome: 'gone', statusCode: status, error, retryAfterMs: null };
  if (status === 429 || status >= 500) return { outcome: 'retry', statusCode: status, error, retryAfterMs: parseRetryAfter(retryAfter) };
  return { outcome: 'failed', statusCode: status, error, retryAfterMs: null };
}

/** `Retry-After`: seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | null {
  if (!value) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}
