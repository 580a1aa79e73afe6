import { createHash } from 'node:crypto';
import express, { type Request, type Response, Router } from 'express';
import { Base64Text, isDependencyError, isFinal, type JobStatus, type MediaSource, newId, notFound, RESULT_EXPIRED_ERROR, resultExpired, ServiceError } from '@image-edits/core';
import { editHeaders, parseInput, type Prefer } from '@image-edits/core';
import { getJob, getJobForKey, type JobRecord } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { apiKeyId } from '../middleware/auth';
import { editResponse, jobObject, publicError } from '../presenters';
import { idempotency, jsonDigest, multipartDigest, recordJob } from '../middleware/idempotency';
import { keyRetention, limitImages } from '../middleware/limits';
import { jsonFormError, resolveJsonEdit, type SubmittedEdit, submitEdit } from '@image-edits/edits';
import { MAX_JSON_EDIT_BYTES, tempFiles } from '../json-edit';
import { clientGone, MAX_WAIT_SECONDS } from './jobs';
import { multipartUpload, releaseUploads, uploadedFiles } from '../uploads';
import { type EarlyListener, listenForEnd, waitForJob } from '../use-cases/wait-for-job';
import { type RetryNotes, retryNotes } from '../retry-attach';
import { inlineOutputKey } from '@image-edits/queue';
import { openEventStream } from '../sse';
import { sendJson } from '../send-json';
import { followJob } from '../use-cases/follow-job';

/**
 * POST /v1/images/edits. Without `Prefer: respond-async` the request waits for its job and answers in
 * OpenAI's shape, so the OpenAI SDKs work unchanged; with it, 202 + Location + the job object.
 */
export function editsRouter(deps: ApiDeps): Router {
  const router = Router();
  const notes = retryNotes(deps);
  const replayJob = async (req: Request, res: Response, jobId: string, prefer: string | undefined) => {
    releaseUploads(req);
    const job = await getJob(deps.db, jobId);
    if (!job) throw notFound(`The job ${jobId} created by this Idempotency-Key no longer exists`, 'Idempotency-Key', 'job_not_found');
    await respondWithJob(deps, req, res, job, { prefer: parsePrefer(prefer), notes });
  };
  /**
   * A synchronous request that repeats an earlier try of the same key (see retry-attach.ts) answers
   * for that try's job instead of submitting again. True when it did.
   */
  const attached = async (req: Request, res: Response, digest: string | undefined, release: () => void): Promise<boolean> => {
    const jobId = digest ? await notes.find(req, res, digest) : undefined;
    const job = jobId ? await getJobForKey(deps.db, jobId, apiKeyId(res.locals)) : null;
    if (!job) return false;
    release();
    req.log?.info({ jobId: job.id }, 'a retry of an earlier try: answering for its job');
    res.set('x-retry-attached', 'true');
    await respondWithJob(deps, req, res, job, { prefer: parsePrefer(req.get('prefer')), notes, digest });
    return true;
  };
  // when the request arrived: a client's own timeout counts from its send
  router.use('/v1/images/edits', (_req, res, next) => {
    res.locals.receivedAt ??= Date.now();
    next();
  });
  const replayable = idempotency(deps, { hash: (req) => multipartDigest(req, uploadedFiles(req), ['cancel-after']), replayJob });
  // the JSON form: the body (key order aside) and Cancel-After; a URL is hashed as given, not fetched
  const replayableJson = idempotency(deps, {
    hash: async (req) => createHash('sha256').update(await jsonDigest(req)).update(`\0${req.get('cancel-after') ?? ''}`).digest('hex'),
    replayJob,
  });

  // JSON form (images by file_id or image_url); anything else goes on to the multipart route
  // the key's images per minute, once the request's n is known (a replay above takes none)
  const images = limitImages(deps);
  router.post('/v1/images/edits', onlyJson, express.json({ limit: MAX_JSON_EDIT_BYTES }), replayableJson, images, async (req, res) => {
    const prefer = parsePrefer(req.get('prefer'));
    const temps = tempFiles(res);
    const digest = isSync(prefer) ? createHash('sha256').update(await jsonDigest(req)).update(`\0${req.get('cancel-after') ?? ''}`).digest('hex') : undefined;
    if (await attached(req, res, digest, () => temps.release())) return;
    const early = listenBeforeSubmitting(deps, req, res, prefer);
    const submitted = await early.submitting(() => submitJsonEdit(deps, req, res, temps, early.jobId, isSync(prefer)));
    recordJob(res, submitted.job.id);
    // as with multipart: a sync request holds neither the fetched files nor the (up to 68 MB) body while it waits
    temps.release();
    req.body = undefined;
    await respondWithJob(deps, req, res, submitted.job, { prefer, notes, digest, early: early.listener, enqueued: submitted.enqueued });
  });
  router.post('/v1/images/edits', requireMultipart, multipartUpload(deps.uploadDir), replayable, images, async (req, res) => {
    // a malformed Prefer is refused before anything is stored
    const prefer = parsePrefer(req.get('prefer'));
    const digest = isSync(prefer) ? await multipartDigest(req, uploadedFiles(req), ['cancel-after']) : undefined;
    if (await attached(req, res, digest, () => releaseUploads(req))) return;
    const early = listenBeforeSubmitting(deps, req, res, prefer);
    const submitted = await early.submitting(() =>
      submitEdit(deps, {
        jobId: early.jobId,
        apiKeyId: apiKeyId(res.locals),
        fields: req.body ?? {},
        files: uploadedFiles(req),
        cancelAfter: req.get('cancel-after'),
        retention: keyRetention(res.locals, deps.config.env),
        inlineResult: isSync(prefer),
      }),
    );
    recordJob(res, submitted.job.id);
    // the inputs are in S3 now: a sync request does not hold their bytes (or disk) while it waits
    releaseUploads(req);
    await respondWithJob(deps, req, res, submitted.job, { prefer, notes, digest, early: early.listener, enqueued: submitted.enqueued });
  });
  return router;
}

