import type { FloorStep } from './floor';
import type { LoadResult } from './load';
import type { MachineInfo } from './machine';
import type { CpuAttribution } from './profile';
import type { CpuUse, ProcMemory } from './procs';
import { fmtMB, fmtMs, fmtRatio, type LatencySummary, summarize } from './stats';

export interface SubmitMeasurement {
  imageBytes: number;
  maskBytes: number;
  bodyBytes: number;
  concurrency: number;
  warmup: number;
  total: number;
  rounds: number;
  service: LoadResult;
  baseline: LoadResult;
  serviceCpu: CpuUse;
  baselineCpu: CpuUse;
  /** separate profiled pass: where the API's CPU went */
  profile: { requests: number; api: CpuAttribution } | undefined;
}

export interface SyncPhase extends LatencySummary {
  name: string;
}

export interface SyncMeasurement {
  bodyBytes: number;
  warmup: number;
  total: number;
  direct: LoadResult;
  service: LoadResult;
  serviceCpu: CpuUse;
  phases: SyncPhase[] | undefined;
  /** separate profiled pass: where the API's and the worker's CPU went */
  profile: { requests: number; api: CpuAttribution; worker: CpuAttribution } | undefined;
  /** the infrastructure steps of one sync edit, each timed alone (bench/floor.ts) */
  floor: FloorStep[] | undefined;
  /** the same requests at a higher concurrency, against the same processes */
  c8: SyncConcurrentMeasurement;
}

/** Sync throughput with several requests in flight: direct and service in alternating rounds, pooled. */
export interface SyncConcurrentMeasurement {
  warmup: number;
  total: number;
  concurrency: number;
  rounds: number;
  direct: LoadResult;
  service: LoadResult;
  /** during the direct rounds: the API, worker and s3rver idle, the bench process (client and fake) working */
  directCpu: CpuUse;
  serviceCpu: CpuUse;
}

export interface UploadMemory {
  /** right after start-up (ready), before any request */
  idle: ProcMemory;
  /** after start-up and warm-up, before the 64 uploads */
  before: ProcMemory;
  after: ProcMemory & { maxSampledRss: number; samples: number };
  load: LoadResult;
  cpu: CpuUse;
}

export interface MemoryMeasurement {
  fileBytes: number;
  bodyBytes: number;
  uploads: number;
  service: UploadMemory;
  baseline: UploadMemory;
}

/** Live heap (after a forced full GC, bench/heap-probe.cjs) and RSS of one process over a window. */
export interface ProcessFootprint {
  /** live heap when idle, after warm-up, just before the window */
  heapBefore: number;
  /** the largest live heap sampled during the window (once a second) */
  heapPeak: number;
  heapSamples: number;
  rssBefore: number;
  /** largest RSS sampled every 100 ms during the window */
  rssPeak: number;
  /** VmHWM at the end of the window (peak since the process started) */
  hwm: number;
}

export interface BatchMeasurement {
  /** scripted delay of the fake upstream per request */
  latencyMs: number;
  lines: number;
  fileBytes: number;
  promptChars: number;
  warmupLines: number;
  /** POST /v1/files of the JSONL, from disk */
  uploadMs: number;
  /** batch created → in_progress: picked up, input snapshotted, every line's structure checked */
  validateMs: number;
  /** in_progress → every line has its job: checks, inputs, rows, enqueue */
  fanOutMs: number;
  /** jobs accepted per second, created → fanned out */
  jobsPerSecond: number;
  total: number;
  /** children that had started / succeeded by the time the fan-out ended */
  childrenStarted: number;
  childrenSucceeded: number;
  api: ProcessFootprint;
  worker: ProcessFootprint;
  /** CPU over the upload and fan-out window */
  cpu: CpuUse;
  /** the batch cancelled once fanned out: time until `cancelled` (stop of queued children, then both files) */
  cancel: { ms: number; completed: number; failed: number; outputBytes: number; errorBytes: number; status: string };
}

export interface DrainMeasurement {
  latencyMs: number;
  jobs: number;
  /** alternating rounds (service, bare, ...) the jobs were split into */
  rounds: number;
  /** the bare worker's concurrency: the service's default per-provider concurrency */
  inFlight: number;
  service: { jobsPerSecond: number; failed: number; peakRss: number; cpuSeconds: number };
  bare: { jobsPerSecond: number; peakRss: number };
}

export interface DrainMemoryMeasurement {
  jobs: number;
  inputBytes: number;
  peakRss: number;
  failed: number;
  seconds: number;
}

