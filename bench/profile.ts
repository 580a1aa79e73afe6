import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Attribution of a child process's CPU to the code that spent it, from V8's sampling profiler
 * (`node --cpu-prof`). Each sample is charged to the nearest frame on its stack that belongs to a
 * dependency (node_modules/<pkg>) or to this repository's own source; Node's internals and native
 * calls are charged to whoever called them. Samples with no such frame (e.g. a file-system callback
 * with nothing but Node internals above it) keep their own name. Only samples inside the given
 * window count, so start-up is left out.
 */

export const profileArgs = (dir: string) => ['--cpu-prof', `--cpu-prof-dir=${dir}`];

/** A monotonic timestamp in microseconds on the clock V8's profiler uses (CLOCK_MONOTONIC). */
export const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** The main thread's profile of process `pid` (file CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile, main thread = 0). */
export function readMainThreadProfile(dir: string, pid: number): CpuProfile {
  const file = readdirSync(dir).find((f) => f.includes(`.${pid}.0.`) && f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no CPU profile for pid ${pid} in ${dir}`);
  return JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as CpuProfile;
}

/** Groups shown in the report, first match wins; the owner is a package name or a repo-relative path. */
const GROUPS: [string, RegExp][] = [
  ['Postgres client (Prisma, pg)', /^(@prisma\/|prisma$|pg$|pg-|postgres-|packages\/db\/)/],
  ['S3 client (AWS SDK v3)', /^(@aws-sdk\/|@smithy\/|@aws-crypto\/|packages\/storage\/)/],
  ['Redis and BullMQ', /^(ioredis|bullmq|msgpackr|cron-parser|@ioredis\/|redis-|packages\/queue\/)/],
  ['multipart parsing (multer, busboy)', /^(multer|busboy|streamsearch|append-field)/],
  ['sharp (image headers, decode, encode)', /^sharp$/],
  ['OpenAI SDK', /^openai$/],
  ['HTTP framework, logging, metrics (express, pino, prom-client, ...)', /^(express|router|body-parser|pino|pino-http|prom-client|on-finished|finalhandler|send|qs|type-is|raw-body|content-type|iconv-lite|mime|accepts|negotiator|depd|debug|cookie)/],
  ['validation (zod)', /^zod$/],
  ['service code (apps/*, packages/*)', /^(apps\/|packages\/)/],
  ['native I/O calls with no JS caller (open, read, write, close, unlink, ...)', /^\[(open|read|write|writev|writeBuffer|writeString|writeUtf8String|writeLatin1String|close|unlink|lstat|stat|fstat|fsync|readFileUtf8|mkdir|rename)\]$/],
  ['garbage collection', /^\[\(garbage collector\)\]$/],
];

export interface CpuAttribution {
  /** busy (non-idle) milliseconds in the window */
  busyMs: number;
  /** [group, ms], descending */
  groups: [string, number][];
  /** the largest individual owners, [owner, ms], descending */
  topOwners: [string, number][];
}

export function attribute(profile: CpuProfile, fromUs: number, toUs: number, repoRoot: string): CpuAttribution {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const root = `file://${repoRoot}/`;
  const ownerCache = new Map<number, string>();
  const owner = (id: number): string => {
    const cached = ownerCache.get(id);
    if (cached) return cached;
    let result: string | undefined;
    for (let cur: number | undefined = id; cur !== undefined && !result; cur = parent.get(cur)) {
      const url = byId.get(cur)?.callFrame.url ?? '';
      const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
      if (m && m[1] !== 'tsx') result = m[1]!;
      else if (!m && (url.startsWith(root) || url.startsWith(`${repoRoot}/`))) result = url.replace(root, '').replace(`${repoRoot}/`, '');
    }
    const f = byId.get(id)?.callFrame;
    result ??= `[${f?.functionName || f?.url || 'unknown'}]`;
    ownerCache.set(id, result);
    return result;
  };

  const owners = new Map<string, number>();
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const o = owner(profile.samples[i]!);
    if (o === '[(idle)]') continue;
    // a sample stands for the time since the previous one
    owners.set(o, (owners.get(o) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  }
  const groups = new Map<string, number>();
  for (const [o, ms] of owners) {
    const g = GROUPS.find(([, re]) => re.test(o))?.[0] ?? 'other (Node internals, other packages)';
    groups.set(g, (groups.get(g) ?? 0) + ms);
  }
  const desc = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return { busyMs: [...owners.values()].reduce((a, b) => a + b, 0), groups: desc(groups), topOwners: desc(owners).slice(0, 12) };
}
