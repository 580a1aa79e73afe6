import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from '@jest/globals';
import { type FakeOpenAI, makeMask, makePng, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import { editForm, exited, pollJob, post, until } from './helpers';

/**
 * Shutdown as deployed: `npm run start:worker` / `npm run start:api` exactly as a process manager
 * runs them, SIGTERM sent to the npm process (npm forwards it; the script execs node, so node gets it).
 */
const ROOT = path.resolve(__dirname, '..');
const SHUTDOWN_TIMEOUT_MS = 8000;
let svc: TestService | undefined;
let fake: FakeOpenAI | undefined;
const children: Spawned[] = [];

interface Spawned {
  npm: ChildProcess;
  /** everything node printed (pino JSON lines at LOG_LEVEL info) */
  output: () => string;
}

afterEach(async () => {
  for (const { npm } of children.splice(0)) {
    // npm's children first: a SIGKILLed npm would leave node running
    if (npm.pid !== undefined) for (const pid of descendants(npm.pid)) killQuietly(pid);
    if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL');
  }
  await svc?.stop();
  await fake?.close();
  svc = undefined;
  fake = undefined;
});

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function descendants(pid: number): number[] {
  return childPids(pid).flatMap((c) => [...descendants(c), c]);
}

/** `npm run <script>` from the repository root with the test's environment, as a process manager starts it */
function spawnNpm(script: string, env: Record<string, string>): Spawned {
  let out = '';
  const npm = spawn('npm', ['run', script], {
    cwd: ROOT,
    env: { ...process.env, ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: false,
  });
  npm.stdout!.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  const spawned = { npm, output: () => out };
  children.push(spawned);
  return spawned;
}

/** the process tree is npm -> node (no sh, no tsx CLI in between): the signal npm forwards reaches node itself */
function expectNodeDirectlyUnderNpm(npm: ChildProcess, entry: string): void {
  const kids = childPids(npm.pid!);
  expect(kids).toHaveLength(1);
  const args = execFileSync('ps', ['-o', 'args=', '-p', String(kids[0])]).toString().trim();
  expect(args).toBe(`node --import tsx ${entry}`);
  expect(childPids(kids[0]!)).toEqual([]);
}

const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

async function dalleForm(): Promise<FormData> {
  const hole = { x: 16, y: 16, width: 16, height: 16 };
  return editForm({ prompt: 'a hat', model: 'dall-e-2', size: '256x256' }, [['image', await makePng(64, 64), 'in.png'], ['mask', await makeMask(64, 64, hole), 'mask.png']]);
}

async function submitAsync(s: TestService): Promise<string> {
  const res = await post(`${s.url}/v1/images/edits`, s.apiKey, await dalleForm(), { prefer: 'respond-async' });
  expect(res.status).toBe(202);
  expect(res.body.id).toEqual(expect.any(String));
  return res.body.id as string;
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** one HTTP/1.1 request over an http.Agent, keeping hold of the socket it used */
function request(
  url: string,
  opts: { agent: http.Agent; method?: string; headers?: Record<string, string>; body?: Buffer },
): { socket: Promise<net.Socket>; response: Promise<RawResponse> } {
  let gotSocket!: (s: net.Socket) => void;
  const socket = new Promise<net.Socket>((resolve) => (gotSocket = resolve));
  const response = new Promise<RawResponse>((resolve, reject) => {
    const req = http.request(url, { agent: opts.agent, method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('socket', gotSocket);
    req.on('error', reject);
    req.end(opts.body);
  });
  return { socket, response };
}

/** reads one response off a raw socket (Content-Length bodies) */
function readResponse(socket: net.Socket): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [statusLine, ...lines] = buf.slice(0, end).split('\r\n');
      const headers: http.IncomingHttpHeaders = {};
      for (const line of lines) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const length = Number(headers['content-length'] ?? 0);
      if (buf.length - end - 4 < length) return;
      socket.off('data', onData);
      socket.off('error', reject);
      resolve({ status: Number(statusLine!.split(' ')[1]), headers, body: buf.slice(end + 4, end + 4 + length) });
    };
    socket.on('data', onData);
    socket.on('error', reject);
  });
}

describe('shutdown as deployed (SIGTERM to npm run start:*)', () => {
  it('worker: SIGTERM stops taking jobs, the job in flight finishes once, then exit 0', async () => {
    fake = await startFakeOpenAI();
    const release = fake.hold();
    svc = await startTestService({ OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.url, SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) }, { worker: false });
    const worker = spawnNpm('start:worker', svc.testEnv.env);
    await until(() => worker.output().includes('worker ready'));
    expectNodeDirectlyUnderNpm(worker.npm, 'apps/worker/src/main.ts');

    const inFlight = await submitAsync(svc);
    await until(() => fake!.requests.length === 1);
    const sentAt = Date.now();
    worker.npm.kill('SIGTERM');
    await until(() => worker.output().includes('draining'), 5000); // the signal reached node's handler

    // a job queued while it drains is not taken, and the job in flight holds the process
    const queued = await submitAsync(svc);
    await new Promise((r) => setTimeout(r, 1500));
    expect(running(worker.npm)).toBe(true);
    expect(fake.requests.length).toBe(1);
    expect((await svc.db.job.findUniqueOrThrow({ where: { id: queued } })).status).toBe('queued');
    expect((await svc.db.job.findUniqueOrThrow({ where: { id: inFlight } })).status).toBe('in_progress');

    release();
    expect(await exited(worker.npm)).toBe(0);
    expect(Date.now() - sentAt).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    expect(worker.output()).toContain('drained');
    const done = await pollJob(svc.url, svc.apiKey, inFlight);
    expect(done.status).toBe('succeeded');
    expect(done.attempts).toBe(1);
    expect(fake.requests.length).toBe(1);
    expect(await svc.db.usage.count({ where: { jobId: inFlight } })).toBe(1);
    expect((await svc.db.job.findUniqueOrThrow({ where: { id: queued } })).status).toBe('queued');

    // the next worker runs what was left queued
    spawnNpm('start:worker', svc.testEnv.env);
    expect((await pollJob(svc.url, svc.apiKey, queued, 30_000)).status).toBe('succeeded');
    expect(fake.requests.length).toBe(2);
  }, 60_000);

  it('api: SIGTERM drains keep-alive clients, finishes the sync edit in flight, refuses new connections, then exit 0', async () => {
    fake = await startFakeOpenAI();
    const release = fake.hold();
    // the in-process worker runs the job; the API under test is the npm child
    svc = await startTestService({ OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.url, SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) });
    const api = spawnNpm('start:api', svc.testEnv.env);
    await until(() => /listening on http:\/\/[^\s"]+/.test(api.output()));
    const base = /listening on (http:\/\/[^\s"]+)/.exec(api.output())![1]!;
    const { port } = new URL(base);
    expectNodeDirectlyUnderNpm(api.npm, 'apps/api/src/main.ts');

    const agent = new http.Agent({ keepAlive: true });
    try {
      // connection 1: a sync edit, waiting on the held upstream
      const form = new Request('http://local/', { method: 'POST', body: await dalleForm() });
      const sync = request(`${base}/v1/images/edits`, {
        agent,
        method: 'POST',
        headers: { authorization: `Bearer ${svc.apiKey}`, 'content-type': form.headers.get('content-type')! },
        body: Buffer.from(await form.arrayBuffer()),
      });
      await until(() => fake!.requests.length === 1);

      // connection 2: used once, now idle in the agent's pool
      const idle = request(`${base}/healthz`, { agent });
      const idleRes = await idle.response;
      expect(idleRes.status).toBe(200);
      expect(idleRes.headers.connection).toBe('keep-alive');
      const idleSocket = await idle.socket;
      expect(idleSocket).not.toBe(await sync.socket);
      const idleClosed = new Promise<void>((resolve) => idleSocket.once('close', () => resolve()));

      // connection 3: ready before, and a request half sent (its headers unfinished) when the signal comes
      const raw = net.connect(Number(port), '127.0.0.1');
      await new Promise<void>((resolve, reject) => raw.once('connect', resolve).once('error', reject));
      raw.write('GET /readyz HTTP/1.1\r\nHost: api\r\n\r\n');
      const before = await readResponse(raw);
      expect(before.status).toBe(200);
      expect(JSON.parse(before.body).status).toBe('ready');
      raw.write('GET /readyz HTTP/1.1\r\nHost: api\r\n');
      const rawClosed = new Promise<void>((resolve) => raw.once('close', () => resolve()));

      const sentAt = Date.now();
      api.npm.kill('SIGTERM');
      await until(() => api.output().includes('shutting down'), 5000); // the signal reached node's handler

      await idleClosed; // the idle keep-alive connection is closed at once
      raw.write('\r\n');
      const during = await readResponse(raw);
      expect(during.status).toBe(503);
      expect(during.headers.connection).toBe('close');
      expect(JSON.parse(during.body)).toEqual({ status: 'draining' });
      await rawClosed;

      // a new connection is refused: the listener is closed
      await expect(
        new Promise((resolve, reject) => {
          const s = net.connect(Number(port), '127.0.0.1');
          s.once('connect', () => {
            s.destroy();
            resolve('connected');
          });
          s.once('error', reject);
        }),
      ).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      expect(running(api.npm)).toBe(true); // the sync edit still holds it

      release();
      const answer = await sync.response;
      expect({ status: answer.status, body: answer.status === 200 ? undefined : answer.body }).toEqual({ status: 200, body: undefined });
      expect(answer.headers.connection).toBe('close');
      expect(JSON.parse(answer.body).data).toHaveLength(1);

      expect(await exited(api.npm)).toBe(0);
      expect(Date.now() - sentAt).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
      expect(api.output()).toContain('drained');
      expect(fake.requests.length).toBe(1);
    } finally {
      agent.destroy();
    }
  }, 60_000);
});
