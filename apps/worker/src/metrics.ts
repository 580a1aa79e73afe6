import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Prometheus metrics of one worker process (a registry per worker, so tests and `npm start` can run
 * several in one process). Counters are bumped where the events happen (deps carry this object);
 * queue depth and open batches are read from Redis and Postgres when scraped, never counted up and
 * down (nothing drifts when a process dies).
 */
export interface WorkerMetrics {
  registry: Registry;
  /** jobs that reached a final state here, by status, provider, model and error code ('' when none) */
  jobsFinished: Counter<'status' | 'provider' | 'model' | 'code'>;
  /** created → first started, per job */
  queueWait: Histogram<'provider' | 'lane'>;
  /** one attempt, markStarted to its end, by what it came to */
  runTime: Histogram<'provider' | 'model' | 'outcome'>;
  /** the provider call alone; outcome 'ok' or the ProviderError code */
  providerCalls: Histogram<'provider' | 'model' | 'outcome'>;
  providerErrors: Counter<'provider' | 'model' | 'code' | 'retryable'>;
  /** 429s that paused a provider's queue, and the waits they asked for */
  rateLimitWaits: Counter<'provider'>;
  rateLimitWaitSeconds: Counter<'provider'>;
  /** an attempt failed and another follows on the same target */
  retries: Counter<'provider' | 'code'>;
  /** a target's attempts were spent and the job moved to the next target */
  fallbacks: Counter<'from' | 'to' | 'code'>;
  /** webhook delivery attempts by outcome: delivered, retrying, failed, gone (410), dropped (nothing left to send) */
  webhookDeliveries: Counter<'outcome'>;
  webhookAttemptSeconds: Histogram<'outcome'>;
  /** batches that reached a final status here */
  batchesFinished: Counter<'status'>;
  /** our own Postgres/Redis/S3 failing: a job set aside to wait (step 'job'), a stored step retried alone, a scrape's read */
  dependencyErrors: Counter<'dependency' | 'step'>;
}

/** What the scrape-time gauges read; either may be left out. */
export interface MetricSources {
  /** providers this worker runs, with their concurrency */
  providers?: { name: string; concurrency: number }[];
  queueDepth?: (provider: string) => Promise<{ waiting: number; delayed: number; prioritized: { direct: number; batch: number }; active: { direct: number; batch: number } }>;
  openBatches?: () => Promise<Record<string, number>>;
  /** the worker's byte budget: image bytes held by running jobs (inputs, their request copy, outputs), jobs waiting for room, the limit */
  inflight?: { bytes(): number; waiting(): number; limit: number };
  /** a scrape-time read failed (logged, counted; the scrape still answers) */
  onError?: (err: unknown, what: string) => void;
  /** classifies a read's failure for image_edits_dependency_errors_total */
  dependencyOf?: (err: unknown) => string;
}

/** A scrape-time read gets this long (a Redis that is down queues commands instead of failing them). */
const READ_TIMEOUT_MS = 2000;

const SECONDS_LONG = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
const SECONDS_CALL = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600];