/** OpenAI's synchronous mode: no `Prefer: respond-async` and no `Prefer: wait=N` (those answer with the job object). */
const isSync = (prefer: Prefer) => !prefer.respondAsync && prefer.wait === undefined;

async function submitJsonEdit(deps: ApiDeps, req: Request, res: Response, temps: { add(path: string): void }, jobId: string, inlineResult: boolean): Promise<SubmittedEdit> {
  const key = apiKeyId(res.locals);
  const input = await resolveJsonEdit(deps, key, req.body, temps, clientGone(res));
  try {
    return await submitEdit(deps, { jobId, apiKeyId: key, fields: input.fields, files: input.files, cancelAfter: req.get('cancel-after'), retention: keyRetention(res.locals, deps.config.env), inlineResult });
  } catch (err) {
    throw jsonFormError(err);
  }
}

/**
 * How long a request waits for its job (ms); undefined: it does not wait. A synchronous one answers
 * (504 + Location) before the client's own deadline: SYNC_TIMEOUT_SECONDS (below Node fetch's 300 s
 * header timeout by default), or sooner when the client says its timeout (the OpenAI SDKs'
 * `X-Stainless-Timeout`, `X-Stainless-Read-Timeout`, in seconds, counted from when it sent).
 */
function waitMs(deps: ApiDeps, req: Request, res: Response, prefer: Prefer): number | undefined {
  if (prefer.wait !== undefined) return Math.min(prefer.wait, MAX_WAIT_SECONDS) * 1000;
  if (prefer.respondAsync) return undefined;
  let ms = deps.config.env.SYNC_TIMEOUT_SECONDS * 1000;
  for (const header of ['x-stainless-timeout', 'x-stainless-read-timeout']) {
    const seconds = Number(req.get(header));
    if (!req.get(header) || !Number.isFinite(seconds) || seconds <= 0) continue;
    // answer well before the client gives up (its clock started before its upload): a tenth of its timeout, 1 to 5 s
    const margin = Math.min(5000, Math.max(1000, seconds * 100));
    const elapsed = Date.now() - ((res.locals.receivedAt as number | undefined) ?? Date.now());
    ms = Math.min(ms, Math.max(0, seconds * 1000 - margin - elapsed));
  }
  return ms;
}

/**
 * The job's id is chosen before it is submitted, so that a request that will wait for it listens
 * for its end before it is enqueued (no read of the row needed before waiting); a failed submission
 * stops the listening.
 */
