import { createHash } from 'node:crypto';
import express, { type Request, type Response, Router } from 'express';
import { invalidRequest, isFinal, newId, notFound, ServiceError } from '@image-edits/core';
import { getJob, type JobRecord } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { apiKeyId } from '../middleware/auth';
import { editResponse, jobObject, publicError } from '../presenters';
import { idempotency, jsonDigest, multipartDigest, recordJob } from '../middleware/idempotency';
import { jsonFormError, resolveJsonEdit, submitEdit } from '@image-edits/edits';
import { MAX_JSON_EDIT_BYTES, tempFiles } from '../json-edit';
import { clientGone, MAX_WAIT_SECONDS } from './jobs';
import { multipartUpload, releaseUploads, uploadedFiles } from '../uploads';
import { type EarlyListener, listenForEnd, waitForJob } from '../use-cases/wait-for-job';

/**
 * POST /v1/images/edits. Without `Prefer: respond-async` the request waits for its job and answers in
 * OpenAI's shape, so the OpenAI SDKs work unchanged; with it, 202 + Location + the job object.
 */
export function editsRouter(deps: ApiDeps): Router {
  const router = Router();
  const replayJob = async (req: Request, res: Response, jobId: string, prefer: string | undefined) => {
    releaseUploads(req);
    const job = await getJob(deps.db, jobId);
    if (!job) throw notFound(`The job ${jobId} created by this Idempotency-Key no longer exists`, 'Idempotency-Key', 'job_not_found');
    await respondWithJob(deps, res, job, prefer);
  };
  const replayable = idempotency(deps, { hash: (req) => multipartDigest(req, uploadedFiles(req), ['cancel-after']), replayJob });
  // the JSON form: the body (key order aside) and Cancel-After; a URL is hashed as given, not fetched
  const replayableJson = idempotency(deps, {
    hash: async (req) => createHash('sha256').update(await jsonDigest(req)).update(`\0${req.get('cancel-after') ?? ''}`).digest('hex'),
    replayJob,
  });

  // JSON form (images by file_id or image_url); anything else goes on to the multipart route
  router.post('/v1/images/edits', onlyJson, express.json({ limit: MAX_JSON_EDIT_BYTES }), replayableJson, async (req, res) => {
    const early = listenBeforeSubmitting(deps, res, parsePrefer(req.get('prefer')));
    const temps = tempFiles(res);
    const job = await early.submitting(() => submitJsonEdit(deps, req, res, temps, early.jobId));
    recordJob(res, job.id);
    // as with multipart: a sync request holds neither the fetched files nor the (up to 68 MB) body while it waits
    temps.release();
    req.body = undefined;
    await respondWithJob(deps, res, job, req.get('prefer'), early.listener);
  });
  router.post('/v1/images/edits', requireMultipart, multipartUpload(deps.uploadDir), replayable, async (req, res) => {
    // a malformed Prefer is refused before anything is stored
    const early = listenBeforeSubmitting(deps, res, parsePrefer(req.get('prefer')));
    const job = await early.submitting(() =>
      submitEdit(deps, { jobId: early.jobId, apiKeyId: apiKeyId(res.locals), fields: req.body ?? {}, files: uploadedFiles(req), cancelAfter: req.get('cancel-after') }),
    );
    recordJob(res, job.id);
    // the inputs are in S3 now: a sync request does not hold their bytes (or disk) while it waits
    releaseUploads(req);
    await respondWithJob(deps, res, job, req.get('prefer'), early.listener);
  });
  return router;
}

async function submitJsonEdit(deps: ApiDeps, req: Request, res: Response, temps: { add(path: string): void }, jobId: string): Promise<JobRecord> {
  const key = apiKeyId(res.locals);
  const input = await resolveJsonEdit(deps, key, req.body, temps, clientGone(res));
  try {
    return await submitEdit(deps, { jobId, apiKeyId: key, fields: input.fields, files: input.files, cancelAfter: req.get('cancel-after') });
  } catch (err) {
    throw jsonFormError(err);
  }
}

/** How long a request that prefers `prefer` waits for its job (ms); undefined: it does not wait. */
function waitMs(deps: ApiDeps, prefer: ReturnType<typeof parsePrefer>): number | undefined {
  if (prefer.wait !== undefined) return Math.min(prefer.wait, MAX_WAIT_SECONDS) * 1000;
  return prefer.respondAsync ? undefined : deps.config.env.SYNC_TIMEOUT_SECONDS * 1000;
}

