import { type EditParams, type JobError, type JobInputs, type JobStatus, type JobTarget, movableFrom, newId, type StoredImage } from '@image-edits/core';
import type { Db } from './client';
import type { Prisma } from './generated/prisma/client';

/** A job row with its JSON columns typed. */
export interface JobRecord {
  id: string;
  apiKeyId: string;
  status: JobStatus;
  model: string;
  provider: string;
  /** the route resolved at submission, tried in order */
  targets: JobTarget[];
  targetIndex: number;
  params: EditParams;
  inputs: JobInputs;
  outputs: StoredImage[] | null;
  error: JobError | null;
  metadata: Record<string, string>;
  endUser: string | null;
  webhookUrl: string | null;
  webhookEvents: string[];
  deadlineAt: Date | null;
  cancelRequestedAt: Date | null;
  attempts: number;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  usage: { images: number; inputTokens: number | null; outputTokens: number | null; costUsd: number } | null;
}

type Row = Prisma.JobGetPayload<{ include: { usage: true } }>;

function toRecord(row: Row): JobRecord {
  return {
    id: row.id,
    apiKeyId: row.apiKeyId,
    status: row.status,
    model: row.model,
    provider: row.provider,
    targets: row.targets as unknown as JobTarget[],
    targetIndex: row.targetIndex,
    params: row.params as unknown as EditParams,
    inputs: row.inputs as unknown as JobInputs,
    outputs: (row.outputs as unknown as StoredImage[] | null) ?? null,
    error: (row.error as unknown as JobError | null) ?? null,
    metadata: row.metadata as Record<string, string>,
    endUser: row.endUser,
    webhookUrl: row.webhookUrl,
    webhookEvents: row.webhookEvents,
    deadlineAt: row.deadlineAt,
    cancelRequestedAt: row.cancelRequestedAt,
    attempts: row.attempts,
    createdAt: row.createdAt,
    startedAt: row.startedAt,
    completedAt: row.completedAt,
    usage: row.usage ? { images: row.usage.images, inputTokens: row.usage.inputTokens, outputTokens: row.usage.outputTokens, costUsd: Number(row.usage.costUsd) } : null,
  };
}

const json = (v: unknown) => v as Prisma.InputJsonValue;

export interface NewJob {
  id: string;
  apiKeyId: string;
  model: string;
  provider: string;
  targets: JobTarget[];
  params: EditParams;
  inputs: JobInputs;
  metadata?: Record<string, string>;
  endUser?: string;
  webhookUrl?: string;
  webhookEvents?: string[];
  deadlineAt?: Date;
}

export async function insertJob(db: Db, job: NewJob): Promise<JobRecord> {
  // One raw INSERT: Prisma's create spends several times its round trip in CPU, on the API's hottest
  // path. Timestamps come from this clock, as with Prisma's create (@default(now()), @updatedAt).
  // A field added to JobRecord must be set here, and its column below.
  const now = new Date();
  const record: JobRecord = {
    id: job.id,
    apiKeyId: job.apiKeyId,
    status: 'queued',
    model: job.model,
    provider: job.provider,
    targets: job.targets,
    targetIndex: 0,
    params: job.params,
    inputs: job.inputs,
    outputs: null,
    error: null,
    metadata: job.metadata ?? {},
    endUser: job.endUser ?? null,
    webhookUrl: job.webhookUrl ?? null,
    webhookEvents: job.webhookEvents ?? [],
    deadlineAt: job.deadlineAt ?? null,
    cancelRequestedAt: null,
    attempts: 0,
    createdAt: now,
    startedAt: null,
    completedAt: null,
    usage: null,
  };
  const r = record;
  await db.$executeRaw`
    INSERT INTO jobs (id, api_key_id, status, model, provider, targets, target_index, params, inputs, metadata, end_user,
                      webhook_url, webhook_events, deadline_at, attempts, created_at, updated_at)
    VALUES (${r.id}, ${r.apiKeyId}, 'queued', ${r.model}, ${r.provider}, ${JSON.stringify(r.targets)}::jsonb, 0,
            ${JSON.stringify(r.params)}::jsonb, ${JSON.stringify(r.inputs)}::jsonb, ${JSON.stringify(r.metadata)}::jsonb, ${r.endUser},
            ${r.webhookUrl}, ${r.webhookEvents}::text[], ${r.deadlineAt}, 0, ${now}, ${now})`;
  return record;
}

export async function getJob(db: Db, id: string): Promise<JobRecord | null> {
  const row = await db.job.findUnique({ where: { id }, include: { usage: true } });
  return row ? toRecord(row) : null;
}

