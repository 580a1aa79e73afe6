/**
 * `npm run bench`: measures the service's performance goals against baselines measured in the same run
 * and writes docs/benchmarks.md. Everything runs on 127.0.0.1: fresh test databases / BullMQ prefixes /
 * s3rver buckets (packages/testing's createTestEnv), the fake OpenAI upstream, and child processes for
 * the API, the worker and the baseline server. All loops are bounded; everything is torn down at the end,
 * on failure and on Ctrl-C. Sections: 1. async submission, 2. sync overhead (c=1) and sync edits per
 * second (c=8), 3. memory under large uploads, 4. batch submission and fan-out (50,000 lines at zero and
 * 2 s upstream latency), 5. draining a 2,000-job backlog with one worker against a bare BullMQ worker
 * (0 and 2 s), and its memory with 16 MB inputs. `BENCH_ONLY=submit|sync|memory|batches|drain|drain0|drain-big` runs one section alone, without writing the report.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, openAsBlob, rmSync, writeFileSync } from 'node:fs';
import { finished } from 'node:stream/promises';
import os from 'node:os';
import path from 'node:path';
import { createApiKey, createDb, getJob } from '@image-edits/db';
import { createObjectStore } from '@image-edits/storage';
import { createTestEnv, deleteRedisPrefix, type FakeOpenAI, makeMask, makePng, startFakeOpenAI, type TestEnv } from '@image-edits/testing';
import { Queue } from 'bullmq';
import sharp from 'sharp';
import { type LoadResult, mergeLoad, runLoad } from './load';
import { machineInfo } from './machine';
import { buildMultipart, type MultipartBody } from './multipart';
import { cpuWindow, type CpuUse, freePort, mergeCpu, type NodeChild, readMemory, REPO, sampleMemory, spawnTs, waitHttpReady } from './procs';
import {
  type BatchMeasurement,
  batchHeapBounded,
  type DrainMeasurement,
  type DrainMemoryMeasurement,
  type BenchResults,
  type MemoryMeasurement,
  type ProcessFootprint,
  renderMarkdown,
  type SubmitMeasurement,
  summaryRows,
  SYNC8_GOAL_RATIO,
  type SyncMeasurement,
  type SyncPhase,
  type UploadMemory,
  verdicts,
} from './report';
import { measureFloor } from './floor';
import { attribute, monotonicUs, profileArgs, readMainThreadProfile } from './profile';
import { fmtMB, fmtMs, summarize } from './stats';

const SUBMIT = { warmup: 30, total: 500, concurrency: 32, rounds: 2 };
const SYNC = { warmup: 15, total: 100 };
/** 2. at c=8, the issue's production shape: direct and service in alternating rounds, as in 1 */
const SYNC8 = { warmup: 16, total: 240, concurrency: 8, rounds: 2 };
/** requests in the separate, profiled passes (their timings are not reported, only where the CPU went) */
const PROFILED = { submit: 250, sync: 50 };
const UPLOADS = { count: 64, warmup: 2, side: 2600 };
/** 4. batches: 50,000 lines at each upstream latency (both sizes fan out in minutes; the children need not finish) */
const BATCH = { lines: 50_000, warmupLines: 600, promptChars: 2000, latenciesMs: [0, 2000] };
const FAKE_KEY = 'sk-bench-fake-upstream';
/** 5. drain: jobs per run, the bare worker's in-flight count (the service's default per-provider concurrency), latencies */
const DRAIN = { jobs: 2000, rounds: 2, concurrency: 64, latenciesMs: [0, 2000], timeoutMs: 15 * 60_000 };
const DRAIN_BIG = { jobs: 96 };
const MB = 1024 * 1024;

// ---- teardown: a stack of cleanups run in reverse, once, whatever happens ----
const cleanups: { name: string; fn: () => Promise<void> }[] = [];
const children = new Set<NodeChild>();
const defer = (name: string, fn: () => Promise<void>) => cleanups.push({ name, fn });
let cleaning: Promise<void> | undefined;
function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await withTimeout(c.fn(), 30_000, c.name);
      } catch (err) {
        console.error(`cleanup ${c.name} failed: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}
process.on('exit', () => {
  for (const c of children) if (!c.exited()) c.proc.kill('SIGKILL');
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    cleanupAll().finally(() => process.exit(130));
  });
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const log = (msg: string) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

// ---- processes ----

/** The child environment: the test env's variables, the fake upstream, production mode, silent logs. */
function serviceEnv(testEnv: TestEnv, fake: FakeOpenAI, port: number): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env, ...testEnv.env };
  for (const k of Object.keys(env)) if (k.startsWith('AZURE_OPENAI')) delete env[k];
  return { ...env, NODE_ENV: 'production', LOG_LEVEL: 'silent', PORT: String(port), OPENAI_API_KEY: FAKE_KEY, OPENAI_BASE_URL: fake.url };
}

function track(child: NodeChild): NodeChild {
  children.add(child);
  defer(`stop ${child.name}`, () => child.stop());
  return child;
}

async function startApiChild(testEnv: TestEnv, fake: FakeOpenAI, nodeArgs: string[] = []): Promise<{ child: NodeChild; url: string }> {
  const port = await freePort();
  const child = track(spawnTs('api', 'apps/api/src/main.ts', serviceEnv(testEnv, fake, port), nodeArgs));
  const url = `http://127.0.0.1:${port}`;
  await waitHttpReady(child, `${url}/readyz`);
  return { child, url };
}

async function startBaselineChild(uploadDir: string): Promise<{ child: NodeChild; url: string }> {
  const port = await freePort();
  const child = track(spawnTs('baseline', 'bench/baseline-server.ts', { ...process.env, NODE_ENV: 'production', PORT: String(port), BASELINE_UPLOAD_DIR: uploadDir }));
  const url = `http://127.0.0.1:${port}`;
  await waitHttpReady(child, `${url}/healthz`);
  return { child, url };
}

/**
 * s3rver in its own process (bench/s3-server.ts), so its CPU shows apart from the load generator's.
 * The test env's own in-process s3rver is left idle.
 */
async function startS3Child(): Promise<{ child: NodeChild; endpoint: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'image-edits-bench-s3-'));
  defer('s3rver dir', async () => rmSync(dir, { recursive: true, force: true }));
  const child = track(spawnTs('s3rver', 'bench/s3-server.ts', { ...process.env, NODE_ENV: 'production', S3_DIR: dir }));
  const endpoint = await withTimeout(
    new Promise<string>((resolve, reject) => {
      child.proc.once('message', (m) => resolve((m as { endpoint: string }).endpoint));
      child.proc.once('exit', () => reject(new Error(`s3rver exited before it was ready:\n${child.output()}`)));
    }),
    60_000,
    's3rver start',
  );
  return { child, endpoint };
}

async function newEnv(name: string): Promise<{ testEnv: TestEnv; apiKey: string; apiKeyId: string; s3: NodeChild }> {
  const s3 = await startS3Child();
  // the service's own defaults where the test harness lowers them for tests
  const testEnv = await createTestEnv({ DATABASE_POOL_SIZE: '10', WORKER_CONCURRENCY: '64', LOG_LEVEL: 'silent', AWS_ENDPOINT_URL_S3: s3.endpoint });
  defer(`test env ${name}`, () => testEnv.cleanup());
  const db = createDb(testEnv.databaseUrl, { poolSize: 1 });
  try {
    const key = await createApiKey(db, `bench-${name}`);
    return { testEnv, apiKey: key.key, apiKeyId: key.id, s3: s3.child };
  } finally {
    await db.$disconnect();
  }
}

