import { type Response, Router } from 'express';
import { getJobQuery, invalidRequest, isDependencyError, isFinal, JOB_STATUSES, jobEventsHeaders, jobEventsQuery, jobIdParams, type JobStatus, listJobsQuery, MAX_WAIT_SECONDS, notFound, parseInput } from '@image-edits/core';
import { getJob, getJobForKey, type JobRecord, listJobs } from '@image-edits/db';
import { type PartialImageEntry, readJobStream } from '@image-edits/queue';
import { openEventStream } from '../sse';
import { followJob } from '../use-cases/follow-job';
import type { ApiDeps } from '../deps';
import { apiKeyId } from '../middleware/auth';
import { jobObject } from '../presenters';
import { cancelJob } from '../use-cases/cancel-job';
import { deleteJob } from '../use-cases/delete-job';
import { waitForJob } from '../use-cases/wait-for-job';

export { MAX_WAIT_SECONDS };

/** The job resource: read (optionally long-polling), list with a cursor, cancel, delete. */
export function jobsRouter(deps: ApiDeps): Router {
  const router = Router();
  const ttl = deps.config.env.SIGNED_URL_TTL_SECONDS;

  router.get('/v1/jobs', async (req, res) => {
    const q = parseInput(listJobsQuery, req.query);
    const page = await listJobs(deps.db, apiKeyId(res.locals), {
      limit: q.limit ?? 20,
      after: q.after,
      status: q.status,
      createdAfter: q.created_after === undefined ? undefined : new Date(q.created_after * 1000),
      createdBefore: q.created_before === undefined ? undefined : new Date(q.created_before * 1000),
    });
    // a page of jobs links its images (fresh presigned URLs) rather than embedding them: a page of
    // b64_json jobs would be tens of megabytes; GET /v1/jobs/{id} gives one job in its own format
    const data = await Promise.all(page.jobs.map((j) => jobObject(j, deps.store, ttl, { urlsOnly: true })));
    res.json({ object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore });
  });

  router.get('/v1/jobs/:id', async (req, res) => {
    const key = apiKeyId(res.locals);
    const { id } = parseInput(jobIdParams, req.params);
    // another key's job is "not found", never "forbidden": ids do not leak across keys
    let job = await getJobForKey(deps.db, id, key);
    if (!job) throw notFound(`No job with id '${id}'`, 'id', 'job_not_found');
    const { wait } = parseInput(getJobQuery, req.query);
    if (wait && !isFinal(job.status)) {
      // long-poll: answers as soon as the job is final (signalled over Redis, no polling per waiter)
      const gone = clientGone(res);
      job = (await waitForJob(deps, job.id, wait * 1000, gone)) ?? job;
      if (gone.aborted) return;
    }
    res.json(await jobObject(job, deps.store, ttl, { queuePosition: job.status === 'queued' ? await queuePosition(deps, job) : null }));
  });

  router.get('/v1/jobs/:id/events', async (req, res) => {
    const { id } = parseInput(jobIdParams, req.params);
    const job = await getJobForKey(deps.db, id, apiKeyId(res.locals));
    if (!job) throw notFound(`No job with id '${id}'`, 'id', 'job_not_found');
    // the header (EventSource sends it when it reconnects), else the query; either is named Last-Event-ID
    const header = req.get('last-event-id');
    const lastEventId =
      header !== undefined
        ? parseInput(jobEventsHeaders, { 'Last-Event-ID': header })['Last-Event-ID']
        : parseInput(jobEventsQuery, { last_event_id: typeof req.query.last_event_id === 'string' ? req.query.last_event_id : undefined }, { orElse: lastEventIdError }).last_event_id;
    await streamJobEvents(deps, res, job, lastEventId);
  });

  router.post('/v1/jobs/:id/cancel', async (req, res) => {
    const job = await cancelJob(deps, apiKeyId(res.locals), parseInput(jobIdParams, req.params).id);
    res.json(await jobObject(job, deps.store, ttl));
  });

  // erasure: the job's images, prompt and metadata at once; OpenAI's deleted shape
  router.delete('/v1/jobs/:id', async (req, res) => {
    res.json(await deleteJob(deps, apiKeyId(res.locals), parseInput(jobIdParams, req.params).id));
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
  const sendPartial = (id: string, p: PartialImageEntry) => {
    lastId = id;
    sse.send('partial_image', { partial_image_index: p.index, b64_json: p.b64, size: `${p.width}x${p.height}`, output_format: p.format }, id);
  };
  const finish = async () => {
    sse.send('job', await jobObject(current, deps.store, ttl, { queuePosition: null }), lastId);
    sse.end();
  };
  await status();
  if (isFinal(current.status)) {
    // a finished job: the partial images it had (after Last-Event-ID), then the job
    for (const e of await readJobStream(deps.redis, deps.config.env.QUEUE_PREFIX, job.id, lastEventId ?? '0').catch(() => [])) sendPartial(e.id, e.partial);
    return finish();
  }
  for await (const item of followJob(deps, job.id, lastEventId ?? '0', gone, () => (current.status === 'queued' ? QUEUED_TICK_MS : RUNNING_TICK_MS))) {
    if (item !== 'tick' && item.kind === 'partial') {
      sendPartial(item.id, item.partial);
      continue;
    }
    if (item !== 'tick' && !isFinal(item.status as JobStatus)) {
      if (JOB_STATUSES.includes(item.status as JobStatus) && item.status !== current.status) {
        current = { ...current, status: item.status as JobStatus };
        await status();
      }
      continue;
    }
    // a final event, or time passed: the row says where the job is (an announcement may have been lost)
    const row = await getJob(deps.db, job.id).catch((err: unknown) => {
      if (isDependencyError(err)) return null;
      throw err;
    });
    if (row) {
      const moved = row.status !== current.status;
      current = row;
      if (isFinal(current.status)) {
        await status();
        return finish();
      }
      if (moved) {
        await status();
        continue;
      }
    }
    if (current.status === 'queued') {
      const before = position;
      position = await queuePosition(deps, current);
      if (position !== before) sse.send('status', { status: 'queued', queue_position: position });
      else sse.comment('keep-alive');
    } else sse.comment('keep-alive');
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

/** `?last_event_id=` stands for the Last-Event-ID header: its refusal names the header, as it always did. */
const lastEventIdError = (issue: { message: string }) => invalidRequest(issue.message, 'Last-Event-ID', 'invalid_value');

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
