import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from '@jest/globals';
import { deleteRedisPrefix, type FakeFal, type FakeOpenAI, makeMask, makePng, startFakeFal, startFakeOpenAI, startTestService, type TestService } from '@image-edits/testing';
import { startWorker } from '@image-edits/worker';
import { editForm, exited, pollJob, post, until } from './helpers';

/** Nothing is lost: a killed worker, a Redis that forgot its jobs, a worker asked to stop. */
const ROOT = path.resolve(__dirname, '..');
let svc: TestService | undefined;
let fake: FakeOpenAI | undefined;
let fal: FakeFal | undefined;
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  await svc?.stop();
  await fake?.close();
  await fal?.close();
  svc = undefined;
  fake = undefined;
  fal = undefined;
});

function spawnWorker(env: Record<string, string>): ChildProcess {
  // `node --import tsx`, not the tsx CLI: the CLI runs the worker in a child, and the signal must reach the worker itself
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'apps/worker/src/main.ts')], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(child);
  return child;
}


async function submitDalle(s: TestService): Promise<string> {
  const hole = { x: 16, y: 16, width: 16, height: 16 };
  const res = await post(
    `${s.url}/v1/images/edits`,
    s.apiKey,
    editForm({ prompt: 'a hat', model: 'dall-e-2', size: '256x256' }, [['image', await makePng(64, 64), 'in.png'], ['mask', await makeMask(64, 64, hole), 'mask.png']]),
    { prefer: 'respond-async' },
  );
  expect(res.status).toBe(202);
  return res.body.id as string;
}

async function outputObjects(s: TestService, jobId: string): Promise<string[]> {
  const res = await fetch(`${s.testEnv.s3.endpoint}/test-bucket?list-type=2&prefix=jobs/${jobId}/output/`);
  return [...(await res.text()).matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]!);
}