function profileDir(): string {
  // BENCH_KEEP_PROFILES=<dir>: the profiles are written there and kept (for reading them in DevTools)
  const keep = process.env.BENCH_KEEP_PROFILES;
  if (keep) return mkdtempSync(path.join(keep, 'prof-'));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'image-edits-bench-prof-'));
  defer('profile dir', async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A profiled pass is for attribution only: if it fails, the report says so and the run goes on. */
async function optional<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    console.warn(`  ! ${what} failed, left out of the report: ${(err as Error).message}`);
    return undefined;
  }
}

function assertClean(what: string, r: LoadResult): void {
  if (r.errors > 0) console.warn(`  ! ${what}: ${r.errors} errors, e.g. ${r.errorSamples.join(' | ')}`);
}

const cpuLine = (c: CpuUse, n: number) =>
  `cpu/req: server ${((c.server / n) * 1000).toFixed(1)} ms${Object.entries(c.extra)
    .map(([k, v]) => `, ${k} ${((v / n) * 1000).toFixed(1)} ms`)
    .join('')}, bench ${((c.bench / n) * 1000).toFixed(1)} ms, others ${((c.others / n) * 1000).toFixed(1)} ms; server busy ${((100 * c.server) / c.wall).toFixed(0)}%`;

/**
 * Where the sync latency goes, from the job row's own timestamps (created = row inserted after the
 * inputs were stored; started = worker took it; completed = outputs stored) and the upstream's arrival
 * times. Same machine, same clock. Undefined when the requests cannot be matched one to one.
 */
async function syncPhases(testEnv: TestEnv, answered: { startedAt: number; endedAt: number; jobId: string | null }[], arrivals: number[]): Promise<SyncPhase[] | undefined> {
  if (answered.length !== arrivals.length || answered.some((a) => !a.jobId)) return undefined;
  const db = createDb(testEnv.databaseUrl, { poolSize: 2 });
  try {
    const cols: number[][] = [[], [], [], [], []];
    for (const [i, a] of answered.entries()) {
      const job = await getJob(db, a.jobId!);
      if (!job?.startedAt || !job.completedAt) return undefined;
      const t = [a.startedAt, job.createdAt.getTime(), job.startedAt.getTime(), arrivals[i]!, job.completedAt.getTime(), a.endedAt];
      for (let k = 0; k < 5; k++) cols[k]!.push(t[k + 1]! - t[k]!);
    }
    const names = [
      'API intake: upload, auth, checks, 2 S3 puts, row insert',
      'enqueue → worker starts the job (BullMQ pick-up, row update)',
      'worker: inputs handed over (Redis), upstream request built, sent, parsed by the fake',
      'upstream answers; output decoded, stored in S3 and handed back in base64 (Redis), row marked done',
      'API notified (pub/sub), row read, base64 taken from Redis, response sent',
    ];
    return names.map((name, k) => ({ name, ...summarize(cols[k]!) }));
  } finally {
    await db.$disconnect();
  }
}

const line = (name: string, r: LoadResult) => {
  const l = summarize(r.latencies);
  return `${name.padEnd(28)} ok ${String(r.ok).padStart(4)}  err ${String(r.errors).padStart(3)}  ${r.rate.toFixed(1).padStart(7)}/s  p50 ${fmtMs(l.p50).padStart(9)}  p99 ${fmtMs(l.p99).padStart(9)}`;
};

// ---- 1. async submission throughput ----
async function benchSubmit(fake: FakeOpenAI, image: Buffer, mask: Buffer, baselineDir: string): Promise<SubmitMeasurement> {
  const body = buildMultipart(
    { prompt: 'a red balloon floating in the hole', model: 'dall-e-2', size: '1024x1024', n: '1' },
    [
      { field: 'image', filename: 'image.png', contentType: 'image/png', data: image },
      { field: 'mask', filename: 'mask.png', contentType: 'image/png', data: mask },
    ],
  );
  const measure = async (child: NodeChild, url: string, headers: Record<string, string>, total: number): Promise<[LoadResult, CpuUse]> => {
    const cpu = cpuWindow(child.pid, { s3rver: s3.pid });
    const r = await runLoad({ url, body, headers, total, concurrency: SUBMIT.concurrency, expectStatus: 202 });
    return [r, cpu()];
  };

  // both servers up at once (the idle one costs nothing), measured in alternating rounds so that a
  // disturbance from outside (other work on this machine) does not land on one side only
  const base = await startBaselineChild(baselineDir);
  const baseUrl = `${base.url}/v1/images/edits`;
  const { testEnv, apiKey, s3 } = await newEnv('submit');
  const api = await startApiChild(testEnv, fake);
  const apiUrl = `${api.url}/v1/images/edits`;
  const apiHeaders = { authorization: `Bearer ${apiKey}`, prefer: 'respond-async' };
  log(`1. async submission: warm-up, ${SUBMIT.warmup} requests each`);
  await runLoad({ url: baseUrl, body, total: SUBMIT.warmup, concurrency: SUBMIT.concurrency, expectStatus: 202 });
  await runLoad({ url: apiUrl, body, headers: apiHeaders, total: SUBMIT.warmup, concurrency: SUBMIT.concurrency, expectStatus: 202 });
  const runs: { baseline: [LoadResult, CpuUse][]; service: [LoadResult, CpuUse][] } = { baseline: [], service: [] };
  const per = Math.ceil(SUBMIT.total / SUBMIT.rounds);
  for (let round = 0; round < SUBMIT.rounds; round++) {
    log(`1. async submission: round ${round + 1}/${SUBMIT.rounds}, ${per} requests at c=${SUBMIT.concurrency} to the baseline (Express + multer disk storage), then to the service (API alone, no worker)`);
    runs.baseline.push(await measure(base.child, baseUrl, {}, per));
    runs.service.push(await measure(api.child, apiUrl, apiHeaders, per));
  }
  await base.child.stop();
  await api.child.stop();
  const baseline = mergeLoad(runs.baseline.map(([r]) => r));
  const baselineCpu = mergeCpu(runs.baseline.map(([, c]) => c));
  const service = mergeLoad(runs.service.map(([r]) => r));
  const serviceCpu = mergeCpu(runs.service.map(([, c]) => c));
  log(`   ${line('baseline', baseline)}  ${cpuLine(baselineCpu, baseline.ok)}`);
  log(`   ${line('service', service)}  ${cpuLine(serviceCpu, service.ok)}`);

  const profile = await optional('profiled submission pass', async () => {
    log(`1. async submission: profiled pass (API under --cpu-prof), ${PROFILED.submit} requests, for attribution only`);
    const dir = profileDir();
    const papi = await startApiChild(testEnv, fake, profileArgs(dir));
    const url = `${papi.url}/v1/images/edits`;
    await runLoad({ url, body, headers: apiHeaders, total: SUBMIT.warmup, concurrency: SUBMIT.concurrency, expectStatus: 202 });
    const from = monotonicUs();
    const r = await runLoad({ url, body, headers: apiHeaders, total: PROFILED.submit, concurrency: SUBMIT.concurrency, expectStatus: 202 });
    const to = monotonicUs();
    await papi.child.stop();
    return { requests: r.ok, api: attribute(readMainThreadProfile(dir, papi.child.pid), from, to, REPO) };
  });
  assertClean('baseline', baseline);
  assertClean('service', service);
  return { imageBytes: image.length, maskBytes: mask.length, bodyBytes: body.body.length, ...SUBMIT, total: per * SUBMIT.rounds, service, baseline, serviceCpu, baselineCpu, profile };
}