function listenBeforeSubmitting(deps: ApiDeps, req: Request, res: Response, prefer: Prefer) {
  const jobId = newId('job');
  const ms = waitMs(deps, req, res, prefer);
  const listener = ms === undefined ? undefined : listenForEnd(deps, jobId, ms, AbortSignal.any([clientGone(res), deps.lifecycle.waitDeadline]));
  return {
    jobId,
    listener,
    async submitting(submit: () => Promise<SubmittedEdit>): Promise<SubmittedEdit> {
      try {
        return await submit();
      } catch (err) {
        listener?.cancel();
        throw err;
      }
    },
  };
}

interface RespondOptions {
  prefer: Prefer;
  notes: RetryNotes;
  /** the request's digest (synchronous requests): a retry of an unanswered one attaches to the job */
  digest?: string | undefined;
  early?: EarlyListener | undefined;
  /** false: the queue did not confirm (Redis away); the reconciler enqueues it, the answer does not wait */
  enqueued?: boolean;
}

/**
 * Answers for a submitted job as the request preferred: the job object (async, wait=N) or OpenAI's
 * shape (sync). The job exists from here on, so no answer invites a second submission: every one
 * carries `x-job-id`, `Location` and `x-should-retry: false`, and the wait goes on through our own
 * outages (a read that fails is read again) until its deadline, which answers 504 with the job's URL.
 */
async function respondWithJob(deps: ApiDeps, req: Request, res: Response, job: JobRecord, opts: RespondOptions): Promise<void> {
  const ttl = deps.config.env.SIGNED_URL_TTL_SECONDS;
  const location = `/v1/jobs/${job.id}`;
  res.set({ 'x-job-id': job.id, 'x-should-retry': 'false' }).location(location);
  const { prefer } = opts;
  // `stream: true` (OpenAI's SSE answer) unless the client prefers the job object
  if (job.params.stream && !prefer.respondAsync && prefer.wait === undefined) {
    opts.early?.cancel();
    await streamEdit(deps, res, job);
    return;
  }
  const ms = opts.enqueued === false ? undefined : waitMs(deps, req, res, prefer);
  if (ms === undefined) {
    // respond-async, or the queue is away: the job is stored, the reconciler enqueues it
    if (prefer.respondAsync) res.set('preference-applied', 'respond-async');
    res.status(202).json(await jobObject(job, deps.store, ttl));
    return;
  }
  // the job goes on if the client disconnects or this process shuts down; only the waiting stops
  const gone = clientGone(res);
  const stop = AbortSignal.any([gone, deps.lifecycle.waitDeadline]);
  if (opts.digest && !isFinal(job.status)) opts.notes.submitted(res, opts.digest, job.id, ms);
  const done = isFinal(job.status) ? job : ((await waitForJob(deps, job.id, ms, stop, opts.early)) ?? job);
  const unanswered = !isFinal(done.status);
  if (unanswered && opts.digest) opts.notes.unanswered(res, opts.digest, job.id);
  if (gone.aborted) return;

  if (prefer.wait !== undefined) {
    // Replicate's `Prefer: wait=N`: the job object, final (200) or not yet (202 + Location)
    res.set('preference-applied', `wait=${ms / 1000}`);
    res.status(unanswered ? 202 : 200).json(await jobObject(done, deps.store, ttl));
    return;
  }
  if (unanswered) {
    res.status(504).json({
      error: { message: `The edit is still running as job ${job.id}; fetch GET ${location} for its result`, type: 'server_error', param: null, code: 'sync_wait_timeout' },
    });
    return;
  }
  if (done.status === 'succeeded') {
    // a replay or retry of a job whose images are gone (retention, DELETE): said so, never a 500
    if (resultExpired(done)) res.status(410).json({ error: RESULT_EXPIRED_ERROR });
    else sendJson(res, await editResponse(done, handedBack(deps), ttl));
    return;
  }
  const status = done.error?.status ?? (done.status === 'canceled' ? 409 : done.status === 'expired' ? 408 : 500);
  const error = done.error ? publicError(done.error) : { message: `The job was ${done.status} before it finished`, type: 'invalid_request_error', code: `job_${done.status}` };
  res.status(status).json({ error: { param: null, ...error } });
}

/** Between two events of a streamed edit: a keep-alive comment, and the row is read again in case an event was lost. */
const STREAM_TICK_MS = 5000;