export function createWorkerMetrics(sources: MetricSources = {}): WorkerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const read = async <T>(what: string, f: () => Promise<T>): Promise<T | undefined> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([f(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${READ_TIMEOUT_MS} ms`)), READ_TIMEOUT_MS)))]);
    } catch (err) {
      metrics.dependencyErrors.inc({ dependency: sources.dependencyOf?.(err) ?? 'unknown', step: `metrics: ${what}` });
      sources.onError?.(err, what);
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  };

  const providers = sources.providers ?? [];
  if (providers.length) {
    const slots = new Gauge({ name: 'image_edits_worker_slots', help: 'Jobs this worker runs at once per provider (its concurrency)', labelNames: ['provider'], registers });
    for (const p of providers) slots.set({ provider: p.name }, p.concurrency);
  }
  const queueDepth = sources.queueDepth;
  if (queueDepth && providers.length) {
    new Gauge({
      name: 'image_edits_queue_jobs',
      help: "Jobs on a provider's edit queue by state (waiting, delayed, prioritized, active) and lane (direct, batch; 'any' for waiting and delayed), read from BullMQ at scrape time",
      labelNames: ['provider', 'lane', 'state'],
      registers,
      async collect() {
        this.reset();
        await Promise.all(
          providers.map(async ({ name: provider }) => {
            const d = await read(`queue depth of ${provider}`, () => queueDepth(provider));
            if (!d) return;
            this.set({ provider, lane: 'any', state: 'waiting' }, d.waiting);
            this.set({ provider, lane: 'any', state: 'delayed' }, d.delayed);
            for (const lane of ['direct', 'batch'] as const) {
              this.set({ provider, lane, state: 'prioritized' }, d.prioritized[lane]);
              this.set({ provider, lane, state: 'active' }, d.active[lane]);
            }
          }),
        );
      },
    });
  }
  const openBatches = sources.openBatches;
  if (openBatches) {
    new Gauge({
      name: 'image_edits_batches_open',
      help: 'Unfinished batches by status, read from Postgres at scrape time',
      labelNames: ['status'],
      registers,
      async collect() {
        this.reset();
        const counts = await read('open batches', openBatches);
        for (const [status, n] of Object.entries(counts ?? {})) this.set({ status }, n);
      },
    });
  }

  const inflight = sources.inflight;
  if (inflight) {
    new Gauge({ name: 'image_edits_inflight_bytes', help: 'Image bytes held in memory by running jobs (inputs, their request copy, outputs), as the byte budget counts them', registers, collect() { this.set(inflight.bytes()); } });
    new Gauge({ name: 'image_edits_inflight_waiting_jobs', help: 'Jobs waiting for room in the byte budget (no attempt spent)', registers, collect() { this.set(inflight.waiting()); } });
    new Gauge({ name: 'image_edits_inflight_bytes_limit', help: 'The byte budget (WORKER_MAX_INFLIGHT_BYTES)', registers }).set(inflight.limit);
  }

  const metrics: WorkerMetrics = {
    registry,
    jobsFinished: new Counter({ name: 'image_edits_jobs_finished_total', help: 'Jobs that reached a final state in a worker, by status, provider, model and error code', labelNames: ['status', 'provider', 'model', 'code'], registers }),
    queueWait: new Histogram({ name: 'image_edits_job_queue_wait_seconds', help: 'From submission to the first start of a job', labelNames: ['provider', 'lane'], buckets: SECONDS_LONG, registers }),
    runTime: new Histogram({ name: 'image_edits_job_run_seconds', help: 'One attempt of a job, from its start to its end, by outcome', labelNames: ['provider', 'model', 'outcome'], buckets: SECONDS_LONG, registers }),
    providerCalls: new Histogram({ name: 'image_edits_provider_call_seconds', help: "Provider calls by outcome ('ok' or the error code)", labelNames: ['provider', 'model', 'outcome'], buckets: SECONDS_CALL, registers }),
    providerErrors: new Counter({ name: 'image_edits_provider_errors_total', help: 'Failed provider calls by error code', labelNames: ['provider', 'model', 'code', 'retryable'], registers }),
    rateLimitWaits: new Counter({ name: 'image_edits_rate_limit_waits_total', help: "A provider's 429 paused its queue", labelNames: ['provider'], registers }),
    rateLimitWaitSeconds: new Counter({ name: 'image_edits_rate_limit_wait_seconds_total', help: "Time provider queues were paused for (Retry-After or backoff)", labelNames: ['provider'], registers }),
    retries: new Counter({ name: 'image_edits_job_retries_total', help: 'Failed attempts that are retried on the same target', labelNames: ['provider', 'code'], registers }),
    fallbacks: new Counter({ name: 'image_edits_job_fallbacks_total', help: "Jobs moved to their route's next target after spending a target's attempts", labelNames: ['from', 'to', 'code'], registers }),
    webhookDeliveries: new Counter({ name: 'image_edits_webhook_deliveries_total', help: 'Webhook delivery attempts by outcome (delivered, retrying, failed, gone, dropped)', labelNames: ['outcome'], registers }),
    webhookAttemptSeconds: new Histogram({ name: 'image_edits_webhook_attempt_seconds', help: 'Webhook delivery attempts, request to answer', labelNames: ['outcome'], buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers }),
    batchesFinished: new Counter({ name: 'image_edits_batches_finished_total', help: 'Batches that reached a final status (completed, failed, cancelled, expired)', labelNames: ['status'], registers }),
    dependencyErrors: new Counter({ name: 'image_edits_dependency_errors_total', help: 'Errors of our own Postgres, Redis or S3 by dependency and the step that met them', labelNames: ['dependency', 'step'], registers }),
  };
  return metrics;
}

/**
 * GET /metrics of a worker on its own port (WORKER_METRICS_PORT); with a token (METRICS_TOKEN) only
 * for `Authorization: Bearer <token>`, as the API's /metrics.
 */
export async function serveMetrics(registry: Registry, opts: { port: number; host: string; token?: string | undefined }): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
      return;
    }
    if (opts.token !== undefined && !sameSecret(req.headers.authorization ?? '', `Bearer ${opts.token}`)) {
      const body = { error: { message: 'GET /metrics needs the METRICS_TOKEN as a bearer token (Authorization: Bearer ...)', type: 'authentication_error', param: null, code: 'invalid_metrics_token' } };
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' }).end(JSON.stringify(body));
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error)?.message ?? String(err)}\n`),
    );
  });
  // a scraper's idle keep-alive connection must not hold a worker's exit
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    url: `http://${host}:${port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Compared as digests, in constant time: neither the token's length nor its prefix leaks through timing. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}
