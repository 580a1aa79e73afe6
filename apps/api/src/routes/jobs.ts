import { type Response, Router } from 'express';
import { invalidRequest, isFinal, JOB_STATUSES, type JobStatus, notFound } from '@image-edits/core';
import { getJobForKey, listJobs } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { apiKeyId } from '../middleware/auth';
import { jobObject } from '../presenters';
import { cancelJob } from '../use-cases/cancel-job';
import { waitForJob } from '../use-cases/wait-for-job';

/** The longest a long-poll (`?wait=`) or `Prefer: wait=` may hold a request. */
export const MAX_WAIT_SECONDS = 60;

/** The job resource: read (optionally long-polling), list with a cursor, cancel. */
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
    const createdAfter = intParam(q.created_after, 'created_after', 0, Number.MAX_SAFE_INTEGER);
    const createdBefore = intParam(q.created_before, 'created_before', 0, Number.MAX_SAFE_INTEGER);
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
    res.json(await jobObject(job, deps.store, ttl));
  });

  router.post('/v1/jobs/:id/cancel', async (req, res) => {
    const job = await cancelJob(deps, apiKeyId(res.locals), req.params.id);
    res.json(await jobObject(job, deps.store, ttl));
  });
  return router;
}

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
