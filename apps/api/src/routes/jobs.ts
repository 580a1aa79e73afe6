import { type Response, Router } from 'express';
import { invalidRequest, isDependencyError, isFinal, JOB_STATUSES, type JobStatus, notFound } from '@image-edits/core';
import { getJob, getJobForKey, type JobRecord, listJobs } from '@image-edits/db';
import { isStreamId } from '@image-edits/queue';
import { openEventStream } from '../sse';
import { followJob } from '../use-cases/follow-job';
import type { ApiDeps } from '../deps';
import { apiKeyId } from '../middleware/auth';
import { jobObject } from '../presenters';
import { cancelJob } from '../use-cases/cancel-job';
import { deleteJob } from '../use-cases/delete-job';
import { waitForJob } from '../use-cases/wait-for-job';

/** The longest a long-poll (`?wait=`) or `Prefer: wait=` may hold a request. */
export const MAX_WAIT_SECONDS = 60;

/** The job resource: read (optionally long-polling), list with a cursor, cancel, delete. */
export function jobsRouter(deps: ApiDeps): Router {
  const router = Router();
  const ttl = deps.config.env.SIGNED_URL_TTL_SECONDS;

  router.get('/v1/jobs', async (req, res) => {
    const q = req.query;
    const limit = intParam(q.limit, 'limit', 1, 100) ?? 20;
    const status = q.status === undefined ? undefined : String(q.status);
    if (status !== undefined && !(JOB_STATUSES as readonly string[]).includes(status)) {
      throw invalidRequest(`status must be one of ${JOB_STATUSES.join(', ')}`, 'status', 'invalid_value');
    }
    // Unix seconds up to the end of year 9999: a larger one is no date Postgres (or a JS Date) can compare with
    const createdAfter = intParam(q.created_after, 'created_after', 0, MAX_UNIX_SECONDS);
    const createdBefore = intParam(q.created_before, 'created_before', 0, MAX_UNIX_SECONDS);
    const after = q.after === undefined ? undefined : String(q.after);
    if (after !== undefined && !/^job_[0-9a-z]+$/.test(after)) throw invalidRequest('after must be a job id (the last_id of the previous page)', 'after', 'invalid_value');
    const page = await listJobs(deps.db, apiKeyId(res.locals), {
      limit,
      after,
      status: status as JobStatus | undefined,
      createdAfter: createdAfter === undefined ? undefined : new Date(createdAfter * 1000),
      createdBefore: createdBefore === undefined ? undefined : new Date(createdBefore * 1000),
    });
    const data = await Promise.all(page.jobs.map((j) => jobObject(j, deps.store, ttl)));
    res.json({ object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore });
  });

  router.get('/v1/jobs/:id', async (req, res) => {
    const key = apiKeyId(res.locals);
    // another key's job is "not found", never "forbidden": ids do not leak across keys
    let job = await getJobForKey(deps.db, req.params.id, key);
    if (!job) throw notFound(`No job with id '${req.params.id}'`, 'id', 'job_not_found');
    const wait = intParam(req.query.wait, 'wait', 0, MAX_WAIT_SECONDS);
    if (wait && !isFinal(job.status)) {
      // long-poll: answers as soon as the job is final (signalled over Redis, no polling per waiter)
      const gone = clientGone(res);
      job = (await waitForJob(deps, job.id, wait * 1000, gone)) ?? job;
      if (gone.aborted) return;
    }
    res.json(await jobObject(job, deps.store, ttl, { queuePosition: job.status === 'queued' ? await queuePosition(deps, job) : null }));
  });

  router.get('/v1/jobs/:id/events', async (req, res) => {
    const job = await getJobForKey(deps.db, req.params.id, apiKeyId(res.locals));
    if (!job) throw notFound(`No job with id '${req.params.id}'`, 'id', 'job_not_found');
    const lastEventId = req.get('last-event-id') ?? (typeof req.query.last_event_id === 'string' ? req.query.last_event_id : undefined);
    if (lastEventId !== undefined && !isStreamId(lastEventId)) throw invalidRequest('Last-Event-ID must be the id of an event this stream sent', 'Last-Event-ID', 'invalid_value');
    await streamJobEvents(deps, res, job, lastEventId);
  });

  router.post('/v1/jobs/:id/cancel', async (req, res) => {
    const job = await cancelJob(deps, apiKeyId(res.locals), req.params.id);
    res.json(await jobObject(job, deps.store, ttl));
  });

  // erasure: the job's images, prompt and metadata at once; OpenAI's deleted shape
  router.delete('/v1/jobs/:id', async (req, res) => {
    res.json(await deleteJob(deps, apiKeyId(res.locals), req.params.id));
  });
  return router;
}

