import { type EditParams, type JobError, type JobInputs, type JobStatus, type JobTarget, movableFrom, newId, type StoredImage, type TokenUsage } from '@image-edits/core';
import { type Db, sendRaw } from './client';
import { Prisma } from './generated/prisma/client';
import { bumpBatch, type Finished, type FinishedJob, finishedFrom, finishedJobFrom } from './batch-counts';
import { hasWebhookTargets } from './webhooks';

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
  /** a batch child: its batch, custom_id and input line */
  batchId: string | null;
  customId: string | null;
  batchLine: number | null;
  /** the provider's own request ids for a target, recorded before waiting on them: a retry resumes them */
  providerRequest: ProviderRequest | null;
  attempts: number;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  /** when a final job's result expires (its outputs are deleted); null while it runs, and for a batch child (it follows its batch's output file) */
  resultExpiresAt: Date | null;
  /** the outputs were deleted (retention, or DELETE): the job says result_expired */
  outputsDeletedAt: Date | null;
  /** erased by DELETE /v1/jobs/{id}: a tombstone kept for usage, not found by its key */
  deletedAt: Date | null;
  /** `details`: the provider's usage in OpenAI's shape (null when it reported no tokens) */
  usage: { images: number; inputTokens: number | null; outputTokens: number | null; costUsd: number; details: TokenUsage | null } | null;
}

export interface ProviderRequest {
  target: number;
  ids: string[];
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
    batchId: row.batchId,
    customId: row.customId,
    batchLine: row.batchLine,
    providerRequest: (row.providerRequest as unknown as ProviderRequest | null) ?? null,
    attempts: row.attempts,
    createdAt: row.createdAt,
    startedAt: row.startedAt,
    completedAt: row.completedAt,
    resultExpiresAt: row.resultExpiresAt,
    outputsDeletedAt: row.outputsDeletedAt,
    deletedAt: row.deletedAt,
    usage: row.usage
      ? { images: row.usage.images, inputTokens: row.usage.inputTokens, outputTokens: row.usage.outputTokens, costUsd: Number(row.usage.costUsd), details: (row.usage.details as unknown as TokenUsage | null) ?? null }
      : null,
  };
}

/** A row as Prisma reads it (with its usage), typed. */
export const toJobRecord = (row: Row): JobRecord => toRecord(row);

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
  /** a batch child (see batches.ts) */
  batch?: { id: string; customId: string; line: number };
  /** seconds its inputs and result are kept once it is final (the key's, or the deployment's default); a batch child's result follows its batch (null) */
  retention?: { inputSeconds: number; resultSeconds: number | null };
}

/** The retention of a job inserted without one (the columns' defaults). */
const DEFAULT_RETENTION = { inputSeconds: 3600, resultSeconds: 604_800 };

export async function insertJob(db: Db, job: NewJob): Promise<JobRecord> {
  // One INSERT, past Prisma (sendRaw): its handling spends several times the round trip in CPU, on the
  // API's hottest path. Timestamps come from this clock, as with Prisma's create (@default(now()), @updatedAt).
  const record = newJobRecord(job, new Date());
  await sendRaw(db, Prisma.sql`INSERT INTO jobs ${JOB_COLUMNS} VALUES ${jobValues(record, job)}`);
  return record;
}

/**
 * Many jobs in one statement (a batch's fan-out, inside its transaction). A job whose id exists is
 * skipped: a fan-out resumed after a crash may write the same (deterministic) ids again.
 */
export async function insertJobs(db: Pick<Db, '$executeRaw'>, jobs: NewJob[], now = new Date()): Promise<number> {
  if (jobs.length === 0) return 0;
  const values = Prisma.join(jobs.map((j) => jobValues(newJobRecord(j, now), j)));
  return db.$executeRaw`INSERT INTO jobs ${JOB_COLUMNS} VALUES ${values} ON CONFLICT (id) DO NOTHING`;
}