/** A key sees only its own jobs: another key's id is simply not found. */
export async function getJobForKey(db: Db, id: string, apiKeyId: string): Promise<JobRecord | null> {
  const row = await db.job.findFirst({ where: { id, apiKeyId }, include: { usage: true } });
  return row ? toRecord(row) : null;
}

/**
 * queued (or in_progress, after a crash or a retry) → in_progress, counting the attempt. Null when
 * the job may not run, or is no longer on `targetIndex` (a stale queue entry after a fallback).
 */
export async function markStarted(db: Db, id: string, targetIndex = 0): Promise<JobRecord | null> {
  // one statement, one round trip (this is on every job's critical path); a job past its deadline
  // never starts: the deadline sweep expires it. started_at is stamped by the first attempt only.
  const now = new Date();
  const rows = await db.$queryRaw<RawJobRow[]>`
    UPDATE jobs SET status = 'in_progress', attempts = attempts + 1, started_at = COALESCE(started_at, ${now}), updated_at = ${now}
    WHERE id = ${id} AND target_index = ${targetIndex} AND status::text = ANY(${movableFrom('in_progress')}::text[])
      AND (deadline_at IS NULL OR deadline_at > ${now})
    RETURNING *`;
  return rows[0] ? fromRawRow(rows[0]) : null;
}

/** A `jobs` row as raw SQL returns it (snake_case columns). */
interface RawJobRow {
  id: string;
  api_key_id: string;
  status: JobStatus;
  model: string;
  provider: string;
  targets: unknown;
  target_index: number;
  params: unknown;
  inputs: unknown;
  outputs: unknown;
  error: unknown;
  metadata: unknown;
  end_user: string | null;
  webhook_url: string | null;
  webhook_events: string[] | null;
  deadline_at: Date | null;
  cancel_requested_at: Date | null;
  attempts: number;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
}

function fromRawRow(r: RawJobRow): JobRecord {
  return {
    id: r.id,
    apiKeyId: r.api_key_id,
    status: r.status,
    model: r.model,
    provider: r.provider,
    targets: r.targets as JobTarget[],
    targetIndex: r.target_index,
    params: r.params as EditParams,
    inputs: r.inputs as JobInputs,
    outputs: (r.outputs as StoredImage[] | null) ?? null,
    error: (r.error as JobError | null) ?? null,
    metadata: r.metadata as Record<string, string>,
    endUser: r.end_user,
    webhookUrl: r.webhook_url,
    webhookEvents: r.webhook_events ?? [],
    deadlineAt: r.deadline_at,
    cancelRequestedAt: r.cancel_requested_at,
    attempts: r.attempts,
    createdAt: r.created_at,
    startedAt: r.started_at,
    completedAt: r.completed_at,
    usage: null,
  };
}

export interface SuccessInput {
  /** the job as the worker loaded it: the usage row is billed to its key, model and provider */
  job: Pick<JobRecord, 'apiKeyId' | 'model' | 'provider'>;
  outputs: StoredImage[];
  usage: { images: number; inputTokens?: number | undefined; outputTokens?: number | undefined; size?: string | undefined; quality?: string | undefined; costUsd: number };
}

/**
 * in_progress → succeeded with its outputs and exactly one usage row, in one transaction. False when
 * the job was no longer in progress (canceled meanwhile, or another attempt already finished it).
 */
export async function markSucceeded(db: Db, id: string, input: SuccessInput): Promise<boolean> {
  // one statement (atomic on its own): the row moves only if still in progress, and the usage row
  // is written only if it moved, so a job is billed once however many attempts race to finish it
  const now = new Date();
  const job = input.job;
  const u = input.usage;
  const rows = await db.$queryRaw<{ job_id: string }[]>`
    WITH moved AS (
      UPDATE jobs SET status = 'succeeded', outputs = ${JSON.stringify(input.outputs)}::jsonb, completed_at = ${now}, updated_at = ${now}
      WHERE id = ${id} AND status::text = ANY(${movableFrom('succeeded')}::text[])
      RETURNING id
    )
    INSERT INTO usage (id, job_id, api_key_id, model, provider, images, input_tokens, output_tokens, size, quality, cost_usd, created_at)
    SELECT ${newId('usage')}, moved.id, ${job.apiKeyId}, ${job.model}, ${job.provider}, ${u.images}, ${u.inputTokens ?? null}::int, ${u.outputTokens ?? null}::int,
           ${u.size ?? null}::text, ${u.quality ?? null}::text, ${u.costUsd}::numeric, ${now}
    FROM moved
    RETURNING job_id`;
  return rows.length > 0;
}