// ---- 2. sync overhead over a zero-latency upstream ----
async function benchSync(fake: FakeOpenAI, image: Buffer, mask: Buffer): Promise<SyncMeasurement> {
  const body = buildMultipart(
    { prompt: 'a red balloon floating in the hole', model: 'dall-e-2', size: '1024x1024', n: '1', response_format: 'b64_json' },
    [
      { field: 'image', filename: 'image.png', contentType: 'image/png', data: image },
      { field: 'mask', filename: 'mask.png', contentType: 'image/png', data: mask },
    ],
  );
  const { testEnv, apiKey, apiKeyId, s3 } = await newEnv('sync');
  const api = await startApiChild(testEnv, fake);
  const port = await freePort(); // unused by the worker, but PORT must parse
  const worker = track(spawnTs('worker', 'apps/worker/src/main.ts', serviceEnv(testEnv, fake, port)));

  const seq = async (url: string, headers: Record<string, string>, total: number) =>
    runLoad({ url, body, headers, total, concurrency: 1, expectStatus: 200, timeoutMs: 60_000 });

  // service warm-up first: the first requests also wait for the worker process to come up
  log(`2. sync overhead: warm-up (${SYNC.warmup} each)`);
  const svcUrl = `${api.url}/v1/images/edits`;
  const svcHeaders = { authorization: `Bearer ${apiKey}` };
  const directUrl = `${fake.url}/images/edits`;
  const directHeaders = { authorization: `Bearer ${FAKE_KEY}` };
  const warm = await seq(svcUrl, svcHeaders, SYNC.warmup);
  if (warm.ok === 0) throw new Error(`sync warm-up failed: ${warm.errorSamples.join(' | ')}`);
  await seq(directUrl, directHeaders, SYNC.warmup);
  fake.reset();

  log(`2. sync overhead: (a) fake upstream directly, ${SYNC.total} sequential requests`);
  const direct = await seq(directUrl, directHeaders, SYNC.total);
  log(`   ${line('direct to fake', direct)}`);
  fake.reset();
  log(`2. sync overhead: (b) service, sync, ${SYNC.total} sequential requests`);
  // when each request reached the upstream (one at a time, so the n-th arrival is the n-th request's)
  const arrivals: number[] = [];
  fake.respondWith(
    () => {
      arrivals.push(Date.now());
      return undefined;
    },
    { times: Number.POSITIVE_INFINITY },
  );
  const answered: { startedAt: number; endedAt: number; jobId: string | null }[] = [];
  const cpu = cpuWindow(api.child.pid, { worker: worker.pid, s3rver: s3.pid });
  const service = await runLoad({
    url: svcUrl,
    body,
    headers: svcHeaders,
    total: SYNC.total,
    concurrency: 1,
    expectStatus: 200,
    timeoutMs: 60_000,
    onResponse: (r) => answered.push({ startedAt: r.startedAt, endedAt: r.endedAt, jobId: r.headers.get('x-job-id') }),
  });
  const serviceCpu = cpu();
  log(`   ${line('service (sync)', service)}  ${cpuLine(serviceCpu, service.ok)}`);
  fake.reset();
  const phases = await syncPhases(testEnv, answered, arrivals);
  for (const ph of phases ?? []) log(`   ${fmtMs(ph.p50).padStart(9)} p50  ${ph.name}`);

  // c=8 against the same processes; rounds alternate (direct, service, direct, ...) so that a
  // disturbance from outside does not land on one side only
  const at8 = (url: string, headers: Record<string, string>, total: number) =>
    runLoad({ url, body, headers, total, concurrency: SYNC8.concurrency, expectStatus: 200, timeoutMs: 60_000 });
  log(`2. sync at c=${SYNC8.concurrency}: warm-up (${SYNC8.warmup} each)`);
  await at8(directUrl, directHeaders, SYNC8.warmup);
  await at8(svcUrl, svcHeaders, SYNC8.warmup);
  fake.reset();
  const runs8: { direct: [LoadResult, CpuUse][]; service: [LoadResult, CpuUse][] } = { direct: [], service: [] };
  const per8 = Math.ceil(SYNC8.total / SYNC8.rounds);
  const pids = { worker: worker.pid, s3rver: s3.pid };
  for (let round = 0; round < SYNC8.rounds; round++) {
    log(`2. sync at c=${SYNC8.concurrency}: round ${round + 1}/${SYNC8.rounds}, ${per8} requests to the fake upstream directly, then ${per8} sync requests to the service`);
    // the direct side's CPU too: there the bench process (load client and fake upstream) does all the work
    let cpu8 = cpuWindow(api.child.pid, pids);
    runs8.direct.push([await at8(directUrl, directHeaders, per8), cpu8()]);
    fake.reset();
    cpu8 = cpuWindow(api.child.pid, pids);
    runs8.service.push([await at8(svcUrl, svcHeaders, per8), cpu8()]);
    fake.reset();
  }
  const direct8 = mergeLoad(runs8.direct.map(([r]) => r));
  const direct8Cpu = mergeCpu(runs8.direct.map(([, c]) => c));
  const service8 = mergeLoad(runs8.service.map(([r]) => r));
  const service8Cpu = mergeCpu(runs8.service.map(([, c]) => c));
  const machineBusy = (c: CpuUse) => (100 * (c.server + c.bench + c.others + Object.values(c.extra).reduce((a, b) => a + b, 0))) / (c.wall * os.availableParallelism());
  log(`   ${line(`direct to fake, c=${SYNC8.concurrency}`, direct8)}  cpu/req: bench ${((direct8Cpu.bench / direct8.ok) * 1000).toFixed(1)} ms, bench busy ${((100 * direct8Cpu.bench) / direct8Cpu.wall).toFixed(0)}%; machine busy ${machineBusy(direct8Cpu).toFixed(0)}%`);
  log(`   ${line(`service (sync), c=${SYNC8.concurrency}`, service8)}  ${cpuLine(service8Cpu, service8.ok)}; machine busy ${machineBusy(service8Cpu).toFixed(0)}%`);
  log(`   service / direct at c=${SYNC8.concurrency}: ${(service8.rate / direct8.rate).toFixed(3)}×`);
  await api.child.stop();
  await worker.stop();

  const profile = await optional('profiled sync pass', async () => {
    log(`2. sync overhead: profiled pass (API and worker under --cpu-prof), ${PROFILED.sync} requests, for attribution only`);
    const dir = profileDir();
    const papi = await startApiChild(testEnv, fake, profileArgs(dir));
    const pworker = track(spawnTs('worker', 'apps/worker/src/main.ts', serviceEnv(testEnv, fake, port), profileArgs(dir)));
    const url = `${papi.url}/v1/images/edits`;
    const warmP = await seq(url, svcHeaders, 5);
    if (warmP.ok === 0) throw new Error(warmP.errorSamples.join(' | '));
    const from = monotonicUs();
    const r = await seq(url, svcHeaders, PROFILED.sync);
    const to = monotonicUs();
    await papi.child.stop();
    await pworker.stop();
    return {
      requests: r.ok,
      api: attribute(readMainThreadProfile(dir, papi.child.pid), from, to, REPO),
      worker: attribute(readMainThreadProfile(dir, pworker.pid), from, to, REPO),
    };
  });
  fake.reset();

  log('2. sync overhead: the floor, each infrastructure step of a sync edit timed alone against the same S3, Postgres and Redis');
  const env = testEnv.env;
  const store = createObjectStore({ endpoint: env.AWS_ENDPOINT_URL_S3!, region: 'us-east-1', bucket: env.S3_BUCKET!, accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY!, forcePathStyle: true });
  const db = createDb(testEnv.databaseUrl, { poolSize: 2 });
  const floor = await optional('floor measurement', () =>
    measureFloor({ store, db, apiKeyId, redisUrl: env.REDIS_URL!, prefix: testEnv.prefix, image, mask, output: image }).finally(async () => {
      store.destroy();
      await db.$disconnect();
    }),
  );
  if (floor) log(`   floor: ${fmtMs(floor.reduce((n, f) => n + f.p50, 0))} (sum of the steps' medians)`);

  assertClean('direct', direct);
  assertClean('service', service);
  assertClean(`direct, c=${SYNC8.concurrency}`, direct8);
  assertClean(`service, c=${SYNC8.concurrency}`, service8);
  const d = summarize(direct.latencies);
  const s = summarize(service.latencies);
  log(`   overhead p50 ${fmtMs(s.p50 - d.p50)}, p99 ${fmtMs(s.p99 - d.p99)}`);
  return {
    bodyBytes: body.body.length,
    ...SYNC,
    direct,
    service,
    serviceCpu,
    phases,
    profile,
    floor,
    c8: { ...SYNC8, direct: direct8, service: service8, directCpu: direct8Cpu, serviceCpu: service8Cpu },
  };
}