// A field added to JobRecord must be set in newJobRecord, and its column in both of these.
const JOB_COLUMNS = Prisma.sql`(id, api_key_id, status, model, provider, targets, target_index, params, inputs, metadata, end_user,
  webhook_url, webhook_events, deadline_at, batch_id, custom_id, batch_line, attempts, created_at, updated_at, input_retention_seconds, result_retention_seconds)`;

function jobValues(r: JobRecord, job: NewJob): Prisma.Sql {
  const retention = { inputSeconds: job.retention?.inputSeconds ?? DEFAULT_RETENTION.inputSeconds, resultSeconds: job.batch ? null : (job.retention?.resultSeconds ?? DEFAULT_RETENTION.resultSeconds) };
  // typed: in a VALUES list of several rows Postgres would read an untyped parameter as text
  return Prisma.sql`(${r.id}::text, ${r.apiKeyId}::text, 'queued'::"JobStatus", ${r.model}::text, ${r.provider}::text, ${JSON.stringify(r.targets)}::jsonb, 0,
    ${JSON.stringify(r.params)}::jsonb, ${JSON.stringify(r.inputs)}::jsonb, ${JSON.stringify(r.metadata)}::jsonb, ${r.endUser}::text,
    ${r.webhookUrl}::text, ${r.webhookEvents}::text[], ${r.deadlineAt}::timestamp(3), ${r.batchId}::text, ${r.customId}::text, ${r.batchLine}::int, 0,
    ${r.createdAt}::timestamp(3), ${r.createdAt}::timestamp(3), ${retention.inputSeconds}::int, ${retention.resultSeconds}::int)`;
}

function newJobRecord(job: NewJob, now: Date): JobRecord {
  return {
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
    batchId: job.batch?.id ?? null,
    customId: job.batch?.customId ?? null,
    batchLine: job.batch?.line ?? null,
    providerRequest: null,
    attempts: 0,
    createdAt: now,
    startedAt: null,
    completedAt: null,
    resultExpiresAt: null,
    outputsDeletedAt: null,
    deletedAt: null,
    usage: null,
  };
}

/** The timestamp columns of RawJobRow: stored as UTC without a zone, which pg alone would read in the process's zone. */
const RAW_JOB_TIMESTAMPS = ['deadline_at', 'cancel_requested_at', 'created_at', 'started_at', 'completed_at', 'result_expires_at', 'outputs_deleted_at', 'deleted_at'];
const RAW_JOB_PLAIN = ['id', 'api_key_id', 'model', 'provider', 'targets', 'target_index', 'params', 'inputs', 'outputs', 'error', 'metadata', 'end_user', 'webhook_url', 'webhook_events', 'batch_id', 'custom_id', 'batch_line', 'provider_request', 'attempts'];
/** RawJobRow's columns of `table` for a statement sent with sendRaw: timestamps as instants, the status as text. */
const rawJobColumns = (table: string) =>
  Prisma.raw(
    [
      ...RAW_JOB_PLAIN.map((c) => `${table}.${c}`),
      `${table}.status::text AS status`,
      ...RAW_JOB_TIMESTAMPS.map((c) => `${table}.${c} AT TIME ZONE 'UTC' AS ${c}`),
    ].join(', '),
  );

export async function getJob(db: Db, id: string): Promise<JobRecord | null> {
  // one round trip, job and usage joined, past Prisma (sendRaw): this read is on every sync answer and every poll
  const rows = await sendRaw<RawJobWithUsage>(db, Prisma.sql`${SELECT_JOB_WITH_USAGE} WHERE j.id = ${id}`);
  return rows[0] ? fromRawRowWithUsage(rows[0]) : null;
}

/** A key sees only its own jobs: another key's id is simply not found, nor is a job it deleted. */
export async function getJobForKey(db: Db, id: string, apiKeyId: string): Promise<JobRecord | null> {
  const rows = await sendRaw<RawJobWithUsage>(db, Prisma.sql`${SELECT_JOB_WITH_USAGE} WHERE j.id = ${id} AND j.api_key_id = ${apiKeyId} AND j.deleted_at IS NULL`);
  return rows[0] ? fromRawRowWithUsage(rows[0]) : null;
}

