import type { MultipartBody } from './multipart';

/**
 * A bounded closed-loop load generator over Node's own fetch (undici): `total` POSTs of the same body
 * with at most `concurrency` in flight. Latency is measured from the call to the last byte of the
 * response body. Every request is to 127.0.0.1.
 */
export interface LoadOptions {
  url: string;
  body: MultipartBody;
  headers?: Record<string, string>;
  total: number;
  concurrency: number;
  /** status the endpoint must answer with; anything else is counted as an error */
  expectStatus: number;
  /** per-request timeout */
  timeoutMs?: number;
  /** called for every answered request; times are epoch milliseconds (fractional) */
  onResponse?: (r: { startedAt: number; endedAt: number; status: number; headers: Headers }) => void;
}

export interface LoadResult {
  /** latencies of the requests that got `expectStatus`, in ms */
  latencies: number[];
  ok: number;
  errors: number;
  /** a few distinct error descriptions, for the report */
  errorSamples: string[];
  elapsedMs: number;
  /** ok responses per second over the whole run */
  rate: number;
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const url = new URL(opts.url);
  if (url.hostname !== '127.0.0.1') throw new Error(`bench requests go to 127.0.0.1 only, not ${url.hostname}`);
  const payload = new Uint8Array(opts.body.body.buffer, opts.body.body.byteOffset, opts.body.body.byteLength);
  const headers = { 'content-type': opts.body.contentType, ...opts.headers };
  const latencies: number[] = [];
  const errorSamples = new Set<string>();
  let errors = 0;
  let next = 0;

  const one = async (): Promise<void> => {
    const t0 = performance.now();
    try {
      const res = await fetch(url, { method: 'POST', headers, body: payload, signal: AbortSignal.timeout(opts.timeoutMs ?? 120_000) });
      const text = await res.text();
      const t1 = performance.now();
      const ms = t1 - t0;
      opts.onResponse?.({ startedAt: performance.timeOrigin + t0, endedAt: performance.timeOrigin + t1, status: res.status, headers: res.headers });
      if (res.status === opts.expectStatus) latencies.push(ms);
      else {
        errors++;
        if (errorSamples.size < 3) errorSamples.add(`${res.status}: ${text.slice(0, 200)}`);
      }
    } catch (err) {
      errors++;
      if (errorSamples.size < 3) errorSamples.add(String((err as Error).cause ?? err));
    }
  };

  const start = performance.now();
  const lanes = Array.from({ length: Math.min(opts.concurrency, opts.total) }, async () => {
    while (next < opts.total) {
      next++;
      await one();
    }
  });
  await Promise.all(lanes);
  const elapsedMs = performance.now() - start;
  return { latencies, ok: latencies.length, errors, errorSamples: [...errorSamples], elapsedMs, rate: (latencies.length / elapsedMs) * 1000 };
}

/** Several runs of the same load as one: latencies pooled, rate = all ok responses over all run time. */
export function mergeLoad(runs: LoadResult[]): LoadResult {
  const ok = runs.reduce((n, r) => n + r.ok, 0);
  const elapsedMs = runs.reduce((n, r) => n + r.elapsedMs, 0);
  return {
    latencies: runs.flatMap((r) => r.latencies),
    ok,
    errors: runs.reduce((n, r) => n + r.errors, 0),
    errorSamples: [...new Set(runs.flatMap((r) => r.errorSamples))].slice(0, 3),
    elapsedMs,
    rate: (ok / elapsedMs) * 1000,
  };
}