describe('recovery', () => {
  it('a worker killed with SIGKILL mid-job: the job is picked up again and finishes once', async () => {
    fake = await startFakeOpenAI();
    const release = fake.hold();
    svc = await startTestService(
      { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.url, WORKER_LOCK_DURATION_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000' },
      { worker: false },
    );
    const first = spawnWorker(svc.testEnv.env);
    const jobId = await submitDalle(svc);
    await until(() => fake!.requests.length === 1);
    expect((await svc.db.job.findUniqueOrThrow({ where: { id: jobId } })).status).toBe('in_progress');

    first.kill('SIGKILL');
    await exited(first);
    release();
    spawnWorker(svc.testEnv.env);

    const done = await pollJob(svc.url, svc.apiKey, jobId, 45_000);
    expect(done.status).toBe('succeeded');
    expect(done.attempts).toBe(2);
    expect(fake.requests.length).toBe(2);
    expect(await svc.db.usage.count({ where: { jobId } })).toBe(1);
    expect(await outputObjects(svc, jobId)).toEqual([`jobs/${jobId}/output/0.png`]);
  });

  it('a job that takes its worker down every time is given up, not retried forever', async () => {
    fake = await startFakeOpenAI();
    fake.hold();
    svc = await startTestService(
      { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.url, WORKER_LOCK_DURATION_MS: '1500', WORKER_STALLED_INTERVAL_MS: '500', RECONCILE_INTERVAL_MS: '300', RECONCILE_GRACE_MS: '0' },
      { worker: false },
    );
    const jobId = await submitDalle(svc);
    // BullMQ gives a job up after it stalled more than 3 times: four workers die on it
    for (let run = 1; run <= 4; run++) {
      const w = spawnWorker(svc.testEnv.env);
      await until(() => fake!.requests.length === run, 40_000);
      w.kill('SIGKILL');
      await exited(w);
    }
    spawnWorker(svc.testEnv.env);
    const done = await pollJob(svc.url, svc.apiKey, jobId, 40_000);
    expect(done.status).toBe('failed');
    expect(done.error).toMatchObject({ code: 'worker_crashed', type: 'server_error' });
    // and nobody ran it a fifth time
    await new Promise((r) => setTimeout(r, 1500));
    expect(fake.requests.length).toBe(4);
  }, 120_000);

  it('jobs queued in Postgres but lost from Redis are enqueued again by the reconciler', async () => {
    svc = await startTestService({ OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: 'http://127.0.0.1:9', RECONCILE_INTERVAL_MS: '300', RECONCILE_GRACE_MS: '0' }, { worker: false });
    fake = await startFakeOpenAI();
    const jobIds = [await submitDalle(svc), await submitDalle(svc)];
    // Redis restarted without persistence: every BullMQ key of this deployment is gone
    await deleteRedisPrefix(svc.testEnv.prefix);
    const worker = await startWorker({ ...svc.config, env: { ...svc.config.env, OPENAI_BASE_URL: fake.url } });
    try {
      for (const id of jobIds) expect((await pollJob(svc.url, svc.apiKey, id, 20_000)).status).toBe('succeeded');
      expect(fake.requests.length).toBe(2);
    } finally {
      await worker.close();
    }
  });

  it('a sync client that disconnects while waiting loses nothing: the job goes on and stays readable', async () => {
    fake = await startFakeOpenAI();
    const release = fake.hold();
    svc = await startTestService({ OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.url });
    const hole = { x: 16, y: 16, width: 16, height: 16 };
    const form = editForm({ prompt: 'a hat', model: 'dall-e-2', size: '256x256' }, [['image', await makePng(64, 64), 'in.png'], ['mask', await makeMask(64, 64, hole), 'mask.png']]);
    const gone = new AbortController();
    const pending = fetch(`${svc.url}/v1/images/edits`, { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}` }, body: form, signal: gone.signal });
    await until(() => fake!.requests.length === 1);
    gone.abort();
    await expect(pending).rejects.toThrow();
    release();
    const row = await svc.db.job.findFirstOrThrow({ where: { apiKeyId: svc.apiKeyId } });
    const done = await pollJob(svc.url, svc.apiKey, row.id);
    expect(done.status).toBe('succeeded');
    expect((await fetch(done.result.data[0].url)).status).toBe(200);
  });

  it('SIGTERM lets the job in flight finish before the worker exits', async () => {
    fake = await startFakeOpenAI();
    const release = fake.hold();
    svc = await startTestService({ OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.url }, { worker: false });
    const child = spawnWorker(svc.testEnv.env);
    const jobId = await submitDalle(svc);
    await until(() => fake!.requests.length === 1);
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    expect(child.exitCode).toBeNull(); // still draining
    release();
    expect(await exited(child)).toBe(0);
    const row = await svc.db.job.findUniqueOrThrow({ where: { id: jobId } });
    expect(row.status).toBe('succeeded');
    expect(fake.requests.length).toBe(1);
  });

  it('a worker killed while fal works on its request: the next worker resumes that request, nothing is paid twice', async () => {
    fal = await startFakeFal({ apiKey: 'fal-key' });
    svc = await startTestService(
      { FAL_KEY: 'fal-key', FAL_BASE_URL: fal.url, WORKER_LOCK_DURATION_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000' },
      { worker: false },
    );
    // the first status poll never answers: the worker is waiting on fal when it dies
    const releasePoll = fal.hold({ kind: 'status', times: 1 });
    const first = spawnWorker(svc.testEnv.env);
    const hole = { x: 16, y: 16, width: 16, height: 16 };
    const res = await post(
      `${svc.url}/v1/images/edits`,
      svc.apiKey,
      editForm({ prompt: 'a balloon', model: 'flux-fill-pro' }, [['image', await makePng(64, 64), 'in.png'], ['mask', await makeMask(64, 64, hole), 'mask.png']]),
      { prefer: 'respond-async' },
    );
    expect(res.status).toBe(202);
    const jobId = res.body.id as string;
    await until(() => fal!.requests.some((r) => r.kind === 'status'));
    // the request id was recorded before the wait
    const row = await svc.db.job.findUniqueOrThrow({ where: { id: jobId } });
    expect(row.providerRequest).toEqual({ target: 0, ids: [fal.submissions[0]!.requestId] });

    first.kill('SIGKILL');
    await exited(first);
    spawnWorker(svc.testEnv.env);
    const done = await pollJob(svc.url, svc.apiKey, jobId, 45_000);
    releasePoll();
    expect(done.status).toBe('succeeded');
    expect(done.provider).toBe('fal');
    expect(fal.submissions).toHaveLength(1);
    expect(await svc.db.usage.count({ where: { jobId } })).toBe(1);
  }, 90_000);
});