const SELECT_JOB_WITH_USAGE = Prisma.sql`
  SELECT ${rawJobColumns('j')}, u.images AS usage_images, u.input_tokens AS usage_input_tokens, u.output_tokens AS usage_output_tokens,
         u.cost_usd::text AS usage_cost_usd, u.details AS usage_details
    FROM jobs j LEFT JOIN usage u ON u.job_id = j.id`;

interface RawJobWithUsage extends RawJobRow {
  usage_images: number | null;
  usage_input_tokens: number | null;
  usage_output_tokens: number | null;
  usage_cost_usd: { toString(): string } | null;
  usage_details: unknown;
}

function fromRawRowWithUsage(r: RawJobWithUsage): JobRecord {
  const job = fromRawRow(r);
  if (r.usage_images !== null) {
    job.usage = { images: r.usage_images, inputTokens: r.usage_input_tokens, outputTokens: r.usage_output_tokens, costUsd: Number(r.usage_cost_usd ?? 0), details: (r.usage_details as TokenUsage | null) ?? null };
  }
  return job;
}

/**
 * queued (or in_progress, after a crash or a retry) → in_progress, counting the attempt. Null when
 * the job may not run, or is no longer on `targetIndex` (a stale queue entry after a fallback).
 */
export async function markStarted(db: Db, id: string, targetIndex = 0): Promise<(JobRecord & { hasWebhookTargets: boolean }) | null> {
  // one statement, one round trip (this is on every job's critical path); a job past its deadline
  // never starts: the deadline sweep expires it. started_at is stamped by the first attempt only.
  // A batch child of a batch being cancelled (or past its window) never starts either (one already
  // running goes on): the batch's stop step cancels it.
  const now = new Date();
  // past Prisma (sendRaw), as every job starts here; the columns read as Prisma would read them.
  // Whether it has webhook targets comes with it, so a job with none costs no query per event.
  const rows = await sendRaw<RawJobRow & { has_webhook_targets: boolean }>(
    db,
    Prisma.sql`
    UPDATE jobs SET status = 'in_progress', attempts = attempts + 1, started_at = COALESCE(started_at, ${now}), updated_at = ${now}
    WHERE id = ${id} AND target_index = ${targetIndex} AND status::text = ANY(${movableFrom('in_progress')}::text[])
      AND (deadline_at IS NULL OR deadline_at > ${now})
      AND (batch_id IS NULL OR status = 'in_progress'
           OR NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = jobs.batch_id AND (b.status = 'cancelling' OR b.expired_at IS NOT NULL)))
    RETURNING ${rawJobColumns('jobs')}, ${hasWebhookTargets('jobs')} AS has_webhook_targets`,
  );
  return rows[0] ? { ...fromRawRow(rows[0]), hasWebhookTargets: rows[0].has_webhook_targets === true } : null;
}

/** A `jobs` row as raw SQL returns it (snake_case columns); a column added here goes in RAW_JOB_PLAIN or RAW_JOB_TIMESTAMPS too. */
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
  batch_id: string | null;
  custom_id: string | null;
  batch_line: number | null;
  provider_request: unknown;
  attempts: number;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  result_expires_at: Date | null;
  outputs_deleted_at: Date | null;
  deleted_at: Date | null;
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
    batchId: r.batch_id,
    customId: r.custom_id,
    batchLine: r.batch_line,
    providerRequest: (r.provider_request as ProviderRequest | null) ?? null,
    attempts: r.attempts,
    createdAt: r.created_at,
    startedAt: r.started_at,
    completedAt: r.completed_at,
    resultExpiresAt: r.result_expires_at,
    outputsDeletedAt: r.outputs_deleted_at,
    deletedAt: r.deleted_at,
    usage: null,
  };
}