// ---- 3. memory with 64 concurrent 20+ MB uploads ----
async function uploadMemory(child: NodeChild, url: string, body: MultipartBody, headers: Record<string, string>, extraPids: Record<string, number> = {}): Promise<UploadMemory> {
  const idle = readMemory(child.pid);
  await runLoad({ url, body, headers, total: UPLOADS.warmup, concurrency: 1, expectStatus: 202, timeoutMs: 120_000 });
  const before = readMemory(child.pid);
  const sampler = sampleMemory(child.pid, 50);
  const cpu = cpuWindow(child.pid, extraPids);
  const load = await runLoad({ url, body, headers, total: UPLOADS.count, concurrency: UPLOADS.count, expectStatus: 202, timeoutMs: 180_000 });
  const after = sampler.stop();
  return { idle, before, after, load, cpu: cpu() };
}

async function benchMemory(fake: FakeOpenAI, baselineDir: string): Promise<MemoryMeasurement> {
  const side = UPLOADS.side;
  const big = await sharp(randomBytes(side * side * 4), { raw: { width: side, height: side, channels: 4 } }).png({ compressionLevel: 0 }).toBuffer();
  if (big.length < 20 * MB || big.length >= 50 * MB) throw new Error(`large PNG is ${big.length} bytes, wanted 20..50 MB`);
  const body = buildMultipart({ prompt: 'replace the noise with a quiet lake', model: 'gpt-image-1' }, [
    { field: 'image', filename: 'noise.png', contentType: 'image/png', data: big },
  ]);

  log(`3. memory: baseline, ${UPLOADS.count} concurrent uploads of ${fmtMB(big.length)}`);
  const base = await startBaselineChild(baselineDir);
  const baseline = await uploadMemory(base.child, `${base.url}/v1/images/edits`, body, {});
  await base.child.stop();
  log(`   baseline: ${baseline.load.ok}/${UPLOADS.count} ok in ${(baseline.load.elapsedMs / 1000).toFixed(1)} s, RSS before ${fmtMB(baseline.before.rss)}, peak ${fmtMB(baseline.after.hwm)}`);

  log('3. memory: service API (own process, no worker)');
  const { testEnv, apiKey, s3 } = await newEnv('memory');
  const api = await startApiChild(testEnv, fake);
  const service = await uploadMemory(api.child, `${api.url}/v1/images/edits`, body, { authorization: `Bearer ${apiKey}`, prefer: 'respond-async' }, { s3rver: s3.pid });
  await api.child.stop();
  log(`   service: ${service.load.ok}/${UPLOADS.count} ok in ${(service.load.elapsedMs / 1000).toFixed(1)} s, RSS before ${fmtMB(service.before.rss)}, peak ${fmtMB(service.after.hwm)}`);
  assertClean('baseline', baseline.load);
  assertClean('service', service.load);
  return { fileBytes: big.length, bodyBytes: body.body.length, uploads: UPLOADS.count, service, baseline };
}

// ---- 4. batch submission and fan-out ----

/** The live heap a child reports over IPC (bench/heap-probe.cjs): the latest sample, and the peak since `reset`. */
function watchHeap(child: NodeChild): { last(): number; reset(): void; peak(): { heapPeak: number; heapSamples: number } } {
  let last = Number.NaN;
  let peak = 0;
  let samples = 0;
  child.proc.on('message', (m: { heapProbe?: { heapUsed: number } }) => {
    if (!m?.heapProbe) return;
    last = m.heapProbe.heapUsed;
    peak = Math.max(peak, last);
    samples++;
  });
  return {
    last: () => last,
    reset() {
      peak = 0;
      samples = 0;
    },
    peak: () => ({ heapPeak: peak, heapSamples: samples }),
  };
}

const HEAP_PROBE = ['--expose-gc', '--require', path.join(REPO, 'bench/heap-probe.cjs')];

// ---- 5. drain: one worker at its defaults against a bare BullMQ worker doing the same I/O ----

/**
 * DRAIN.jobs edits (1024² PNG + mask) drained by one worker process with the default settings, the
 * fake upstream at `latencyMs`, against the same number drained by a bare BullMQ worker
 * (bench/bare-worker.ts: S3 gets, the upstream POST, an S3 put, an UPDATE at start and at end) with
 * as many in flight as the service's default concurrency. In DRAIN.rounds alternating rounds
 * (service, bare, service, ...) so that a disturbance from outside does not land on one side only;
 * each round's rate is from its first start to its last finish, and the rates pool the rounds.
 */
