import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { newId } from '@image-edits/core';
import { createApiKey } from './api-keys';
import { createDb, type Db } from './client';
import { getJob, insertJob, markFailed, markStarted, markSucceeded, type NewJob } from './jobs';
import { dropDatabase, migrate } from './migrate';
import { createWebhookEndpoint } from './webhooks';

/**
 * The statements sent past Prisma (client.ts sendRaw: a submission's INSERT, a job's success) read
 * back through Prisma exactly as written, whatever the process's time zone; and the moving
 * statements say whether a job has anywhere to send its events.
 */
const url = `postgresql://postgres@127.0.0.1:5432/image_edits_hot_${process.pid}`;
let db: Db;
let apiKeyId: string;

beforeAll(async () => {
  await dropDatabase(url);
  await migrate(url);
  db = createDb(url, { poolSize: 2 });
  apiKeyId = (await createApiKey(db, 'hot statements')).id;
});
afterAll(async () => {
  await db.$disconnect();
  await dropDatabase(url);
});

const newJob = (over: Partial<NewJob> = {}): NewJob => ({
  id: newId('job'),
  apiKeyId,
  model: 'dall-e-2',
  provider: 'openai',
  targets: [{ provider: 'openai', upstream: 'dall-e-2', price: { perImage: 0.02 } }],
  params: { prompt: 'a red balloon', n: 1, size: '1024x1024', response_format: 'b64_json' },
  inputs: { images: [{ key: 'jobs/x/input/image-0.png', format: 'png', bytes: 10, width: 4, height: 4, filename: 'a.png' }] },
  metadata: { 'ünï': 'cödé' },
  webhookEvents: ['job.succeeded'],
  deadlineAt: new Date(Date.now() + 3_600_000),
  ...over,
});

describe('statements sent past Prisma', () => {
  it('an inserted job reads back as written: times, JSON, arrays and text', async () => {
    const job = newJob({ webhookUrl: 'https://example.com/hook' });
    const inserted = await insertJob(db, job);
    const read = await getJob(db, job.id);
    expect(read).not.toBeNull();
    expect(read!.createdAt.toISOString()).toBe(inserted.createdAt.toISOString());
    expect(read!.deadlineAt!.toISOString()).toBe(job.deadlineAt!.toISOString());
    expect(read!.params).toEqual(job.params);
    expect(read!.inputs).toEqual(job.inputs);
    expect(read!.metadata).toEqual(job.metadata);
    expect(read!.webhookEvents).toEqual(['job.succeeded']);
    expect(read!.status).toBe('queued');
  });

  it('times do not shift with the time zone of the process that wrote them', async () => {
    // a process far from UTC inserts a job and finishes it (jest's sandbox keeps TZ from this one)
    const script = `
      const { createDb, createApiKey, getJob, insertJob, markStarted, markSucceeded } = require('./src');
      (async () => {
        const db = createDb(process.env.DB_URL, { poolSize: 1 });
        const key = await createApiKey(db, 'far away');
        const job = JSON.parse(process.env.JOB);
        job.apiKeyId = key.id;
        job.deadlineAt = new Date(job.deadlineAt);
        const inserted = await insertJob(db, job);
        const started = await markStarted(db, job.id);
        await markSucceeded(db, job.id, { job: { apiKeyId: key.id, model: 'dall-e-2', provider: 'openai' }, outputs: [], usage: { images: 0, costUsd: 0.04 } });
        const done = await getJob(db, job.id);
        console.log(JSON.stringify({ createdAt: inserted.createdAt, started: { createdAt: started.createdAt, startedAt: started.startedAt, deadlineAt: started.deadlineAt, metadata: started.metadata, webhookEvents: started.webhookEvents, status: started.status }, done: { createdAt: done.createdAt, completedAt: done.completedAt, resultExpiresAt: done.resultExpiresAt, costUsd: done.usage.costUsd }, zoneOffsetMin: new Date().getTimezoneOffset() }));
        await db.$disconnect();
      })();`;
    const job = newJob();
    const before = Date.now();
    const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: path.resolve(__dirname, '..'), env: { ...process.env, TZ: 'Pacific/Auckland', DB_URL: url, JOB: JSON.stringify(job) }, encoding: 'utf8' });
    const written = JSON.parse(out.trim().split('\n').at(-1)!) as { createdAt: string; started: Record<string, unknown>; done: Record<string, unknown>; zoneOffsetMin: number };
    expect(written.zoneOffsetMin).not.toBe(0);
    const read = await getJob(db, job.id);
    expect(read!.createdAt.toISOString()).toBe(written.createdAt);
    // the started job as that process read it back (past Prisma too)
    expect(written.started).toEqual({ createdAt: written.createdAt, startedAt: read!.startedAt!.toISOString(), deadlineAt: job.deadlineAt!.toISOString(), metadata: job.metadata, webhookEvents: job.webhookEvents, status: 'in_progress' });
    expect(read!.deadlineAt!.toISOString()).toBe(job.deadlineAt!.toISOString());
    expect(Math.abs(read!.completedAt!.getTime() - before)).toBeLessThan(60_000);
    // and the finished job as that process reads it
    expect(written.done).toEqual({ createdAt: written.createdAt, completedAt: read!.completedAt!.toISOString(), resultExpiresAt: read!.resultExpiresAt!.toISOString(), costUsd: 0.04 });
  });

  it('a success moves the job once, bills it once, and keeps its time', async () => {
    const job = newJob();
    await insertJob(db, job);
    const started = await markStarted(db, job.id);
    expect(started?.status).toBe('in_progress');
    const before = Date.now();
    const success = { job: { apiKeyId, model: 'dall-e-2', provider: 'openai' }, outputs: [{ key: `jobs/${job.id}/output/0.png`, format: 'png' as const, bytes: 5, width: 4, height: 4 }], usage: { images: 1, size: '1024x1024', costUsd: 0.02 } };
    const won = await markSucceeded(db, job.id, success);
    expect(won).toEqual({ batchId: null, batchSettled: false, hasWebhookTargets: false });
    expect(await markSucceeded(db, job.id, success)).toBeNull();
    const read = await getJob(db, job.id);
    expect(read!.status).toBe('succeeded');
    expect(Math.abs(read!.completedAt!.getTime() - before)).toBeLessThan(5_000);
    expect(read!.outputs).toEqual(success.outputs);
    expect(await db.usage.count({ where: { jobId: job.id } })).toBe(1);
    expect(Number((await db.usage.findFirst({ where: { jobId: job.id } }))!.costUsd)).toBe(0.02);
  });

  it('says whether a job has a webhook target: its own, or a live endpoint of its key', async () => {
    const own = newJob({ webhookUrl: 'https://example.com/hook' });
    const none = newJob();
    for (const j of [own, none]) await insertJob(db, j);
    expect((await markStarted(db, own.id))?.hasWebhookTargets).toBe(true);
    expect((await markStarted(db, none.id))?.hasWebhookTargets).toBe(false);
    await createWebhookEndpoint(db, { apiKeyId, url: 'https://example.com/endpoint', events: ['job.failed'] });
    const failed = await markFailed(db, none.id, { message: 'x', type: 'server_error', code: 'internal_error', status: 500 });
    expect(failed?.hasWebhookTargets).toBe(true);
    const later = newJob();
    await insertJob(db, later);
    expect((await markStarted(db, later.id))?.hasWebhookTargets).toBe(true);
  });
});