/** While a job is queued its place in line is looked at this often; otherwise a keep-alive goes out this often. */
const QUEUED_TICK_MS = 2000;
const RUNNING_TICK_MS = 15_000;

/**
 * GET /v1/jobs/{id}/events, Server-Sent Events: `status` (with `queue_position` while queued), the
 * job's `partial_image`s when its submission asked for them, and `job` (the final job object), after
 * which the stream ends. Events from the job's stream carry ids: a client that reconnects with
 * `Last-Event-ID` gets what it missed, on any API process. Works across any number of API and
 * worker processes: the worker appends to the job's stream in Redis, this process hears of it
 * through its one subscription.
 */
async function streamJobEvents(deps: ApiDeps, res: Response, job: JobRecord, lastEventId: string | undefined): Promise<void> {
  const ttl = deps.config.env.SIGNED_URL_TTL_SECONDS;
  const sse = openEventStream(res);
  const gone = AbortSignal.any([clientGone(res), deps.lifecycle.waitDeadline]);
  let current = job;
  let position: number | null | undefined;
  let lastId = lastEventId;
  const status = async () => {
    position = current.status === 'queued' ? await queuePosition(deps, current) : null;
    sse.send('status', { status: current.status, ...(current.status === 'queued' ? { queue_position: position } : {}) });
  };
  const finish = async () => {
    sse.send('job', await jobObject(current, deps.store, ttl, { queuePosition: null }), lastId);
    sse.end();
  };
  await status();
  if (isFinal(current.status) && lastEventId === undefined) return finish();
  for await (const item of followJob(deps, job.id, lastEventId ?? '0', gone, () => (current.status === 'queued' ? QUEUED_TICK_MS : RUNNING_TICK_MS))) {
    if (item !== 'tick') {
      lastId = item.id;
      const entry = item.entry;
      if (entry.type === 'partial') {
        sse.send('partial_image', { partial_image_index: entry.index, b64_json: entry.b64, size: `${entry.width}x${entry.height}`, output_format: entry.format }, item.id);
        continue;
      }
      sse.send('status', { status: entry.status }, item.id);
      if (!isFinal(entry.status as JobStatus)) {
        if (JOB_STATUSES.includes(entry.status as JobStatus)) current = { ...current, status: entry.status as JobStatus };
        continue;
      }
    }
    // a final event, or time passed: the row says where the job is (an event may have been lost)
    const row = await getJob(deps.db, job.id).catch((err: unknown) => {
      if (isDependencyError(err)) return null;
      throw err;
    });
    if (row) current = row;
    if (isFinal(current.status)) return finish();
    if (current.status === 'queued') {
      const before = position;
      position = await queuePosition(deps, current);
      if (position !== before) sse.send('status', { status: 'queued', queue_position: position });
      else sse.comment('keep-alive');
    } else if (item === 'tick') sse.comment('keep-alive');
  }
  sse.end();
}

/** How many jobs are ahead of a queued one on its provider's queue (null when not in line, or Redis is away). */
export async function queuePosition(deps: Pick<ApiDeps, 'queue' | 'logger'>, job: Pick<JobRecord, 'id' | 'provider' | 'targetIndex'>): Promise<number | null> {
  return deps.queue.position(job.provider, { jobId: job.id, target: job.targetIndex }).catch((err: unknown) => {
    deps.logger.warn({ err, jobId: job.id }, 'queue position unavailable');
    return null;
  });
}

/** 9999-12-31T23:59:59Z */
const MAX_UNIX_SECONDS = 253_402_300_799;

/** An optional integer query parameter within bounds; anything else is a 400 naming it. */
function intParam(value: unknown, name: string, min: number, max: number): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !Number.isInteger(n) || n < min || n > max) throw invalidRequest(`${name} must be an integer from ${min} to ${max}`, name, 'invalid_value');
  return n;
}

/** Aborts when the client goes away: waiting stops, the job goes on. */
export function clientGone(res: Response): AbortSignal {
  // one per response, however many parts of the request ask
  const known = res.locals.clientGone as AbortSignal | undefined;
  if (known) return known;
  const gone = new AbortController();
  res.on('close', () => gone.abort());
  res.locals.clientGone = gone.signal;
  return gone.signal;
}