async function benchDrain(latencyMs: number, image: Buffer, mask: Buffer): Promise<DrainMeasurement> {
  const fake = await startFakeOpenAI({ apiKey: FAKE_KEY });
  defer('drain fake upstream', () => fake.close());
  if (latencyMs) fake.respondWith(() => new Promise((r) => setTimeout(() => r(undefined), latencyMs)), { times: Number.POSITIVE_INFINITY });
  const { testEnv, apiKey, s3 } = await newEnv(`drain-${latencyMs}`);
  const db = createDb(testEnv.databaseUrl, { poolSize: 2 });
  defer('drain db client', () => db.$disconnect());
  const inFlight = DRAIN.concurrency;
  const per = Math.ceil(DRAIN.jobs / DRAIN.rounds);
  const body = buildMultipart({ prompt: 'a red balloon floating in the hole', model: 'dall-e-2', size: '1024x1024', response_format: 'b64_json' }, [
    { field: 'image', filename: 'image.png', contentType: 'image/png', data: image },
    { field: 'mask', filename: 'mask.png', contentType: 'image/png', data: mask },
  ]);
  // the bare worker's inputs: one stored image and mask, read by every job
  const store = createObjectStore({ endpoint: testEnv.env.AWS_ENDPOINT_URL_S3!, region: 'us-east-1', bucket: 'test-bucket', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true });
  defer('drain store', async () => store.destroy());
  await store.ensureBucket();
  await store.put('bare/input/image.png', image, { contentType: 'image/png', contentLength: image.length });
  await store.put('bare/input/mask.png', mask, { contentType: 'image/png', contentLength: mask.length });
  await db.$executeRawUnsafe('CREATE TABLE bare_jobs (id text PRIMARY KEY, round int, status text, started_at timestamptz, completed_at timestamptz)');
  const prefix = `${testEnv.prefix}-bare`;
  defer('bare prefix', () => deleteRedisPrefix(prefix));
  const queue = new Queue('bare-edits', { connection: { url: testEnv.env.REDIS_URL! }, prefix });
  defer('bare queue', () => queue.close());
  // BENCH_DRAIN_PROFILE=<dir>: both workers run under --cpu-prof (for working on it; its timings are then not comparable)
  const profDir = process.env.BENCH_DRAIN_PROFILE;

  const seconds = (sp: { first: Date | null; last: Date | null } | undefined) => (sp?.first && sp.last ? (sp.last.getTime() - sp.first.getTime()) / 1000 : Number.NaN);
  const service = { seconds: 0, failed: 0, peakRss: 0, cpuSeconds: 0 };
  const bareRun = { seconds: 0, peakRss: 0 };
  for (let round = 0; round < DRAIN.rounds; round++) {
    // the service's backlog, through the API (stopped before the drain so it costs the worker nothing)
    const api = await startApiChild(testEnv, fake);
    const from = new Date();
    log(`5. drain at ${latencyMs} ms, round ${round + 1}/${DRAIN.rounds}: submitting ${per} jobs`);
    const filled = await runLoad({ url: `${api.url}/v1/images/edits`, body, headers: { authorization: `Bearer ${apiKey}`, prefer: 'respond-async' }, total: per, concurrency: 32, expectStatus: 202 });
    assertClean('drain backlog', filled);
    await api.child.stop();

    // the service's worker at its defaults
    const worker = track(spawnTs('worker', 'apps/worker/src/main.ts', serviceEnv(testEnv, fake, await freePort()), profDir ? profileArgs(profDir) : []));
    const mem = sampleMemory(worker.pid, 200);
    const cpu = cpuWindow(worker.pid, { s3rver: s3.pid });
    log(`   service worker draining (${per} jobs)`);
    await untilCount(() => db.job.count({ where: { createdAt: { gte: from }, status: { in: ['succeeded', 'failed'] } } }), per, DRAIN.timeoutMs, 'service drain');
    service.cpuSeconds += cpu().server;
    service.peakRss = Math.max(service.peakRss, mem.stop().hwm);
    service.failed += await db.job.count({ where: { createdAt: { gte: from }, status: 'failed' } });
    const [span] = await db.$queryRaw<{ first: Date | null; last: Date | null }[]>`SELECT min(started_at) AS first, max(completed_at) AS last FROM jobs WHERE created_at >= ${from}`;
    service.seconds += seconds(span);
    await worker.stop();

    // the bare worker: the same I/O per job
    await db.$executeRawUnsafe(`INSERT INTO bare_jobs (id, round) SELECT 'bare-${round}-' || g, ${round} FROM generate_series(1, ${per}) g`);
    for (let i = 0; i < per; i += 500) {
      await queue.addBulk(Array.from({ length: Math.min(500, per - i) }, (_, k) => ({ name: 'edit', data: { id: `bare-${round}-${i + k + 1}`, image: 'bare/input/image.png', mask: 'bare/input/mask.png' }, opts: { removeOnComplete: true } })));
    }
    const bare = track(
      spawnTs(
        'bare worker',
        'bench/bare-worker.ts',
        {
          ...process.env,
          NODE_ENV: 'production',
          S3_ENDPOINT: testEnv.env.AWS_ENDPOINT_URL_S3,
          S3_BUCKET: 'test-bucket',
          DATABASE_URL: testEnv.databaseUrl,
          REDIS_URL: testEnv.env.REDIS_URL,
          QUEUE_PREFIX: prefix,
          UPSTREAM_URL: fake.url,
          UPSTREAM_KEY: FAKE_KEY,
          CONCURRENCY: String(inFlight),
        },
        profDir ? profileArgs(profDir) : [],
      ),
    );
    const bareMem = sampleMemory(bare.pid, 200);
    log(`   bare worker draining (${per} jobs, ${inFlight} in flight)`);
    const done = async () => Number((await db.$queryRawUnsafe<{ n: bigint }[]>(`SELECT count(*) AS n FROM bare_jobs WHERE round = ${round} AND status = 'succeeded'`))[0]!.n);
    await untilCount(done, per, DRAIN.timeoutMs, 'bare drain');
    bareRun.peakRss = Math.max(bareRun.peakRss, bareMem.stop().hwm);
    const [bareSpan] = await db.$queryRawUnsafe<{ first: Date | null; last: Date | null }[]>(`SELECT min(started_at) AS first, max(completed_at) AS last FROM bare_jobs WHERE round = ${round}`);
    bareRun.seconds += seconds(bareSpan);
    await bare.stop();
    log(`   round ${round + 1}: service ${(per / seconds(span)).toFixed(1)} jobs/s, bare ${(per / seconds(bareSpan)).toFixed(1)} jobs/s`);
  }

  const total = per * DRAIN.rounds;
  const m: DrainMeasurement = {
    latencyMs,
    jobs: total,
    rounds: DRAIN.rounds,
    inFlight,
    service: { jobsPerSecond: total / service.seconds, failed: service.failed, peakRss: service.peakRss, cpuSeconds: service.cpuSeconds },
    bare: { jobsPerSecond: total / bareRun.seconds, peakRss: bareRun.peakRss },
  };
  log(`   service ${m.service.jobsPerSecond.toFixed(1)} jobs/s, bare ${m.bare.jobsPerSecond.toFixed(1)} jobs/s (${(m.service.jobsPerSecond / m.bare.jobsPerSecond).toFixed(2)}×), worker peak RSS ${fmtMB(m.service.peakRss)}`);
  return m;
}

/**
 * Large inputs at full concurrency: DRAIN_BIG.jobs gpt-image-1 edits, each a ~16 MB PNG, drained by
 * one worker at its defaults (64 in flight per provider, the byte budget deciding how many hold their
 * images at once) with the upstream at 2 s; the worker's peak RSS is what is reported.
 */
async function benchDrainBigInputs(): Promise<DrainMemoryMeasurement> {
  const fake = await startFakeOpenAI({ apiKey: FAKE_KEY });
  defer('big fake upstream', () => fake.close());
  fake.respondWith(() => new Promise((r) => setTimeout(() => r(undefined), 2000)), { times: Number.POSITIVE_INFINITY });
  const { testEnv, apiKey } = await newEnv('drain-big');
  const db = createDb(testEnv.databaseUrl, { poolSize: 2 });
  defer('big db client', () => db.$disconnect());
  // noise does not compress: a 2,048² RGBA PNG of random pixels is about 16 MB
  const side = 2048;
  const big = await sharp(randomBytes(side * side * 4), { raw: { width: side, height: side, channels: 4 } }).png({ compressionLevel: 0 }).toBuffer();
  const api = await startApiChild(testEnv, fake);
  const body = buildMultipart({ prompt: 'a red balloon', model: 'gpt-image-1', size: '1024x1024', response_format: 'b64_json' }, [{ field: 'image', filename: 'big.png', contentType: 'image/png', data: big }]);
  log(`5b. ${DRAIN_BIG.jobs} edits of ${fmtMB(big.length)} inputs: submitting`);
  const filled = await runLoad({ url: `${api.url}/v1/images/edits`, body, headers: { authorization: `Bearer ${apiKey}`, prefer: 'respond-async' }, total: DRAIN_BIG.jobs, concurrency: 8, expectStatus: 202, timeoutMs: 300_000 });
  assertClean('big backlog', filled);
  await api.child.stop();
  const worker = track(spawnTs('worker', 'apps/worker/src/main.ts', serviceEnv(testEnv, fake, await freePort())));
  const mem = sampleMemory(worker.pid, 100);
  const started = performance.now();
  await untilCount(() => db.job.count({ where: { status: { in: ['succeeded', 'failed'] } } }), DRAIN_BIG.jobs, DRAIN.timeoutMs, 'big drain');
  const memory = mem.stop();
  const failed = await db.job.count({ where: { status: 'failed' } });
  const m: DrainMemoryMeasurement = { jobs: DRAIN_BIG.jobs, inputBytes: big.length, peakRss: memory.hwm, failed, seconds: (performance.now() - started) / 1000 };
  log(`   worker peak RSS ${fmtMB(m.peakRss)} (goal < 1 GB), ${failed} failed, ${m.seconds.toFixed(0)} s`);
  return m;
}