export interface BenchResults {
  machine: MachineInfo;
  durationMs: number;
  submit: SubmitMeasurement;
  sync: SyncMeasurement;
  memory: MemoryMeasurement;
  batches: BatchMeasurement[];
  drains?: DrainMeasurement[];
  drainBig?: DrainMemoryMeasurement;
}

export const DRAIN_GOAL_RATIO = 0.8;
export const DRAIN_RSS_GOAL_BYTES = 1024 * 1024 * 1024;

/** Section 5's rows for the summary and its own markdown. */
export function drainMarkdown(r: BenchResults): string {
  if (!r.drains?.length) return '';
  const rows = r.drains.map((d) => [
    d.latencyMs ? `${d.latencyMs / 1000} s` : '0',
    `${d.service.jobsPerSecond.toFixed(1)}/s`,
    `${d.bare.jobsPerSecond.toFixed(1)}/s`,
    `${(d.service.jobsPerSecond / d.bare.jobsPerSecond).toFixed(2)}×`,
    `≥ ${DRAIN_GOAL_RATIO}×`,
    d.service.jobsPerSecond / d.bare.jobsPerSecond >= DRAIN_GOAL_RATIO && d.service.failed === 0 ? 'yes' : '**no**',
    fmtMB(d.service.peakRss),
    fmtMB(d.bare.peakRss),
  ]);
  const big = r.drainBig;
  return `
## 5. Draining a backlog with one worker

${r.drains[0]!.jobs.toLocaleString('en')} jobs (dall-e-2, a 1024×1024 PNG and mask, \`b64_json\`) drained by
one worker process at its defaults (\`WORKER_CONCURRENCY\` 64 per provider, \`WORKER_MAX_INFLIGHT_BYTES\`
512 MB), against as many drained by a bare BullMQ worker (\`bench/bare-worker.ts\`) doing the same I/O per job (two S3 gets,
the multipart POST to the same fake upstream, an S3 put, a Postgres UPDATE at its start and at its end) with ${r.drains[0]!.inFlight} in flight.
In ${r.drains[0]!.rounds} alternating rounds (a backlog submitted, then drained by the service's worker; a backlog queued, then drained by
the bare worker; again), so that a disturbance from outside does not land on one side only. A round's time runs from its
first job started to its last one finished; the rates divide all jobs by the rounds' times added up.

${table(['upstream latency', 'service', 'bare worker', 'ratio', 'goal', 'met?', 'worker peak RSS', 'bare peak RSS'], rows)}
${
  big
    ? `
Large inputs: ${big.jobs} gpt-image-1 edits of a ${fmtMB(big.inputBytes)} PNG each, the upstream at 2 s, drained by one worker at
its defaults in ${big.seconds.toFixed(0)} s (${big.failed} failed): peak RSS ${fmtMB(big.peakRss)} (goal < 1 GB: ${big.peakRss < DRAIN_RSS_GOAL_BYTES && big.failed === 0 ? 'met' : '**missed**'}).
The byte budget lets as many jobs hold their images at once as fit in it (each counts its inputs five times, for the
copies the S3 read and the SDK's request hold, plus 2 MB per output); the rest wait without spending an attempt.
`
    : ''
}`;
}

export const SUBMIT_GOAL_RATIO = 0.5;
const floorMs = (steps: FloorStep[]) => steps.reduce((n, f) => n + f.p50, 0);
export const SYNC_GOAL_OVERHEAD_MS = 25;
/** sync edits per second at c=8, against the fake upstream called directly at c=8 */
export const SYNC8_GOAL_RATIO = 0.35;
/** the API's CPU per accepted async submission, at most this many times the bare sink's */
export const SUBMIT_CPU_GOAL_RATIO = 2;
/** the sync p50 overhead at c=1, at most this many times the floor (the infrastructure steps alone) */
export const SYNC_FLOOR_GOAL_RATIO = 2;
export const RSS_GOAL_BYTES = 400 * 1024 * 1024;
/** A fan-out holds one chunk at a time: the live heap of the API and the worker may grow by at most this during a 50,000-line batch. */
export const BATCH_HEAP_GROWTH_GOAL_BYTES = 64 * 1024 * 1024;

const heapGrowth = (f: ProcessFootprint) => f.heapPeak - f.heapBefore;
export const batchHeapBounded = (b: BatchMeasurement) => b.api.heapSamples > 0 && b.worker.heapSamples > 0 && heapGrowth(b.api) < BATCH_HEAP_GROWTH_GOAL_BYTES && heapGrowth(b.worker) < BATCH_HEAP_GROWTH_GOAL_BYTES;

interface Row {
  metric: string;
  service: string;
  baseline: string;
  ratio: string;
  goal: string;
  met: string;
}

const yes = (ok: boolean, clean: boolean) => (!clean ? 'no (errors)' : ok ? 'yes' : '**no**');
const clean = (...runs: LoadResult[]) => runs.every((r) => r.errors === 0);

export function verdicts(r: BenchResults): { submit: boolean; sync: boolean; sync8: boolean; memory: boolean } {
  const s = r.submit;
  const sy = r.sync;
  const c8 = sy.c8;
  const m = r.memory;
  return {
    submit: clean(s.service, s.baseline) && s.service.rate / s.baseline.rate >= SUBMIT_GOAL_RATIO,
    sync: clean(sy.service, sy.direct) && summarize(sy.service.latencies).p50 - summarize(sy.direct.latencies).p50 < SYNC_GOAL_OVERHEAD_MS,
    sync8: clean(c8.service, c8.direct) && c8.service.rate / c8.direct.rate >= SYNC8_GOAL_RATIO,
    memory: clean(m.service.load, m.baseline.load) && m.service.after.hwm < RSS_GOAL_BYTES,
  };
}

export function summaryRows(r: BenchResults): Row[] {
  const v = verdicts(r);
  const s = r.submit;
  const sSvc = summarize(s.service.latencies);
  const sBase = summarize(s.baseline.latencies);
  const y = r.sync;
  const yDirect = summarize(y.direct.latencies);
  const ySvc = summarize(y.service.latencies);
  const m = r.memory;
  return [
    {
      metric: `Async submissions accepted per second (c=${s.concurrency}, ${s.total} req)`,
      service: `${s.service.rate.toFixed(1)}/s`,
      baseline: `${s.baseline.rate.toFixed(1)}/s`,
      ratio: fmtRatio(s.service.rate / s.baseline.rate),
      goal: `≥ ${SUBMIT_GOAL_RATIO}× baseline`,
      met: yes(s.service.rate / s.baseline.rate >= SUBMIT_GOAL_RATIO, clean(s.service, s.baseline)),
    },
    {
      metric: 'API CPU per accepted async submission (its process, helper threads included; baseline = the Express + multer sink)',
      service: `${((1000 * s.serviceCpu.server) / s.service.ok).toFixed(2)} ms`,
      baseline: `${((1000 * s.baselineCpu.server) / s.baseline.ok).toFixed(2)} ms`,
      ratio: fmtRatio(s.serviceCpu.server / s.service.ok / (s.baselineCpu.server / s.baseline.ok)),
      goal: `≤ ${SUBMIT_CPU_GOAL_RATIO}× baseline`,
      met: yes(s.serviceCpu.server / s.service.ok <= (SUBMIT_CPU_GOAL_RATIO * s.baselineCpu.server) / s.baseline.ok, clean(s.service, s.baseline)),
    },
    { metric: 'Async submission latency p50', service: fmtMs(sSvc.p50), baseline: fmtMs(sBase.p50), ratio: fmtRatio(sSvc.p50 / sBase.p50), goal: '—', met: '—' },
    { metric: 'Async submission latency p99', service: fmtMs(sSvc.p99), baseline: fmtMs(sBase.p99), ratio: fmtRatio(sSvc.p99 / sBase.p99), goal: '—', met: '—' },
    {
      metric: `Sync edit latency p50 (c=1, ${y.total} req; baseline = fake upstream called directly)`,
      service: fmtMs(ySvc.p50),
      baseline: fmtMs(yDirect.p50),
      ratio: fmtRatio(ySvc.p50 / yDirect.p50),
      goal: `overhead < ${SYNC_GOAL_OVERHEAD_MS} ms`,
      met: '(next row)',
    },
    {
      metric: 'Sync overhead p50 (service p50 − direct p50)',
      service: fmtMs(ySvc.p50 - yDirect.p50),
      baseline: '0 ms',
      ratio: '—',
      goal: `< ${SYNC_GOAL_OVERHEAD_MS} ms`,
      met: yes(v.sync, clean(y.service, y.direct)),
    },
    ...(y.floor
      ? [
          {
            metric: 'Floor under the sync overhead: the infrastructure steps of one sync edit, each timed alone (sum of medians; section 2)',
            service: fmtMs(floorMs(y.floor)),
            baseline: '—',
            ratio: '—',
            goal: '—',
            met: '—',
          },
          {
            metric: 'Sync overhead p50 against that floor (c=1)',
            service: fmtMs(ySvc.p50 - yDirect.p50),
            baseline: fmtMs(floorMs(y.floor)),
            ratio: fmtRatio((ySvc.p50 - yDirect.p50) / floorMs(y.floor)),
            goal: `≤ ${SYNC_FLOOR_GOAL_RATIO}× floor`,
            met: yes(ySvc.p50 - yDirect.p50 <= SYNC_FLOOR_GOAL_RATIO * floorMs(y.floor), clean(y.service, y.direct)),
          },
        ]
      : []),
    { metric: 'Sync edit latency p99', service: fmtMs(ySvc.p99), baseline: fmtMs(yDirect.p99), ratio: fmtRatio(ySvc.p99 / yDirect.p99), goal: '—', met: '—' },
    {
      metric: `Sync edits per second at c=${y.c8.concurrency} (service vs the fake upstream called directly)`,
      service: `${y.c8.service.rate.toFixed(1)}/s`,
      baseline: `${y.c8.direct.rate.toFixed(1)}/s`,
      ratio: fmtRatio(y.c8.service.rate / y.c8.direct.rate),
      goal: `≥ ${SYNC8_GOAL_RATIO}× direct`,
      met: yes(v.sync8, clean(y.c8.service, y.c8.direct)),
    },
    {
      metric: `Peak RSS (VmHWM) of the API process, ${m.uploads} concurrent ${fmtMB(m.fileBytes)} uploads`,
      service: fmtMB(m.service.after.hwm),
      baseline: fmtMB(m.baseline.after.hwm),
      ratio: fmtRatio(m.service.after.hwm / m.baseline.after.hwm),
      goal: '< 400 MB',
      met: yes(m.service.after.hwm < RSS_GOAL_BYTES, clean(m.service.load, m.baseline.load)),
    },
    ...(r.drains ?? []).map((d) => ({
      metric: `Backlog of ${d.jobs.toLocaleString('en')} jobs drained by one worker at its defaults, fake upstream at ${d.latencyMs ? `${d.latencyMs / 1000} s` : 'zero'} latency (baseline = a bare BullMQ worker, same I/O, ${d.inFlight} in flight; section 5)`,
      service: `${d.service.jobsPerSecond.toFixed(1)} jobs/s`,
      baseline: `${d.bare.jobsPerSecond.toFixed(1)} jobs/s`,
      ratio: fmtRatio(d.service.jobsPerSecond / d.bare.jobsPerSecond),
      goal: `≥ ${DRAIN_GOAL_RATIO}× baseline`,
      met: yes(d.service.jobsPerSecond / d.bare.jobsPerSecond >= DRAIN_GOAL_RATIO && d.service.failed === 0, true),
    })),
    ...(r.drainBig
      ? [
          {
            metric: `Worker peak RSS, ${r.drainBig.jobs} edits of ${fmtMB(r.drainBig.inputBytes)} inputs at full concurrency (section 5)`,
            service: fmtMB(r.drainBig.peakRss),
            baseline: '—',
            ratio: '—',
            goal: '< 1 GB',
            met: yes(r.drainBig.peakRss < DRAIN_RSS_GOAL_BYTES && r.drainBig.failed === 0, true),
          },
        ]
      : []),
    ...r.batches.flatMap((b) => {
      const at = `fake upstream at ${b.latencyMs ? `${b.latencyMs / 1000} s` : 'zero'} latency`;
      return [
        {
          metric: `Batch of ${b.lines.toLocaleString('en')} lines (${fmtMB(b.fileBytes)}): validated and fanned out, ${at}`,
          service: `${((b.validateMs + b.fanOutMs) / 1000).toFixed(1)} s, ${b.jobsPerSecond.toFixed(0)} jobs/s`,
          baseline: '—',
          ratio: '—',
          goal: '—',
          met: '—',
        },
        {
          metric: `Live heap growth during it: API / worker (${at})`,
          service: `${fmtMB(heapGrowth(b.api))} / ${fmtMB(heapGrowth(b.worker))}`,
          baseline: '—',
          ratio: '—',
          goal: `< ${fmtMB(BATCH_HEAP_GROWTH_GOAL_BYTES)} each`,
          met: yes(batchHeapBounded(b), true),
        },
        {
          metric: `Peak RSS during it: API / worker (${at})`,
          service: `${fmtMB(b.api.rssPeak)} / ${fmtMB(b.worker.rssPeak)}`,
          baseline: '—',
          ratio: '—',
          goal: '—',
          met: '—',
        },
      ];
    }),
];
}

function table(headers: string[], rows: string[][]): string {
  const esc = (c: string) => c.replaceAll('|', '\\|');
  return [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

function latencyRow(name: string, l: LatencySummary, r: LoadResult): string[] {
  return [name, String(r.ok), String(r.errors), `${(r.elapsedMs / 1000).toFixed(2)} s`, `${r.rate.toFixed(1)}/s`, fmtMs(l.p50), fmtMs(l.p90), fmtMs(l.p99), fmtMs(l.max)];
}

function cpuTable(runs: [string, CpuUse, number][], cores: number): string {
  const per = (sec: number, n: number) => `${((sec / n) * 1000).toFixed(1)} ms`;
  const extraNames = [...new Set(runs.flatMap(([, c]) => Object.keys(c.extra)))];
  return table(
    ['run', 'server process', 'server busy (of 1 core)', ...extraNames.map((n) => `${n} process`), 'bench process (load client, fake upstream)', 'everything else (Postgres, Redis, ...)', `machine busy (of ${cores} cores)`],
    runs.map(([name, c, n]) => {
      const extra = Object.values(c.extra).reduce((a, b) => a + b, 0);
      return [
        name,
        per(c.server, n),
        `${((100 * c.server) / c.wall).toFixed(0)}%`,
        ...extraNames.map((k) => (c.extra[k] === undefined ? '—' : per(c.extra[k]!, n))),
        per(c.bench, n),
        per(c.others, n),
        `${((100 * (c.server + c.bench + c.others + extra)) / (c.wall * cores)).toFixed(0)}%`,
      ];
    }),
  );
}

/** One column per profile: CPU ms per request and share of the process's busy time, per group. */
function attributionTable(cols: [string, CpuAttribution, number][]): string {
  const order: string[] = [];
  for (const [, a] of cols) for (const [g] of a.groups) if (!order.includes(g)) order.push(g);
  const cell = (a: CpuAttribution, n: number, g: string) => {
    const ms = a.groups.find(([k]) => k === g)?.[1] ?? 0;
    return `${(ms / n).toFixed(2)} ms (${((100 * ms) / a.busyMs).toFixed(0)}%)`;
  };
  return table(
    ['code', ...cols.map(([name]) => name)],
    [
      ...order.map((g) => [g, ...cols.map(([, a, n]) => cell(a, n, g))]),
      ['**total busy (main thread)**', ...cols.map(([, a, n]) => `${(a.busyMs / n).toFixed(2)} ms (100%)`)],
    ],
  );
}

const topOwners = (a: CpuAttribution) => a.topOwners.map(([o, ms]) => `\`${o}\` ${((100 * ms) / a.busyMs).toFixed(0)}%`).join(', ');

const LAT_HEADERS = ['run', 'ok', 'errors', 'wall time', 'rate', 'p50', 'p90', 'p99', 'max'];

function errorsNote(runs: [string, LoadResult][]): string {
  const lines = runs.filter(([, r]) => r.errors > 0).map(([n, r]) => `- ${n}: ${r.errors} errors, e.g. ${r.errorSamples.map((e) => `\`${e.replaceAll('`', "'")}\``).join('; ')}`);
  return lines.length ? `\nErrors:\n${lines.join('\n')}\n` : '';
}

export function renderMarkdown(r: BenchResults, notes: string[]): string {
  const mc = r.machine;
  const s = r.submit;
  const y = r.sync;
  const ySvcP50 = summarize(y.service.latencies).p50;
  const yDirectP50 = summarize(y.direct.latencies).p50;
  const m = r.memory;
  const rows = summaryRows(r).map((row) => [row.metric, row.service, row.baseline, row.ratio, row.goal, row.met]);
  const memRow = (name: string, u: UploadMemory) => [
    name,
    `${u.load.ok}/${m.uploads}`,
    `${(u.load.elapsedMs / 1000).toFixed(2)} s`,
    fmtMB(u.idle.rss),
    fmtMB(u.before.rss),
    fmtMB(u.after.maxSampledRss),
    fmtMB(u.after.hwm),
    fmtMB(u.after.rss),
  ];
  return `# Benchmarks

Generated by \`npm run bench\` (\`bench/run.ts\`); do not edit by hand, run it again.

- Date: ${mc.date}
- CPU: ${mc.cpuModel}, ${mc.cores} cores
- RAM: ${(mc.ramBytes / 1024 ** 3).toFixed(1)} GiB
- Node: ${mc.node} (${mc.platform})
- Whole run: ${(r.durationMs / 1000).toFixed(0)} s

Every number below comes from the same run; each service figure is set against a baseline measured
in that run on the same machine, so the ratios carry over between machines better than the absolute
values. The load generator (Node's own \`fetch\`) and the fake OpenAI upstream (in the bench process), the local
S3 (s3rver, its own process), Postgres and Redis all share these cores with the process being measured.

## Summary

${table(['metric', 'service', 'baseline', 'ratio', 'goal', 'met?'], rows)}

## 1. Async submission throughput

\`POST /v1/images/edits\` with \`Prefer: respond-async\` (answer: 202 + job), model \`dall-e-2\`, a
1024×1024 RGBA PNG (${(s.imageBytes / 1024).toFixed(0)} KB, the test fixture \`makePng\`) and a 1024×1024 mask
(${(s.maskBytes / 1024).toFixed(0)} KB, \`makeMask\`): ${(s.bodyBytes / 1024).toFixed(0)} KB per request. ${s.warmup} warm-up requests to each server,
then ${s.total} measured per server, ${s.concurrency} in flight, in ${s.rounds} alternating rounds (baseline, service, baseline, ...)
so that outside disturbances do not land on one side only; the figures pool the rounds.

- Service: the API alone in its own process (\`node --import tsx apps/api/src/main.ts\`, i.e. \`npm run start:api\`
  without the tsx wrapper process), on a fresh database / BullMQ prefix / s3rver bucket, **no worker running**,
  so the jobs stay queued and nothing else competes for the CPU: this measures submission only
  (auth, multipart parsing, header checks with sharp, two S3 puts, job row, enqueue, job object).
- Baseline: \`bench/baseline-server.ts\` in its own process: Express 5 + multer with its plain **disk storage**,
  files deleted when the response ends, answers 202. Nothing else. (The service keeps a request this small in
  memory and spools large ones to disk, \`apps/api/src/upload-storage.ts\`; the baseline keeps multer's usual disk
  setup so that runs stay comparable.)

${table(LAT_HEADERS, [latencyRow('service', summarize(s.service.latencies), s.service), latencyRow('baseline (Express + multer)', summarize(s.baseline.latencies), s.baseline)])}
${errorsNote([['service', s.service], ['baseline', s.baseline]])}
CPU time per accepted request during the measured run (from \`/proc/<pid>/stat\` and \`/proc/stat\`):

${cpuTable([['service', s.serviceCpu, s.service.ok], ['baseline', s.baselineCpu, s.baseline.ok]], mc.cores)}

(CPU includes the process's helper threads, libuv's file-system pool among them, so a process can show more than 100% of one core.)

${
  s.profile
    ? `Where the API's main-thread CPU goes, from a separate pass of ${s.profile.requests} submissions against a fresh API process run
under \`node --cpu-prof\` (its timings are not used above; start-up and warm-up are left out). Each sample is charged to the
nearest package or repository file on its stack; see \`bench/profile.ts\`:

${attributionTable([['API, per async submission', s.profile.api, s.profile.requests]])}

Largest single owners: ${topOwners(s.profile.api)}.
`
    : 'The profiled pass failed in this run; no CPU attribution.\n'
}
## 2. Sync mode overhead over the upstream

First sequential (1 in flight) requests with the same multipart body (model \`dall-e-2\`, 1024×1024 image + mask,
\`size=1024x1024\`, \`n=1\`, \`response_format=b64_json\`; ${(y.bodyBytes / 1024).toFixed(0)} KB), ${y.warmup} warm-up requests then ${y.total} measured:

- (a) direct: POST to the fake OpenAI's \`/v1/images/edits\` (\`packages/testing/src/fake-openai.ts\`, no scripted
  delay: it parses the form and answers with a cached 1024×1024 PNG as \`b64_json\`).
- (b) service: POST to the API without \`Prefer\`, so it waits for the job. API and one worker each in their own
  process (\`apps/api/src/main.ts\`, \`apps/worker/src/main.ts\`), \`OPENAI_BASE_URL\` pointing at the same fake.
  The path: upload → checks → S3 (inputs also handed to the worker through Redis) → row → BullMQ → worker picks it up →
  takes the inputs from Redis → calls the fake → decodes and stores the output in S3 while it hands it back in base64
  through Redis → marks the row → Redis pub/sub → API reads the row and takes the base64 from Redis → answers.

Overhead = (b) − (a), per percentile.

${table(LAT_HEADERS, [latencyRow('(a) fake upstream directly', summarize(y.direct.latencies), y.direct), latencyRow('(b) service, sync', summarize(y.service.latencies), y.service)])}
${errorsNote([['direct', y.direct], ['service', y.service]])}
${
  y.phases
    ? `Where the service's time goes, per request (from the job row's \`created_at\` / \`started_at\` / \`completed_at\`
and the moment the fake upstream had the request; all clocks are this machine's, millisecond resolution):

${table(['phase', 'p50', 'p90', 'max'], y.phases.map((p) => [p.name, fmtMs(p.p50), fmtMs(p.p90), fmtMs(p.max)]))}

(Per-phase percentiles do not add up to the end-to-end ones; the fake's own parse time is in the third phase, as it is in (a).)
`
    : 'Phase breakdown unavailable: requests and upstream calls could not be matched one to one in this run.\n'
}
${
  y.floor
    ? `The floor: the steps that a synchronous edit cannot skip in this design, each timed alone (one at a time, 60 times
after 10 warm-ups, \`bench/floor.ts\`) against the same s3rver, Postgres and Redis, with none of the service's code around
them: what the overhead could not go below on this machine even if everything else the service does cost nothing.

${table(['step', 'p50', 'p90'], [...y.floor.map((f) => [f.step, fmtMs(f.p50), fmtMs(f.p90)]), ['**sum**', `**${fmtMs(floorMs(y.floor))}**`, '']])}

Of that sum, S3 (s3rver) takes ${fmtMs(y.floor.filter((f) => f.step.startsWith('S3')).reduce((n, f) => n + f.p50, 0))}. The overhead measured above is ${fmtMs(ySvcP50 - yDirectP50)}, so the service's own work (multipart parsing, the image checks, the SDKs, the queue's bookkeeping, the upstream call made from the worker instead of the client) adds about ${fmtMs(Math.max(0, ySvcP50 - yDirectP50 - floorMs(y.floor)))} on top of the floor.
`
    : ''
}
CPU time per request during (b):

${cpuTable([['service, sync', y.serviceCpu, y.service.ok]], mc.cores)}

${
  y.profile
    ? `Where the API's and the worker's main-thread CPU goes, from a separate pass of ${y.profile.requests} sync requests with both
processes under \`node --cpu-prof\` (as in 1, timings not used):

${attributionTable([['API, per sync request', y.profile.api, y.profile.requests], ['worker, per job', y.profile.worker, y.profile.requests]])}

Largest single owners: API: ${topOwners(y.profile.api)}; worker: ${topOwners(y.profile.worker)}.
`
    : 'The profiled pass failed in this run; no CPU attribution.\n'
}
${syncConcurrentMarkdown(y.c8, mc.cores)}
## 3. Memory with ${m.uploads} concurrent large uploads

${m.uploads} concurrent uploads of one ${(m.fileBytes / 1024 / 1024).toFixed(1)} MB PNG (random pixels, 2600×2600 RGBA, zlib level 0)
as \`image\`, model \`gpt-image-1\`, \`Prefer: respond-async\`, **no worker**, so only the upload path runs:
multipart to disk, header read, S3 put, row, enqueue. Each server runs in its own process after 2 warm-up
uploads; its memory is read from \`/proc/<pid>/status\`: VmRSS sampled every 50 ms during the uploads, and
VmHWM (the kernel's peak RSS since the process started, the figure held against the goal) at the end.
Baseline: the same Express + multer (disk storage) process as in 1.

${table(['process', 'accepted', 'wall time', 'RSS at start-up', 'RSS after warm-up', 'max sampled RSS', 'peak RSS (VmHWM)', 'RSS after'], [memRow('service API', m.service), memRow('baseline (Express + multer)', m.baseline)])}
${errorsNote([['service', m.service.load], ['baseline', m.baseline.load]])}
CPU time per upload:

${cpuTable([['service', m.service.cpu, m.service.load.ok], ['baseline', m.baseline.cpu, m.baseline.load.ok]], mc.cores)}

${batchSection(r)}
${drainMarkdown(r)}
## Notes

${notes.map((n) => `- ${n}`).join('\n')}
`;
}

/** Section 2's throughput part: sync edits per second with several requests in flight. */
function syncConcurrentMarkdown(c: SyncConcurrentMeasurement, cores: number): string {
  const row = (name: string, r: LoadResult) => {
    const l = summarize(r.latencies);
    return [name, String(r.ok), String(r.errors), `${(r.elapsedMs / 1000).toFixed(2)} s`, `${r.rate.toFixed(1)}/s`, fmtMs(l.p50), fmtMs(l.p99)];
  };
  const benchBusy = (100 * c.directCpu.bench) / c.directCpu.wall;
  return `### Sync edits per second at c=${c.concurrency}

Against the same API, worker and s3rver processes as (b) (before the profiled pass), the same two kinds of request with ${c.concurrency} in flight: ${c.warmup} warm-up
requests to each, then ${c.total} measured per side in ${c.rounds} alternating rounds ((a), (b), (a), ...), pooled. This measures
throughput, sync edits answered per second, against what the fake upstream answers per second when called directly at the same
concurrency (goal: ≥ ${SYNC8_GOAL_RATIO}× direct).

${table(['run', 'ok', 'errors', 'wall time', 'rate', 'p50', 'p99'], [row(`(a) fake upstream directly, c=${c.concurrency}`, c.direct), row(`(b) service, sync, c=${c.concurrency}`, c.service)])}
${errorsNote([[`direct, c=${c.concurrency}`, c.direct], [`service, c=${c.concurrency}`, c.service]])}
During (a) the API, worker and s3rver sit idle and the work is the bench process's, which holds both the load client and the
fake upstream: ${((1000 * c.directCpu.bench) / c.direct.ok).toFixed(1)} ms of CPU per request, ${benchBusy.toFixed(0)}% of one core (all its threads; its JavaScript runs on one).
CPU time per request during (b):

${cpuTable([[`service, sync, c=${c.concurrency}`, c.serviceCpu, c.service.ok]], cores)}
`;
}

function batchSection(r: BenchResults): string {
  if (r.batches.length === 0) return '';
  const first = r.batches[0]!;
  const at = (b: BatchMeasurement) => (b.latencyMs ? `${b.latencyMs / 1000} s` : '0');
  const foot = (f: ProcessFootprint) => [fmtMB(f.heapBefore), fmtMB(f.heapPeak), fmtMB(heapGrowth(f)), fmtMB(f.rssBefore), fmtMB(f.rssPeak), fmtMB(f.hwm)];
  return `## 4. Batch submission and fan-out

A batch of ${first.lines.toLocaleString('en')} lines through the OpenAI Batch API, \`POST /v1/files\` (purpose \`batch\`, streamed from a file on
disk) then \`POST /v1/batches\`, with the API and one worker each in its own process on a fresh database / BullMQ prefix / s3rver
bucket. Each line is a \`gpt-image-1\` edit naming one uploaded 1024×1024 PNG by \`file_id\` with a ${first.promptChars}-character
prompt (${fmtMB(first.fileBytes)} in all). Timings come from the batch row (\`created_at\`, \`in_progress_at\` when every line's
structure was checked, \`fanned_out_at\` when every line had its job); "jobs/s" is lines over that whole span. The worker runs
the children meanwhile (the fake OpenAI on loopback, \`WORKER_CONCURRENCY=8\`), so at zero latency the fan-out shares the
worker's process and the cores with as many edits as they can run; at 2 s latency the children mostly wait. A warm-up batch
of ${first.warmupLines} lines goes first (so the worker's batch code is loaded and compiled), then is cancelled. Both processes
run with \`bench/heap-probe.cjs\` preloaded: once a second a full GC, then the live heap (\`heapUsed\`) over IPC; RSS is sampled
every 100 ms from \`/proc\`. Once fanned out, the batch is cancelled and timed to \`cancelled\` (the queued children stopped and
taken off their queue, then the output and error files written).

${table(
  ['upstream latency', 'upload', 'validate', 'fan out', 'jobs accepted/s', 'children started / succeeded meanwhile', 'cancel → cancelled', 'output / error file'],
  r.batches.map((b) => [
    at(b),
    `${(b.uploadMs / 1000).toFixed(1)} s (${(b.fileBytes / 1024 / 1024 / (b.uploadMs / 1000)).toFixed(0)} MB/s)`,
    `${(b.validateMs / 1000).toFixed(1)} s`,
    `${(b.fanOutMs / 1000).toFixed(1)} s`,
    `${b.jobsPerSecond.toFixed(0)}`,
    `${b.childrenStarted} / ${b.childrenSucceeded}`,
    `${(b.cancel.ms / 1000).toFixed(1)} s (${b.cancel.status}; ${b.cancel.completed} completed, ${b.cancel.failed} failed)`,
    `${fmtMB(b.cancel.outputBytes)} / ${fmtMB(b.cancel.errorBytes)}`,
  ]),
)}

Memory of each process during the upload and the fan-out (goal: live heap growth < ${fmtMB(BATCH_HEAP_GROWTH_GOAL_BYTES)}, the file being ${fmtMB(first.fileBytes)}):

${table(
  ['upstream latency', 'process', 'live heap before', 'live heap peak', 'growth', 'RSS before', 'max sampled RSS', 'VmHWM'],
  r.batches.flatMap((b) => [
    [at(b), 'API', ...foot(b.api)],
    [at(b), 'worker', ...foot(b.worker)],
  ]),
)}

CPU during the upload and the fan-out:

${table(
  ['upstream latency', 'wall', 'worker', 'API', 's3rver', 'bench (fake upstream)', 'everything else (Postgres, Redis, ...)'],
  r.batches.map((b) => [at(b), `${b.cpu.wall.toFixed(1)} s`, `${b.cpu.server.toFixed(1)} s`, `${(b.cpu.extra.api ?? 0).toFixed(1)} s`, `${(b.cpu.extra.s3rver ?? 0).toFixed(1)} s`, `${b.cpu.bench.toFixed(1)} s`, `${b.cpu.others.toFixed(1)} s`]),
)}
`;
}
