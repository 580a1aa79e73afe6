import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const REPO = path.resolve(__dirname, '..');

/**
 * A TypeScript entry point in its own Node process, loaded with `node --import tsx` so the pid we hold
 * is the process doing the work (the `tsx` CLI would put a wrapper process in between). This is
 * what `npm run start:api` runs in production, minus the wrapper.
 */
export interface NodeChild {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** last few KB of stdout+stderr, for error messages */
  output(): string;
  exited(): boolean;
  stop(): Promise<void>;
}

export function spawnTs(name: string, script: string, env: Record<string, string | undefined>, nodeArgs: string[] = []): NodeChild {
  const proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', script], {
    cwd: REPO,
    env: env as NodeJS.ProcessEnv,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  if (proc.pid === undefined) throw new Error(`could not spawn ${name}`);
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-8192);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  let exitedFlag = false;
  const exitP = new Promise<void>((resolve) => {
    proc.once('exit', () => {
      exitedFlag = true;
      resolve();
    });
  });
  const pid = proc.pid;
  return {
    name,
    proc,
    pid,
    output: () => tail,
    exited: () => exitedFlag,
    async stop() {
      if (exitedFlag) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exitP;
      clearTimeout(timer);
    },
  };
}

/** A free TCP port on 127.0.0.1 (asked of the OS, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Polls `url` until it answers 200; fails if the child exits or `timeoutMs` passes. */
export async function waitHttpReady(child: NodeChild, url: string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exited()) throw new Error(`${child.name} exited before it was ready:\n${child.output()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${child.name} not ready at ${url} after ${timeoutMs} ms:\n${child.output()}`);
}

export interface ProcMemory {
  /** resident set size now, bytes */
  rss: number;
  /** peak resident set size since the process started (VmHWM), bytes */
  hwm: number;
}

export function readMemory(pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
    if (!m) throw new Error(`${field} missing from /proc/${pid}/status`);
    return Number(m[1]) * 1024;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Samples a process's RSS every `intervalMs` until stopped; the peak is VmHWM, read at the end. */
export function sampleMemory(pid: number, intervalMs = 50): { stop(): ProcMemory & { maxSampledRss: number; samples: number } } {
  let maxSampledRss = 0;
  let samples = 0;
  const tick = () => {
    try {
      maxSampledRss = Math.max(maxSampledRss, readMemory(pid).rss);
      samples++;
    } catch {
      // process gone
    }
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      tick();
      return { ...readMemory(pid), maxSampledRss, samples };
    },
  };
}

/** Clock ticks per second for /proc times (USER_HZ: 100 on every mainstream Linux build). */
const CLK_TCK = 100;

/** CPU seconds (user + system) a process has used so far. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // the command name (field 2) may contain spaces: count from the closing parenthesis
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14 and 15)
}

/** CPU seconds the whole machine spent busy (all cores, everything but idle and iowait) so far. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
  return (total - (v[3] ?? 0) - (v[4] ?? 0)) / CLK_TCK;
}

export interface CpuUse {
  /** wall seconds of the window */
  wall: number;
  /** CPU seconds of the measured server process */
  server: number;
  /** CPU seconds of this process: load generator, fake upstream */
  bench: number;
  /** CPU seconds of everything else on the machine (Postgres, Redis, other processes) */
  others: number;
  /** additional child processes measured by name (e.g. the worker) */
  extra: Record<string, number>;
}

/** Measures CPU use per process over a window: call the returned function at the end. */
export function cpuWindow(serverPid: number, extraPids: Record<string, number> = {}): () => CpuUse {
  const t0 = performance.now();
  const server0 = processCpuSeconds(serverPid);
  const bench0 = process.cpuUsage();
  const machine0 = machineBusySeconds();
  const extra0 = Object.fromEntries(Object.entries(extraPids).map(([k, pid]) => [k, processCpuSeconds(pid)]));
  return () => {
    const server = processCpuSeconds(serverPid) - server0;
    const b = process.cpuUsage(bench0);
    const bench = (b.user + b.system) / 1e6;
    const extra = Object.fromEntries(Object.entries(extraPids).map(([k, pid]) => [k, processCpuSeconds(pid) - extra0[k]!]));
    const extraSum = Object.values(extra).reduce((a, c) => a + c, 0);
    const busy = machineBusySeconds() - machine0;
    return { wall: (performance.now() - t0) / 1000, server, bench, others: Math.max(0, busy - server - bench - extraSum), extra };
  };
}

export function mergeCpu(windows: CpuUse[]): CpuUse {
  const sum = (f: (c: CpuUse) => number) => windows.reduce((n, c) => n + f(c), 0);
  const extra: Record<string, number> = {};
  for (const c of windows) for (const [k, v] of Object.entries(c.extra)) extra[k] = (extra[k] ?? 0) + v;
  return { wall: sum((c) => c.wall), server: sum((c) => c.server), bench: sum((c) => c.bench), others: sum((c) => c.others), extra };
}