/**
 * The job's id is chosen before it is submitted, so that a request that will wait for it listens
 * for its end before it is enqueued (no read of the row needed before waiting); a failed submission
 * stops the listening.
 */
function listenBeforeSubmitting(deps: ApiDeps, res: Response, prefer: ReturnType<typeof parsePrefer>) {
  const jobId = newId('job');
  const ms = waitMs(deps, prefer);
  const listener = ms === undefined ? undefined : listenForEnd(deps, jobId, ms, clientGone(res));
  return {
    jobId,
    listener,
    async submitting(submit: () => Promise<JobRecord>): Promise<JobRecord> {
      try {
        return await submit();
      } catch (err) {
        listener?.cancel();
        throw err;
      }
    },
  };
}

/** Answers for a submitted job as the request preferred: the job object (async, wait=N) or OpenAI's shape (sync). */
async function respondWithJob(deps: ApiDeps, res: Response, job: JobRecord, preferHeader: string | undefined, early?: EarlyListener): Promise<void> {
  const ttl = deps.config.env.SIGNED_URL_TTL_SECONDS;
  const location = `/v1/jobs/${job.id}`;
  res.set('x-job-id', job.id);
  const prefer = parsePrefer(preferHeader);
  const ms = waitMs(deps, prefer);
  if (prefer.wait !== undefined) {
    // Replicate's `Prefer: wait=N`: the job object, final (200) or not yet (202 + Location)
    const gone = clientGone(res);
    const now = isFinal(job.status) ? job : ((await waitForJob(deps, job.id, ms!, gone, early)) ?? job);
    if (gone.aborted) return;
    res.set('preference-applied', `wait=${ms! / 1000}`);
    if (!isFinal(now.status)) res.status(202).location(location);
    res.json(await jobObject(now, deps.store, ttl));
    return;
  }
  if (prefer.respondAsync) {
    res.set('preference-applied', 'respond-async');
    res.status(202).location(location).json(await jobObject(job, deps.store, ttl));
    return;
  }

  // The job goes on if the client disconnects; only the waiting stops.
  const gone = clientGone(res);
  const done = isFinal(job.status) ? job : await waitForJob(deps, job.id, ms!, gone, early);
  if (gone.aborted) return;
  if (!done || !isFinal(done.status)) {
    // x-should-retry: false keeps the OpenAI SDKs from submitting the same edit again
    res.set('x-should-retry', 'false').location(location);
    res.status(504).json({
      error: { message: `The edit is still running as job ${job.id}; fetch GET ${location} for its result`, type: 'server_error', param: null, code: 'sync_wait_timeout' },
    });
    return;
  }
  if (done.status === 'succeeded') {
    res.json(await editResponse(done, deps.store, ttl));
    return;
  }
  const status = done.error?.status ?? (done.status === 'canceled' ? 409 : done.status === 'expired' ? 408 : 500);
  const error = done.error ? publicError(done.error) : { message: `The job was ${done.status} before it finished`, type: 'invalid_request_error', code: `job_${done.status}` };
  res.set('x-should-retry', status >= 500 ? 'true' : 'false').status(status).json({ error: { param: null, ...error } });
}

const onlyJson: express.RequestHandler = (req, _res, next) => next(req.is('application/json') ? undefined : 'route');

const requireMultipart: import('express').RequestHandler = (req, _res, next) => {
  if (req.is('multipart/form-data')) return next();
  next(
    new ServiceError(415, 'invalid_request_error', `Content-Type must be multipart/form-data with the image file(s) and fields, or application/json with images by file_id or image_url; got '${req.get('content-type') ?? 'none'}'`, {
      code: 'unsupported_media_type',
    }),
  );
};

/** RFC 7240 preferences this endpoint honours: `respond-async` and `wait=N` (seconds). */
export function parsePrefer(prefer: string | undefined): { respondAsync: boolean; wait?: number } {
  const out: { respondAsync: boolean; wait?: number } = { respondAsync: false };
  for (const part of (prefer ?? '').split(',')) {
    const [name, value] = part.trim().split(';')[0]!.split('=').map((x) => x?.trim().toLowerCase());
    if (name === 'respond-async') out.respondAsync = true;
    if (name === 'wait') {
      const n = Number(value);
      if (!value || !Number.isFinite(n) || n < 0) throw invalidRequest(`Prefer: wait must be a number of seconds; got '${value ?? ''}'`, 'Prefer', 'invalid_value');
      out.wait = Math.floor(n);
    }
  }
  return out;
}