async function untilCount(count: () => Promise<number>, target: number, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const n = await count();
    if (n >= target) return;
    if (Date.now() > end) throw new Error(`${what}: ${n} of ${target} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function benchBatch(latencyMs: number, image: Buffer): Promise<BatchMeasurement> {
  const fake = await startFakeOpenAI({ apiKey: FAKE_KEY });
  defer('batch fake upstream', () => fake.close());
  if (latencyMs) fake.respondWith(() => new Promise((r) => setTimeout(() => r(undefined), latencyMs)), { times: Number.POSITIVE_INFINITY });
  const { testEnv, apiKey, s3 } = await newEnv(`batch-${latencyMs}`);
  const api = await startApiChild(testEnv, fake, HEAP_PROBE);
  const worker = track(spawnTs('worker', 'apps/worker/src/main.ts', serviceEnv(testEnv, fake, await freePort()), HEAP_PROBE));
  const apiHeap = watchHeap(api.child);
  const workerHeap = watchHeap(worker);
  const db = createDb(testEnv.databaseUrl, { poolSize: 2 });
  defer('batch db client', () => db.$disconnect());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'image-edits-bench-batch-'));
  defer('batch files', async () => rmSync(dir, { recursive: true, force: true }));
  const auth = { authorization: `Bearer ${apiKey}` };

  const uploadFile = async (blob: Blob, name: string, purpose: string): Promise<{ id: string; bytes: number }> => {
    const form = new FormData();
    form.append('purpose', purpose);
    form.append('file', blob, name);
    const res = await fetch(`${api.url}/v1/files`, { method: 'POST', headers: auth, body: form });
    if (res.status !== 200) throw new Error(`upload of ${name}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as { id: string; bytes: number };
  };
  const call = async (method: string, url: string, body?: unknown): Promise<{ id: string; status: string; request_counts: { completed: number; failed: number }; output_file_id: string | null; error_file_id: string | null }> => {
    const res = await fetch(`${api.url}${url}`, { method, headers: { ...auth, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
    if (res.status !== 200) throw new Error(`${method} ${url}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as Awaited<ReturnType<typeof call>>;
  };
  const createBatch = (inputFileId: string) => call('POST', '/v1/batches', { input_file_id: inputFileId, endpoint: '/v1/images/edits', completion_window: '24h' });
  const untilFannedOut = async (id: string, timeoutMs: number) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const row = await db.batch.findUniqueOrThrow({ where: { id } });
      if (row.fannedOutAt || row.status === 'failed') return row;
      if (Date.now() > end) throw new Error(`batch ${id} still at line ${row.linesDone} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const untilFinal = async (id: string, timeoutMs: number) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const b = await call('GET', `/v1/batches/${id}`);
      if (['completed', 'failed', 'cancelled', 'expired'].includes(b.status)) return b;
      if (Date.now() > end) throw new Error(`batch ${id} still ${b.status} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const writeJsonl = async (name: string, lines: number, imageId: string): Promise<string> => {
    const file = path.join(dir, name);
    const out = createWriteStream(file);
    const prompt = 'a quiet lake at dawn, '.repeat(Math.ceil(BATCH.promptChars / 22)).slice(0, BATCH.promptChars);
    for (let i = 0; i < lines; i++) {
      const body = { model: 'gpt-image-1', prompt, size: '1024x1024', images: [{ file_id: imageId }] };
      if (!out.write(`${JSON.stringify({ custom_id: `req-${i}`, method: 'POST', url: '/v1/images/edits', body })}\n`)) await new Promise<void>((r) => out.once('drain', () => r()));
    }
    out.end();
    await finished(out);
    return file;
  };

  const imageId = (await uploadFile(new Blob([new Uint8Array(image)], { type: 'image/png' }), 'photo.png', 'vision')).id;
  log(`4. batches, upstream latency ${latencyMs} ms: warm-up batch of ${BATCH.warmupLines} lines`);
  const warm = await createBatch((await uploadFile(await openAsBlob(await writeJsonl('warmup.jsonl', BATCH.warmupLines, imageId)), 'warmup.jsonl', 'batch')).id);
  await untilFannedOut(warm.id, 120_000);
  await call('POST', `/v1/batches/${warm.id}/cancel`);
  await untilFinal(warm.id, 120_000);
  const file = await writeJsonl('input.jsonl', BATCH.lines, imageId);
  // let the probes report the idle heap after the warm-up
  await new Promise((r) => setTimeout(r, 2500));

  log(`4. batches, upstream latency ${latencyMs} ms: ${BATCH.lines} lines, upload + fan-out measured`);
  const before = { api: readMemory(api.child.pid), worker: readMemory(worker.pid), apiHeap: apiHeap.last(), workerHeap: workerHeap.last() };
  apiHeap.reset();
  workerHeap.reset();
  const apiMem = sampleMemory(api.child.pid, 100);
  const workerMem = sampleMemory(worker.pid, 100);
  const cpu = cpuWindow(worker.pid, { api: api.child.pid, s3rver: s3.pid });
  const t0 = performance.now();
  const input = await uploadFile(await openAsBlob(file, { type: 'application/jsonl' }), 'input.jsonl', 'batch');
  const uploadMs = performance.now() - t0;
  const created = await createBatch(input.id);
  const row = await untilFannedOut(created.id, 20 * 60_000);
  if (row.status === 'failed') throw new Error(`batch failed: ${JSON.stringify(row.errors)}`);
  const cpuUse = cpu();
  const footprint = (m: ReturnType<ReturnType<typeof sampleMemory>['stop']>, rssBefore: number, heapBefore: number, heap: { heapPeak: number; heapSamples: number }): ProcessFootprint => ({
    heapBefore,
    ...heap,
    rssBefore,
    rssPeak: m.maxSampledRss,
    hwm: m.hwm,
  });
  const apiFoot = footprint(apiMem.stop(), before.api.rss, before.apiHeap, apiHeap.peak());
  const workerFoot = footprint(workerMem.stop(), before.worker.rss, before.workerHeap, workerHeap.peak());
  const [childrenStarted, childrenSucceeded] = await Promise.all([
    db.job.count({ where: { batchId: created.id, startedAt: { not: null } } }),
    db.job.count({ where: { batchId: created.id, status: 'succeeded' } }),
  ]);
  const validateMs = row.inProgressAt!.getTime() - row.createdAt.getTime();
  const fanOutMs = row.fannedOutAt!.getTime() - row.inProgressAt!.getTime();
  const jobsPerSecond = row.total / ((row.fannedOutAt!.getTime() - row.createdAt.getTime()) / 1000);
  log(`   validated in ${(validateMs / 1000).toFixed(1)} s, fanned out in ${(fanOutMs / 1000).toFixed(1)} s: ${jobsPerSecond.toFixed(0)} jobs/s; ${childrenSucceeded} children done meanwhile`);
  log(`   live heap API ${fmtMB(apiFoot.heapBefore)} → peak ${fmtMB(apiFoot.heapPeak)}, worker ${fmtMB(workerFoot.heapBefore)} → peak ${fmtMB(workerFoot.heapPeak)}; RSS peak API ${fmtMB(apiFoot.rssPeak)}, worker ${fmtMB(workerFoot.rssPeak)}`);

  log(`4. batches, upstream latency ${latencyMs} ms: cancel, timed until cancelled`);
  const tc = performance.now();
  await call('POST', `/v1/batches/${created.id}/cancel`);
  const done = await untilFinal(created.id, 20 * 60_000);
  const cancelMs = performance.now() - tc;
  const bytesOf = async (id: string | null) => (id ? Number((await db.file.findUniqueOrThrow({ where: { id } })).bytes) : 0);
  const cancel = { ms: cancelMs, status: done.status, completed: done.request_counts.completed, failed: done.request_counts.failed, outputBytes: await bytesOf(done.output_file_id), errorBytes: await bytesOf(done.error_file_id) };
  log(`   ${done.status} in ${(cancelMs / 1000).toFixed(1)} s: ${cancel.completed} completed, ${cancel.failed} failed`);
  await api.child.stop();
  await worker.stop();
  return {
    latencyMs,
    lines: BATCH.lines,
    fileBytes: input.bytes,
    promptChars: BATCH.promptChars,
    warmupLines: BATCH.warmupLines,
    uploadMs,
    validateMs,
    fanOutMs,
    jobsPerSecond,
    total: row.total,
    childrenStarted,
    childrenSucceeded,
    api: apiFoot,
    worker: workerFoot,
    cpu: cpuUse,
    cancel,
  };
}

function notesFor(r: BenchResults): string[] {
  const v = verdicts(r);
  const notes: string[] = [];
  const perReq = (sec: number, n: number) => `${((sec / n) * 1000).toFixed(1)} ms`;
  const s = r.submit;
  const busy = (c: CpuUse) => `${((100 * c.server) / c.wall).toFixed(0)}%`;
  const allCpu = (c: CpuUse) => c.server + c.bench + c.others + Object.values(c.extra).reduce((a, b) => a + b, 0);
  notes.push(
    `Submission: the service accepted ${s.service.rate.toFixed(1)}/s against the bare upload endpoint's ${s.baseline.rate.toFixed(1)}/s ` +
      `(${(s.service.rate / s.baseline.rate).toFixed(2)}×; goal ≥ 0.5×: ${v.submit ? 'met' : 'missed'}). ` +
      `The API process spent ${perReq(s.serviceCpu.server, s.service.ok)} of CPU per accepted request (busy ${busy(s.serviceCpu)} of its one core), ` +
      `the baseline ${perReq(s.baselineCpu.server, s.baseline.ok)} (busy ${busy(s.baselineCpu)}); the load generator spent ${perReq(s.serviceCpu.bench, s.service.ok)} per service request ` +
      `against ${perReq(s.baselineCpu.bench, s.baseline.ok)} per baseline request, and s3rver, which only the service uses, ${perReq(s.serviceCpu.extra.s3rver ?? 0, s.service.ok)} per service request. ` +
      `Everything on the machine together spent ${perReq(allCpu(s.serviceCpu), s.service.ok)} of CPU per service request against ${perReq(allCpu(s.baselineCpu), s.baseline.ok)} per baseline request: ` +
      `on ${r.machine.cores} cores that alone caps the service near ${((r.machine.cores * s.service.ok) / allCpu(s.serviceCpu)).toFixed(0)}/s ` +
      `(${((r.machine.cores * s.service.ok) / allCpu(s.serviceCpu) / s.baseline.rate).toFixed(2)}× the baseline's rate), of which s3rver's share is ${((100 * (s.serviceCpu.extra.s3rver ?? 0)) / allCpu(s.serviceCpu)).toFixed(0)}%. ` +
      `At ${perReq(s.serviceCpu.server, s.service.ok)} per request one API process cannot go much beyond ${(s.service.ok / s.serviceCpu.server).toFixed(0)}/s even with a core to itself, ` +
      `${(s.service.ok / s.serviceCpu.server / s.baseline.rate).toFixed(2)}× the baseline's measured rate` +
      (s.profile ? `; the profiled pass charges the most to: ${s.profile.api.groups.slice(0, 3).map(([g, ms]) => `${g} ${((100 * ms) / s.profile!.api.busyMs).toFixed(0)}%`).join(', ')}.` : '.'),
  );
  const d = summarize(r.sync.direct.latencies);
  const y = summarize(r.sync.service.latencies);
  const top = r.sync.phases ? [...r.sync.phases].sort((a, b) => b.p50 - a.p50)[0] : undefined;
  const sp = r.sync.profile;
  notes.push(
    `Sync: the service adds ${fmtMs(y.p50 - d.p50)} at p50 and ${fmtMs(y.p99 - d.p99)} at p99 over calling the upstream directly (goal < 25 ms at p50: ${v.sync ? 'met' : 'missed'})` +
      (top ? `; the largest phase is "${top.name}" at ${fmtMs(top.p50)} p50 (${((100 * top.p50) / (y.p50 - d.p50)).toFixed(0)}% of the p50 overhead).` : '.') +
      ` s3rver spent ${((1000 * (r.sync.serviceCpu.extra.s3rver ?? 0)) / r.sync.service.ok).toFixed(1)} ms of CPU per sync edit on the same cores (the two input puts and the output put: a sync job's inputs reach the worker, and its outputs come back, through Redis).` +
      (r.sync.floor
        ? ` The floor of a sync edit here (its S3, Postgres, Redis and queue steps alone, section 2) is ${fmtMs(r.sync.floor.reduce((n, f) => n + f.p50, 0))}, ` +
          `${fmtMs(r.sync.floor.filter((f) => f.step.startsWith('S3')).reduce((n, f) => n + f.p50, 0))} of it S3; the service's own work adds about ${fmtMs(Math.max(0, y.p50 - d.p50 - r.sync.floor.reduce((n, f) => n + f.p50, 0)))} on top.`
        : '') +
      (sp
        ? ` The API and the worker together spend ${((sp.api.busyMs + sp.worker.busyMs) / sp.requests).toFixed(1)} ms of main-thread CPU per sync edit, one after the other on the request's path ` +
          `(Postgres client ${(((sp.api.groups.find(([g]) => g.startsWith('Postgres'))?.[1] ?? 0) + (sp.worker.groups.find(([g]) => g.startsWith('Postgres'))?.[1] ?? 0)) / sp.requests).toFixed(1)} ms, ` +
          `S3 client ${(((sp.api.groups.find(([g]) => g.startsWith('S3'))?.[1] ?? 0) + (sp.worker.groups.find(([g]) => g.startsWith('S3'))?.[1] ?? 0)) / sp.requests).toFixed(1)} ms of it), ` +
          'before any time spent waiting on S3, Postgres, Redis or the queue.'
        : ''),
  );
  const c8 = r.sync.c8;
  const c8Busy = (c: CpuUse) => (100 * (c.server + c.bench + c.others + Object.values(c.extra).reduce((a, b) => a + b, 0))) / (c.wall * r.machine.cores);
  notes.push(
    `Sync at c=${c8.concurrency}: the service answered ${c8.service.rate.toFixed(1)} sync edits/s against ${c8.direct.rate.toFixed(1)}/s from the fake upstream called directly ` +
      `(${(c8.service.rate / c8.direct.rate).toFixed(2)}×; goal ≥ ${SYNC8_GOAL_RATIO}×: ${v.sync8 ? 'met' : 'missed'}). Per edit the API spent ${perReq(c8.serviceCpu.server, c8.service.ok)} of CPU, ` +
      `the worker ${perReq(c8.serviceCpu.extra.worker ?? 0, c8.service.ok)}, s3rver ${perReq(c8.serviceCpu.extra.s3rver ?? 0, c8.service.ok)}, the bench process ${perReq(c8.serviceCpu.bench, c8.service.ok)} ` +
      `and everything else (Postgres, Redis, ...) ${perReq(c8.serviceCpu.others, c8.service.ok)}; the machine was ${c8Busy(c8.serviceCpu).toFixed(0)}% busy over its ${r.machine.cores} cores` +
      (c8Busy(c8.serviceCpu) >= 90 ? ', so at this concurrency the cores, shared by all those processes, set the rate. ' : ', so part of the time is waiting, not CPU. ') +
      `The direct side is the bench process alone (load client and fake upstream together): ${perReq(c8.directCpu.bench, c8.direct.ok)} of CPU per request, ` +
      `${((100 * c8.directCpu.bench) / c8.directCpu.wall).toFixed(0)}% of one core.`,
  );
  const m = r.memory;
  const svc = m.service;
  const growth = Math.max(0, svc.after.maxSampledRss - svc.before.rss);
  notes.push(
    `Memory: the API peaked at ${fmtMB(svc.after.hwm)} (goal < 400 MB: ${v.memory ? 'met' : 'missed'}); the bare endpoint at ${fmtMB(m.baseline.after.hwm)}. ` +
      `The API held ${fmtMB(svc.idle.rss)} right after start-up and ${fmtMB(svc.before.rss)} after the ${UPLOADS.warmup} sequential warm-up uploads; ` +
      `during the ${m.uploads} concurrent uploads its sampled RSS rose by ${fmtMB(growth)}` +
      (svc.after.hwm <= svc.before.hwm ? ', and the peak (VmHWM) had already been reached before them' : '') +
      (growth < m.fileBytes ? ` — less than one ${fmtMB(m.fileBytes)} file for all ${m.uploads} uploads together, so the uploads are streamed (to disk, then to S3), not held in memory.` : '.') +
      ' Most of the footprint is what the process holds once started and warm; both processes load TypeScript through tsx, whose module-loader thread is part of it, as with `npm run start:api`.',
  );
  for (const b of r.batches) {
    const at = b.latencyMs ? `${b.latencyMs / 1000} s` : 'zero';
    notes.push(
      `Batch, upstream at ${at} latency: ${b.lines.toLocaleString('en')} lines (${fmtMB(b.fileBytes)}) were validated in ${(b.validateMs / 1000).toFixed(1)} s and fanned out in ${(b.fanOutMs / 1000).toFixed(1)} s, ` +
        `${b.jobsPerSecond.toFixed(0)} jobs accepted per second, while ${b.childrenSucceeded} children already ran to completion. ` +
        `The live heap grew by ${fmtMB(b.api.heapPeak - b.api.heapBefore)} in the API and ${fmtMB(b.worker.heapPeak - b.worker.heapBefore)} in the worker ` +
        `(goal < 64 MB each: ${batchHeapBounded(b) ? 'met' : 'missed'}): the file is read a line at a time and a chunk of 500 lines is the most held. ` +
        `Cancelling it then took ${(b.cancel.ms / 1000).toFixed(1)} s to \`${b.cancel.status}\`: ${b.cancel.failed.toLocaleString('en')} queued children stopped and taken off their queue, and the output (${fmtMB(b.cancel.outputBytes)}) and error (${fmtMB(b.cancel.errorBytes)}) files written.`,
    );
  }
  notes.push('Bodies are built once and sent as the same bytes by every request, so the client spends no CPU on form encoding.');
  notes.push(
    'Child processes run with NODE_ENV=production and LOG_LEVEL=silent; DATABASE_POOL_SIZE=10 and WORKER_CONCURRENCY=64 (the service defaults, which the test harness lowers). ' +
      'S3 is s3rver (packages/storage, as in development and tests) in its own process (bench/s3-server.ts) on these same cores, so every S3 call also costs CPU here, which a real S3 would not; ' +
        'it serves 400 puts and 200 gets of its own before each section starts, so that its JIT warm-up is not charged to the service.',
  );
  return notes;
}

async function main(): Promise<void> {
  const started = performance.now();
  const machine = machineInfo();
  log(`${machine.cpuModel}, ${machine.cores} cores, ${fmtMB(machine.ramBytes)} RAM, Node ${machine.node}`);

  const fake = await startFakeOpenAI({ apiKey: FAKE_KEY });
  defer('fake upstream', () => fake.close());
  const baselineDir = mkdtempSync(path.join(os.tmpdir(), 'image-edits-bench-baseline-'));
  defer('baseline upload dir', async () => rmSync(baselineDir, { recursive: true, force: true }));

  const hole = { x: 256, y: 256, width: 512, height: 512 };
  const image = await makePng(1024, 1024, { hole });
  const mask = await makeMask(1024, 1024, hole);

  // BENCH_ONLY=submit|sync|memory|batches|drain|drain0|drain-big runs one section and writes no report (for working on it)
  const only = process.env.BENCH_ONLY;
  if (only) {
    if (only === 'submit') await scoped(() => benchSubmit(fake, image, mask, baselineDir));
    else if (only === 'sync') await scoped(() => benchSync(fake, image, mask));
    else if (only === 'memory') await scoped(() => benchMemory(fake, baselineDir));
    else if (only === 'batches') for (const latencyMs of BATCH.latenciesMs) await scoped(() => benchBatch(latencyMs, image));
    else if (only === 'drain-big') await scoped(() => benchDrainBigInputs());
    else if (only === 'drain0') await scoped(() => benchDrain(0, image, mask));
    else if (only === 'drain') {
      for (const latencyMs of DRAIN.latenciesMs) await scoped(() => benchDrain(latencyMs, image, mask));
      await scoped(() => benchDrainBigInputs());
    } else throw new Error(`BENCH_ONLY must be submit, sync, memory, batches, drain, drain0 or drain-big; got '${only}'`);
    return;
  }

  // each measurement gets its own database / queue prefix / bucket, torn down before the next one
  const submit = await scoped(() => benchSubmit(fake, image, mask, baselineDir));
  const sync = await scoped(() => benchSync(fake, image, mask));
  const memory = await scoped(() => benchMemory(fake, baselineDir));
  const batches: BatchMeasurement[] = [];
  for (const latencyMs of BATCH.latenciesMs) batches.push(await scoped(() => benchBatch(latencyMs, image)));
  const drains: DrainMeasurement[] = [];
  for (const latencyMs of DRAIN.latenciesMs) drains.push(await scoped(() => benchDrain(latencyMs, image, mask)));
  const drainBig = await scoped(() => benchDrainBigInputs());

  const results: BenchResults = { machine, durationMs: performance.now() - started, submit, sync, memory, batches, drains, drainBig };
  const md = renderMarkdown(results, notesFor(results));
  const out = path.join(REPO, 'docs', 'benchmarks.md');
  writeFileSync(out, md);

  console.log('\nSummary');
  for (const row of summaryRows(results)) console.log(`  ${row.metric}\n      service ${row.service} | baseline ${row.baseline} | ratio ${row.ratio} | goal ${row.goal} | met: ${row.met}`);
  console.log(`\nwrote ${path.relative(process.cwd(), out)} (${((performance.now() - started) / 1000).toFixed(0)} s)`);
}

/** Runs `fn`, then tears down (in reverse) whatever it registered with `defer`: its children and test env. */
async function scoped<T>(fn: () => Promise<T>): Promise<T> {
  const mark = cleanups.length;
  try {
    return await fn();
  } finally {
    for (const c of cleanups.splice(mark).reverse()) {
      try {
        await withTimeout(c.fn(), 30_000, c.name);
      } catch (err) {
        console.error(`cleanup ${c.name} failed: ${(err as Error).message}`);
      }
    }
  }
}

main()
  .then(() => cleanupAll())
  .then(() => process.exit(0))
  .catch(async (err: unknown) => {
    console.error(err);
    await cleanupAll();
    process.exit(1);
  });