export interface SuccessInput {
  /** the job as the worker loaded it: the usage row is billed to its key, model and provider */
  job: Pick<JobRecord, 'apiKeyId' | 'model' | 'provider'>;
  outputs: StoredImage[];
  usage: {
    images: number;
    inputTokens?: number | undefined;
    outputTokens?: number | undefined;
    /** the provider's usage in OpenAI's shape, kept whole */
    details?: TokenUsage | undefined;
    size?: string | undefined;
    quality?: string | undefined;
    costUsd: number;
  };
}

/**
 * in_progress → succeeded with its outputs and exactly one usage row, in one statement; a batch child
 * is counted on its batch in the same statement. Null when the job was no longer in progress
 * (canceled meanwhile, or another attempt already finished it).
 */
export async function markSucceeded(db: Db, id: string, input: SuccessInput): Promise<FinishedJob | null> {
  // one statement (atomic on its own): the row moves only if still in progress, and the usage row
  // is written only if it moved, so a job is billed once however many attempts race to finish it.
  // Past Prisma (sendRaw): every job ends here, and its answer is text and booleans
  const now = new Date();
  const job = input.job;
  const u = input.usage;
  const rows = await sendRaw<{ job_id: string; batch_id: string | null; settled: boolean | null; has_webhook_targets: boolean }>(
    db,
    Prisma.sql`
    WITH moved AS (
      UPDATE jobs SET status = 'succeeded', outputs = ${JSON.stringify(input.outputs)}::jsonb, completed_at = ${now}, updated_at = ${now}
      WHERE id = ${id} AND status::text = ANY(${movableFrom('succeeded')}::text[])
      RETURNING id, batch_id, ${hasWebhookTargets('jobs')} AS has_webhook_targets
    ), billed AS (
      INSERT INTO usage (id, job_id, api_key_id, model, provider, images, input_tokens, output_tokens, details, size, quality, cost_usd, created_at, source)
      SELECT ${newId('usage')}, moved.id, ${job.apiKeyId}, ${job.model}, ${job.provider}, ${u.images}, ${u.inputTokens ?? null}::int, ${u.outputTokens ?? null}::int,
             ${u.details ? JSON.stringify(u.details) : null}::jsonb, ${u.size ?? null}::text, ${u.quality ?? null}::text, ${u.costUsd}::numeric, ${now},
             CASE WHEN moved.batch_id IS NULL THEN 'image.edit' ELSE 'batch' END
      FROM moved
      RETURNING job_id
    ), ${bumpBatch('completed', now)}
    SELECT moved.id AS job_id, moved.batch_id, moved.has_webhook_targets, (SELECT settled FROM bumped) AS settled FROM moved`,
  );
  return finishedJobFrom(rows);
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

/** → failed (a batch child is counted on its batch in the same statement); null when the job was already final. */
export async function markFailed(db: Db, id: string, error: JobError): Promise<FinishedJob | null> {
  const now = new Date();
  const rows = await db.$queryRaw<{ batch_id: string | null; settled: boolean | null; has_webhook_targets: boolean }[]>`
    WITH moved AS (
      UPDATE jobs SET status = 'failed', error = ${JSON.stringify(error)}::jsonb, completed_at = ${now}, updated_at = ${now}
      WHERE id = ${id} AND status::text = ANY(${movableFrom('failed')}::text[])
      RETURNING id, batch_id, ${hasWebhookTargets('jobs')} AS has_webhook_targets
    ), ${bumpBatch('failed', now)}
    SELECT moved.batch_id, moved.has_webhook_targets, (SELECT settled FROM bumped) AS settled FROM moved`;
  return finishedJobFrom(rows);
}

/**
 * The provider's request ids for the job's current target, recorded before the worker waits on
 * them: an attempt after a crash or timeout resumes them rather than paying for new ones.
 */
export async function recordProviderRequest(db: Db, id: string, request: ProviderRequest): Promise<void> {
  await db.$executeRaw`UPDATE jobs SET provider_request = ${JSON.stringify(request)}::jsonb, updated_at = ${new Date()}
    WHERE id = ${id} AND status = 'in_progress' AND target_index = ${request.target}`;
}

/** Records the latest retryable error without ending the job. */
export async function recordAttemptError(db: Db, id: string, error: JobError): Promise<void> {
  await db.job.updateMany({ where: { id, status: 'in_progress' }, data: { error: json(error), updatedAt: new Date() } });
}

/** Unfinished jobs not touched for a while: candidates for re-enqueueing when Redis lost them. */
export async function findStaleUnfinished(
  db: Db,
  olderThan: Date,
  limit: number,
): Promise<{ id: string; apiKeyId: string; status: JobStatus; provider: string; targetIndex: number; batchId: string | null }[]> {
  return db.job.findMany({
    where: { status: { in: ['queued', 'in_progress'] }, updatedAt: { lt: olderThan } },
    select: { id: true, apiKeyId: true, status: true, provider: true, targetIndex: true, batchId: true },
    orderBy: { updatedAt: 'asc' },
    take: limit,
  });
}

export async function touchJob(db: Db, id: string): Promise<void> {
  await db.job.updateMany({ where: { id, status: { in: ['queued', 'in_progress'] } }, data: { updatedAt: new Date() } });
}

/**
 * queued or in_progress → canceled. A running job is aborted by its worker (it hears the
 * `canceled` event) and its late result is discarded: markSucceeded no longer matches. A batch
 * child counts as a failed request of its batch (it goes to the error file). Null when already final.
 */
export async function markCanceled(db: Db, id: string): Promise<Finished | null> {
  const now = new Date();
  const rows = await db.$queryRaw<{ batch_id: string | null; settled: boolean | null }[]>`
    WITH moved AS (
      UPDATE jobs SET status = 'canceled', completed_at = ${now}, cancel_requested_at = ${now}, updated_at = ${now}
      WHERE id = ${id} AND status::text = ANY(${movableFrom('canceled')}::text[])
      RETURNING id, batch_id
    ), ${bumpBatch('failed', now)}
    SELECT moved.batch_id, (SELECT settled FROM bumped) AS settled FROM moved`;
  return finishedFrom(rows);
}

/** Queued jobs whose deadline passed become expired (never billed: they never ran); batch children count as failed requests. */
export async function expireOverdue(db: Db, now = new Date(), limit = 500): Promise<({ id: string; provider: string; model: string; targetIndex: number } & Finished)[]> {
  const due = await db.job.findMany({
    where: { status: 'queued', deadlineAt: { lte: now } },
    select: { id: true, provider: true, model: true, targetIndex: true },
    orderBy: { deadlineAt: 'asc' },
    take: limit,
  });
  const expired: ({ id: string; provider: string; model: string; targetIndex: number } & Finished)[] = [];
  for (const job of due) {
    const rows = await db.$queryRaw<{ batch_id: string | null; settled: boolean | null }[]>`
      WITH moved AS (
        UPDATE jobs SET status = 'expired', completed_at = ${now}, updated_at = ${now}
        WHERE id = ${job.id} AND status = 'queued'
        RETURNING id, batch_id
      ), ${bumpBatch('failed', now)}
      SELECT moved.batch_id, (SELECT settled FROM bumped) AS settled FROM moved`;
    const finished = finishedFrom(rows);
    if (finished) expired.push({ ...job, ...finished });
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
      deletedAt: null,
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

/** Which of `ids` have a row in `table` (jobs or files): the orphan sweep keeps their objects. */
export async function existingIds(db: Db, table: 'jobs' | 'files', ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows =
    table === 'jobs'
      ? await db.$queryRaw<{ id: string }[]>`SELECT id FROM jobs WHERE id = ANY(${ids}::text[])`
      : await db.$queryRaw<{ id: string }[]>`SELECT id FROM files WHERE id = ANY(${ids}::text[])`;
  return new Set(rows.map((r) => r.id));
}