/**
 * Fallback: the current target's retries are spent, the job moves on to the next one (still
 * in_progress, with the last error kept). Conditional on the target index, so two workers racing
 * on the same failure move it once. False when the job was not on target `fromIndex` any more.
 */
export async function moveToNextTarget(db: Db, id: string, fromIndex: number, next: { provider: string }, lastError: JobError): Promise<boolean> {
  const res = await db.job.updateMany({
    where: { id, targetIndex: fromIndex, status: { in: ['queued', 'in_progress'] } },
    data: { targetIndex: fromIndex + 1, provider: next.provider, error: json(lastError), updatedAt: new Date() },
  });
  return res.count > 0;
}

export async function markFailed(db: Db, id: string, error: JobError): Promise<boolean> {
  const now = new Date();
  const res = await db.job.updateMany({
    where: { id, status: { in: movableFrom('failed') } },
    data: { status: 'failed', error: json(error), completedAt: now, updatedAt: now },
  });
  return res.count > 0;
}

/** Records the latest retryable error without ending the job. */
export async function recordAttemptError(db: Db, id: string, error: JobError): Promise<void> {
  await db.job.updateMany({ where: { id, status: 'in_progress' }, data: { error: json(error), updatedAt: new Date() } });
}

/** Unfinished jobs not touched for a while: candidates for re-enqueueing when Redis lost them. */
export async function findStaleUnfinished(db: Db, olderThan: Date, limit: number): Promise<{ id: string; apiKeyId: string; status: JobStatus; provider: string; targetIndex: number }[]> {
  return db.job.findMany({
    where: { status: { in: ['queued', 'in_progress'] }, updatedAt: { lt: olderThan } },
    select: { id: true, apiKeyId: true, status: true, provider: true, targetIndex: true },
    orderBy: { updatedAt: 'asc' },
    take: limit,
  });
}

export async function touchJob(db: Db, id: string): Promise<void> {
  await db.job.updateMany({ where: { id, status: { in: ['queued', 'in_progress'] } }, data: { updatedAt: new Date() } });
}

/**
 * queued or in_progress → canceled. A running job is aborted by its worker (it hears the
 * `canceled` event) and its late result is discarded: markSucceeded no longer matches.
 */
export async function markCanceled(db: Db, id: string): Promise<boolean> {
  const now = new Date();
  const res = await db.job.updateMany({
    where: { id, status: { in: movableFrom('canceled') } },
    data: { status: 'canceled', completedAt: now, cancelRequestedAt: now, updatedAt: now },
  });
  return res.count > 0;
}

/** Queued jobs whose deadline passed become expired (never billed: they never ran). */
export async function expireOverdue(db: Db, now = new Date(), limit = 500): Promise<{ id: string; provider: string; targetIndex: number }[]> {
  const due = await db.job.findMany({
    where: { status: 'queued', deadlineAt: { lte: now } },
    select: { id: true, provider: true, targetIndex: true },
    orderBy: { deadlineAt: 'asc' },
    take: limit,
  });
  const expired: typeof due = [];
  for (const job of due) {
    const res = await db.job.updateMany({ where: { id: job.id, status: 'queued' }, data: { status: 'expired', completedAt: now, updatedAt: now } });
    if (res.count > 0) expired.push(job);
  }
  return expired;
}

export interface JobListQuery {
  limit: number;
  /** a job id: the page starts after it (ids sort by creation time) */
  after?: string | undefined;
  status?: JobStatus | undefined;
  createdAfter?: Date | undefined;
  createdBefore?: Date | undefined;
}

/** One key's jobs, newest first, one page past the cursor. */
export async function listJobs(db: Db, apiKeyId: string, q: JobListQuery): Promise<{ jobs: JobRecord[]; hasMore: boolean }> {
  const rows = await db.job.findMany({
    where: {
      apiKeyId,
      ...(q.after ? { id: { lt: q.after } } : {}),
      ...(q.status ? { status: q.status } : {}),
      ...(q.createdAfter || q.createdBefore ? { createdAt: { ...(q.createdAfter ? { gte: q.createdAfter } : {}), ...(q.createdBefore ? { lt: q.createdBefore } : {}) } } : {}),
    },
    include: { usage: true },
    orderBy: { id: 'desc' },
    take: q.limit + 1,
  });
  return { jobs: rows.slice(0, q.limit).map(toRecord), hasMore: rows.length > q.limit };
}