/**
 * A streamed edit, as OpenAI streams it: `image_edit.partial_image` events as the provider sends them
 * (relayed by the worker through Redis to whichever API process holds the stream), then one
 * `image_edit.completed` per image, or an `error` event. The edit is still a durable job: keep-alive
 * comments while it waits, and a client that leaves does not stop it.
 */
async function streamEdit(deps: ApiDeps, res: Response, job: JobRecord): Promise<void> {
  const sse = openEventStream(res);
  const gone = clientGone(res);
  const stop = AbortSignal.any([gone, deps.lifecycle.waitDeadline]);
  const quality = job.params.quality ?? 'auto';
  const background = job.params.background ?? 'auto';
  const readFinal = async () => {
    const row = await getJob(deps.db, job.id).catch((err: unknown) => {
      if (isDependencyError(err)) return null; // our database is away: the next tick reads again
      throw err;
    });
    return row && isFinal(row.status) ? row : null;
  };
  let final = isFinal(job.status) ? job : null;
  if (!final) {
    for await (const item of followJob(deps, job.id, '0', stop, () => STREAM_TICK_MS)) {
      if (item !== 'tick' && item.kind === 'partial') {
        const p = item.partial;
        sse.send('image_edit.partial_image', {
          type: 'image_edit.partial_image',
          b64_json: p.b64,
          created_at: Math.floor(Date.now() / 1000),
          size: `${p.width}x${p.height}`,
          quality,
          background,
          output_format: p.format,
          partial_image_index: p.index,
        });
        continue;
      }
      if (item === 'tick' || isFinal(item.status as JobStatus)) {
        final = await readFinal();
        if (final) break;
      }
      if (item === 'tick') sse.comment(job.status === 'queued' ? 'waiting' : 'keep-alive');
    }
  }
  if (gone.aborted) return; // the job goes on; GET /v1/jobs/{id} has it
  if (!final) {
    // this process is shutting down: the client learns where the job is
    sse.send('error', { type: 'error', error: { message: `The edit is still running as job ${job.id}; fetch GET /v1/jobs/${job.id} for its result`, type: 'server_error', param: null, code: 'sync_wait_timeout' } });
  } else if (resultExpired(final)) {
    sse.send('error', { type: 'error', error: RESULT_EXPIRED_ERROR });
  } else if (final.status === 'succeeded') {
    const body = await editResponse({ ...final, params: { ...final.params, response_format: 'b64_json' } }, handedBack(deps), deps.config.env.SIGNED_URL_TTL_SECONDS);
    // Base64Text: JSON.stringify (the event's) writes its text
    const data = body.data as { b64_json: unknown }[];
    for (const [i, out] of (final.outputs ?? []).entries()) {
      sse.send('image_edit.completed', {
        type: 'image_edit.completed',
        b64_json: data[i]?.b64_json,
        created_at: body.created,
        size: `${out.width}x${out.height}`,
        quality,
        background,
        output_format: out.format,
        ...(body.usage ? { usage: body.usage } : {}),
      });
    }
  } else {
    const error = final.error ? publicError(final.error) : { message: `The job was ${final.status} before it finished`, type: 'invalid_request_error', code: `job_${final.status}` };
    sse.send('error', { type: 'error', error: { param: null, ...error } });
  }
  sse.end();
}

/**
 * The outputs as the worker handed them back for this answer, in base64 (Redis, read once), else
 * from S3: a synchronous or streamed answer in base64 then costs no S3 read and no encoding (see the
 * payload's `inline`).
 */
function handedBack(deps: ApiDeps): MediaSource {
  const prefix = deps.config.env.QUEUE_PREFIX;
  return {
    presignGet: (key, ttl) => deps.store.presignGet(key, ttl),
    getBuffer: (key) => deps.store.getBuffer(key),
    async getBase64(key) {
      const text = await deps.redis.getdelBuffer(inlineOutputKey(prefix, key)).catch(() => null);
      return new Base64Text(text ?? Buffer.from((await deps.store.getBuffer(key)).toString('base64'), 'latin1'));
    },
  };
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

/** RFC 7240 preferences this endpoint honours: `respond-async` and `wait=N` (seconds); core's editHeaders parse them. */
export function parsePrefer(prefer: string | undefined): Prefer {
  return parseInput(editHeaders, { Prefer: prefer }).Prefer;
}

