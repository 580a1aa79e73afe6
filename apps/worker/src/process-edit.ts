import { setTimeout as sleep } from 'node:timers/promises';
import { dependencyOf, editCost, isDependencyError, type JobError, type ProviderSettings, tokenUsage } from '@image-edits/core';
import { type Db, getJob, markStarted, markSucceeded, moveToNextTarget, recordAttemptError, recordProviderRequest, type WebhookEnqueuer } from '@image-edits/db';
import { type EditProvider, type InputImage, type OutputImage, type PartialImage, type ProviderEditRequest, ProviderError } from '@image-edits/providers';
import { backoffDelay, type BatchQueue, type EditJobContext, type EditQueue, type JobEventHub, INLINE_OUTPUT_TTL_S, inlineInputKey, inlineOutputKey, permanent, ProviderThrottled, publishJobEvent, publishPartialImage, RetryLater } from '@image-edits/queue';
import { CONTENT_TYPES, extensionFor, type ObjectStore, outputKey, outputPrefix } from '@image-edits/storage';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { imageSize } from 'image-size';
import { onJobFinished } from './batches/deps';
import { type ByteBudget, jobFootprint } from './byte-budget';
import { announceEnd, emitWebhooks, failJob } from './job-end';
import type { WorkerMetrics } from './metrics';

export interface WorkerDeps {
  db: Db;
  store: ObjectStore;
  redis: Redis;
  prefix: string;
  providers: Map<string, EditProvider>;
  /** per-provider retry and rate-limit settings from the registry */
  settings: (provider: string) => ProviderSettings;
  /** where a job goes when it falls back to its next target */
  queue: Pick<EditQueue, 'enqueue'>;
  /** job events: a `canceled` one aborts the job running here */
  hub: JobEventHub;
  /** webhook deliveries of job events */
  webhookQueue: WebhookEnqueuer;
  /** a batch child that was its batch's last request has the batch's files written (finalize step) */
  batchQueue: Pick<BatchQueue, 'enqueue'>;
  logger: Logger;
  /** how long an outage of our own Postgres/Redis/S3 is waited out, and the longest pause between tries */
  outage: { toleranceMs: number; maxRetryMs: number };
  /** the worker's budget of image bytes held by running jobs */
  bytes: ByteBudget;
  metrics: WorkerMetrics;
}

/**
 * One attempt at one edit job. Our own Postgres, Redis or S3 failing is not the provider's failure:
 * the job waits it out (capped backoff, no provider attempt spent) for up to the outage tolerance.
 */
export async function processEdit(deps: WorkerDeps, ctx: EditJobContext): Promise<void> {
  try {
    await attemptEdit(deps, ctx);
  } catch (err) {
    if (!isOurOutage(err)) throw err;
    throw await waitOutOutage(deps, ctx, err);
  }
}

/** A dependency error that did not come from (or on the way to) the provider. */
const isOurOutage = (err: unknown) => !(err instanceof ProviderError) && !(err instanceof ProviderThrottled) && !(err instanceof RetryLater) && isDependencyError(err);

/** The error to end this run with: run again later (no attempt spent), or, past the tolerance, fail for good. */
async function waitOutOutage(deps: WorkerDeps, ctx: EditJobContext, err: unknown): Promise<Error> {
  const now = Date.now();
  const prior = ctx.payload.outage;
  // the same outage goes on if the last try was recent; otherwise this is a new one
  const outage = prior && now - prior.last < 2 * deps.outage.maxRetryMs + 60_000 ? { since: prior.since, last: now, tries: prior.tries + 1 } : { since: now, last: now, tries: 1 };
  const log = deps.logger.child({ jobId: ctx.payload.jobId });
  const dependency = dependencyOf(err);
  deps.metrics.dependencyErrors.inc({ dependency, step: 'job' });
  if (now - outage.since > deps.outage.toleranceMs) {
    const minutes = Math.round(deps.outage.toleranceMs / 60_000);
    const error: JobError = {
      message: `The edit could not run because our ${dependency === 'unknown' ? 'storage or database' : dependency} was unavailable for over ${minutes} minute(s); no provider was charged for it and it may be submitted again`,
      type: 'server_error',
      code: 'dependency_unavailable',
      status: 503,
    };
    const failed = await failJob(deps, ctx.payload.jobId, error, { provider: ctx.provider, model: '' }).then(
      () => true,
      () => false,
    );
    if (failed) {
      log.error({ dependency, sinceMs: now - outage.since }, 'our own dependency stayed down past the outage tolerance; job failed');
      return permanent(error.message);
    }
  }
  const delayMs = backoffDelay(outage.tries, 500, null);
  log.warn({ err, dependency, tries: outage.tries, delayMs: Math.min(delayMs, deps.outage.maxRetryMs) }, 'our own dependency is unavailable; the job waits (no provider attempt spent)');
  return new RetryLater(Math.min(delayMs, deps.outage.maxRetryMs), { ...ctx.payload, outage }, `${dependency} unavailable`);
}

/**
 * After the provider answered, a step that stores the answer (S3 put, the commit) is retried alone,
 * the answer kept in memory, while our dependency is down: the provider is never asked again for an
 * answer we already have. Past the tolerance the error goes up (and the job waits as any outage).
 */
async function keepTrying<T>(deps: WorkerDeps, log: Logger, what: string, step: () => Promise<T>): Promise<T> {
  const since = Date.now();
  for (let tries = 1; ; tries++) {
    try {
      return await step();
    } catch (err) {
      if (!isDependencyError(err) || Date.now() - since > deps.outage.toleranceMs) throw err;
      deps.metrics.dependencyErrors.inc({ dependency: dependencyOf(err), step: what });
      const delayMs = Math.min(backoffDelay(tries, 250, null), deps.outage.maxRetryMs);
      log.warn({ err, dependency: dependencyOf(err), tries, delayMs }, `${what} failed; retrying that step alone with the provider's answer kept`);
      await sleep(delayMs);
    }
  }
}

/**
 * Postgres decides whether the job may run; outputs go to deterministic keys and success is one
 * conditional statement, so a crashed-and-restarted attempt finishes the job once: one set of
 * outputs, one usage row.
 */
async function attemptEdit(deps: WorkerDeps, ctx: EditJobContext): Promise<void> {
  const { jobId } = ctx.payload;
  const targetIndex = ctx.payload.target ?? 0;
  const log = deps.logger.child({ jobId, attempt: ctx.attempt, target: targetIndex });
  const job = await markStarted(deps.db, jobId, targetIndex);
  if (!job) {
    const current = await getJob(deps.db, jobId);
    log.info({ status: current?.status ?? 'missing', currentTarget: current?.targetIndex }, 'job not runnable on this target; skipped');
    return;
  }
  const attemptStarted = performance.now();
  if (job.attempts === 1 && job.startedAt) deps.metrics.queueWait.observe({ provider: ctx.provider, lane: ctx.payload.batch ? 'batch' : 'direct' }, (job.startedAt.getTime() - job.createdAt.getTime()) / 1000);
  // not waited for: commands on one connection keep their order, so the final event still comes after it
  void publishJobEvent(deps.redis, deps.prefix, { jobId, status: 'in_progress' }).catch((err: unknown) => log.warn({ err }, 'job event not published'));
  // only the first start is news (and only to those who asked for job.started); recorded while the
  // inputs load, settled before the provider is called (never rejects: failures are logged)
  const announced = job.attempts === 1 && !ctx.payload.outage && job.hasWebhookTargets ? emitWebhooks(deps, jobId, 'job.started') : undefined;

  const target = job.targets[targetIndex];
  const provider = target ? deps.providers.get(target.provider) : undefined;
  if (!target || !provider) {
    await announced;
    await failJob(deps, jobId, { message: `model '${job.model}' is no longer configured on this worker`, type: 'server_error', code: 'provider_not_configured', status: 500 }, { provider: target?.provider ?? job.provider, model: job.model });
    throw permanent(`provider ${target?.provider ?? job.provider} not configured`);
  }
  const settings = deps.settings(target.provider);
  const labels = { provider: target.provider, model: job.model };
  /** what this attempt came to, for image_edits_job_run_seconds */
  let outcome = 'failed';

  // a cancel (from any API process) aborts the provider call; the late result is discarded
  const canceled = new AbortController();
  const stopListening = new AbortController();
  // its images must fit the worker's memory budget before they are read (waiting costs no attempt)
  const footprint = jobFootprint(job.inputs, job.params.n);
  await deps.bytes.acquire(footprint);
  void deps.hub
    .waitFor(jobId, (e) => e.status === 'canceled', 24 * 3600 * 1000, stopListening.signal)
    .then((e) => {
      if (e) canceled.abort();
    });
  // outputs handed back for a waiting client (see handBack), withdrawn unless this attempt commits them:
  // a later attempt's answer must never meet this one's images
  let handback: { keys: string[]; sent: Promise<void> } | undefined;
  let committed = false;
  const withdrawHandback = () => {
    if (!handback || committed) return;
    const { keys, sent } = handback;
    void sent.then(() => deps.redis.del(...keys.map((key) => inlineOutputKey(deps.prefix, key)))).catch(() => undefined);
  };
  try {
    // inputs are re-read from S3 on every attempt: a retry always re-sends the full upload
    // a synchronous job's first start finds its inputs handed over through Redis (read once); else S3
    const handedOver = ctx.payload.inline && ctx.starts <= 1 ? deps.redis : undefined;
    const [images, mask] = await Promise.all([
      Promise.all(job.inputs.images.map((img) => loadImage(deps, img, handedOver))),
      job.inputs.mask ? loadImage(deps, job.inputs.mask, handedOver) : undefined,
      announced,
    ]);
    const p = job.params;
    const request: ProviderEditRequest = {
      model: target.upstream,
      prompt: p.prompt,
      images,
      ...(mask ? { mask } : {}),
      n: p.n,
      ...(p.size !== undefined ? { size: p.size } : {}),
      ...(p.quality !== undefined ? { quality: p.quality } : {}),
      ...(p.background !== undefined ? { background: p.background } : {}),
      ...(p.output_format !== undefined ? { outputFormat: p.output_format } : {}),
      ...(p.output_compression !== undefined ? { outputCompression: p.output_compression } : {}),
      ...(p.input_fidelity !== undefined ? { inputFidelity: p.input_fidelity } : {}),
      ...(p.user !== undefined ? { user: p.user } : {}),
      ...(p.moderation !== undefined ? { moderation: p.moderation } : {}),
      ...(p.safety_identifier !== undefined ? { safetyIdentifier: p.safety_identifier } : {}),
      ...(p.search_prompt !== undefined ? { searchPrompt: p.search_prompt } : {}),
      ...(p.stream && p.partial_images ? { partialImages: p.partial_images } : {}),
    };
    const started = Date.now();
    // a request the provider can resume (fal, Replicate) is recorded before it is waited on; a later
    // attempt on the same target resumes it instead of paying for another
    const resume = job.providerRequest?.target === targetIndex ? job.providerRequest.ids : undefined;
    const result = await provider
      .edit(request, {
        signal: AbortSignal.any([ctx.signal, canceled.signal]),
        ...(resume?.length ? { resume } : {}),
        // partial images go to whoever follows the job (the streamed answer, GET /v1/jobs/{id}/events) as they come
        ...(request.partialImages ? { onPartial: (partial: PartialImage) => void relayPartial(deps, jobId, partial, log) } : {}),
        onSubmitted: (ids) => keepTrying(deps, log, 'recording the provider request', () => recordProviderRequest(deps.db, jobId, { target: targetIndex, ids })).catch((err: unknown) => Promise.reject(new ProviderRequestNotRecorded(err))),
      })
      .catch((err: unknown) => {
        // whatever the adapter let through came from (or on the way to) the provider, except our own recording of its request
        if (err instanceof ProviderRequestNotRecorded) throw err.cause;
        const e = err instanceof ProviderError ? err : new ProviderError(target.provider, `the provider call failed: ${(err as Error)?.message ?? String(err)}`, { code: 'provider_error', retryable: true });
        const callOutcome = canceled.signal.aborted ? 'canceled' : e.code;
        deps.metrics.providerCalls.observe({ ...labels, outcome: callOutcome }, (Date.now() - started) / 1000);
        if (callOutcome !== 'canceled') deps.metrics.providerErrors.inc({ ...labels, code: e.code, retryable: String(e.retryable) });
        throw e;
      });
    deps.metrics.providerCalls.observe({ ...labels, outcome: 'ok' }, (Date.now() - started) / 1000);
    if (canceled.signal.aborted) {
      log.info('job canceled while running; result discarded');
      outcome = 'canceled';
      return;
    }
    const keys = result.images.map((img, i) => outputKey(jobId, i, extensionFor(img.format)));
    // a client waiting on the line for base64 gets the bytes we hold, not an S3 read; handed over while they are stored
    if (ctx.payload.inline && (p.response_format === 'b64_json' || p.stream)) handback = { keys, sent: handBack(deps, keys, result.images, log) };
    const outputs = await Promise.all(
      result.images.map(async (img, i) => {
        const key = keys[i]!;
        // the size from the header alone (a pure read of a few bytes: sharp's pipeline cost more per job than any other step of ours)
        const { width, height } = imageSize(img.data);
        await keepTrying(deps, log, 'storing an output', () => deps.store.put(key, img.data, { contentType: CONTENT_TYPES[img.format] ?? 'application/octet-stream', contentLength: img.data.length }));
        return { key, format: img.format, bytes: img.data.length, width, height, ...(img.revisedPrompt ? { revisedPrompt: img.revisedPrompt } : {}) };
      }),
    );
    const costUsd = editCost(target.price, { quality: p.quality, outputs, usage: result.usage });
    const won = await keepTrying(deps, log, 'recording the result', () =>
      markSucceeded(deps.db, jobId, {
        job: { apiKeyId: job.apiKeyId, model: job.model, provider: target.provider },
        outputs,
        usage: { images: outputs.length, inputTokens: result.usage?.inputTokens, outputTokens: result.usage?.outputTokens, details: tokenUsage(result.usage), size: p.size, quality: p.quality, costUsd },
      }),
    );
    log.info({ provider: target.provider, model: job.model, images: outputs.length, costUsd, ms: Date.now() - started, recorded: !!won }, 'edit finished');
    outcome = won ? 'succeeded' : 'superseded';
    if (won) {
      committed = true;
      deps.metrics.jobsFinished.inc({ status: 'succeeded', ...labels, code: '' });
      await handback?.sent; // before the waiter is woken
      await announceEnd(deps, jobId, 'succeeded', won.hasWebhookTargets);
      await onJobFinished(deps, won);
    } else {
      withdrawHandback();
    }
    if (!won && (await keepTrying(deps, log, 'reading the job', () => getJob(deps.db, jobId)))?.status === 'canceled') {
      // canceled between the provider's answer and the commit: nothing of it may stay
      await keepTrying(deps, log, 'deleting a canceled job\'s outputs', () => deps.store.deletePrefix(outputPrefix(jobId)));
    }
  } catch (err) {
    withdrawHandback();
    // our own outage: nothing of the provider's budget is spent on it (processEdit waits it out)
    if (isOurOutage(err)) {
      outcome = 'dependency_wait';
      throw err;
    }
    if (canceled.signal.aborted || (await getJob(deps.db, jobId))?.status === 'canceled') {
      log.info('job canceled while running; attempt stopped');
      outcome = 'canceled';
      return;
    }
    const error = toJobError(err);
    const retryable = isRetryable(err);
    // a 429 pauses this provider's queue instead of spending an attempt, a bounded number of times
    const rateLimitWaits = ctx.starts - ctx.attempt;
    if (err instanceof ProviderError && err.code === 'rate_limited' && rateLimitWaits < settings.maxRateLimitWaits) {
      const waitMs = err.retryAfterMs ?? backoffDelay(rateLimitWaits + 1, settings.backoffMs, null);
      log.warn({ provider: target.provider, waitMs }, 'provider rate limited; its queue waits');
      outcome = 'rate_limited';
      deps.metrics.rateLimitWaits.inc({ provider: target.provider });
      deps.metrics.rateLimitWaitSeconds.inc({ provider: target.provider }, waitMs / 1000);
      await recordAttemptError(deps.db, jobId, error);
      throw new ProviderThrottled(waitMs);
    }
    if (retryable && !ctx.isLastAttempt) {
      log.warn({ code: error.code, message: error.message }, 'attempt failed; will retry');
      outcome = 'retry';
      deps.metrics.retries.inc({ provider: target.provider, code: error.code });
      await recordAttemptError(deps.db, jobId, error);
      throw err;
    }
    const next = job.targets[targetIndex + 1];
    if (retryable && next) {
      // this target's retries are spent: the next target takes over, on its provider's queue
      outcome = 'fallback';
      if (await moveToNextTarget(deps.db, jobId, targetIndex, next, error)) {
        deps.metrics.fallbacks.inc({ from: target.provider, to: next.provider, code: error.code });
        // same key, same lane (a batch child stays one), at the back of its key's line there
        await deps.queue.enqueue(next.provider, { ...ctx.payload, apiKeyId: job.apiKeyId, target: targetIndex + 1 });
        log.warn({ code: error.code, from: target.provider, to: next.provider }, 'target spent; falling back to the next one');
      }
      return;
    }
    log.warn({ code: error.code, message: error.message }, 'job failed');
    await failJob(deps, jobId, error, labels);
    throw permanent(error.message);
  } finally {
    stopListening.abort();
    deps.bytes.release(footprint);
    deps.metrics.runTime.observe({ ...labels, outcome }, (performance.now() - attemptStarted) / 1000);
  }
}

/**
 * Best effort: a waiter that finds nothing in Redis reads S3. In base64, as the answer sends it: the
 * provider's own text when it sent canonical base64, so nobody encodes the image again. One SET per
 * image rather than a MULTI: nothing needs them atomic, and ioredis builds every defined script into
 * each MULTI it makes.
 */
async function handBack(deps: WorkerDeps, keys: string[], images: OutputImage[], log: Logger): Promise<void> {
  // as bytes: ioredis copies a Buffer once, where a string of megabytes cost several ms to write out
  const text = (img: OutputImage) => Buffer.from(img.base64 ?? img.data.toString('base64'), 'latin1');
  await Promise.all(keys.map((key, i) => deps.redis.set(inlineOutputKey(deps.prefix, key), text(images[i]!), 'EX', INLINE_OUTPUT_TTL_S))).catch((err: unknown) =>
    log.warn({ err }, 'outputs not handed back through Redis; the answer reads S3'),
  );
}

/** A partial image is news, not state: one that cannot be relayed is dropped (the completed image follows). */
async function relayPartial(deps: WorkerDeps, jobId: string, partial: PartialImage, log: Logger): Promise<void> {
  try {
    const { width, height } = imageSize(partial.data);
    await publishPartialImage(deps.redis, deps.prefix, jobId, { index: partial.index, b64: partial.data.toString('base64'), format: partial.format, width, height });
  } catch (err) {
    log.warn({ err, index: partial.index }, 'partial image not relayed');
  }
}

/** Our own recording of a provider's request id failed (Postgres down for longer than the tolerance): not the provider's failure. */
class ProviderRequestNotRecorded extends Error {
  constructor(cause: unknown) {
    super('the provider request could not be recorded', { cause });
  }
}

async function loadImage(deps: Pick<WorkerDeps, 'store' | 'prefix'>, img: { key: string; format: InputImage['format']; width: number; height: number; bytes: number; filename?: string }, handedOver?: Redis): Promise<InputImage> {
  const given = handedOver ? await handedOver.getdelBuffer(inlineInputKey(deps.prefix, img.key)).catch(() => null) : null;
  const data = given && given.length === img.bytes ? given : await deps.store.getBuffer(img.key);
  return { data, format: img.format, width: img.width, height: img.height, filename: img.filename ?? img.key.split('/').pop()! };
}

function isRetryable(err: unknown): boolean {
  if (err instanceof ProviderError) return err.retryable;
  // an error of our own that is not an outage (a bug, a corrupt stored input) is worth another try
  return true;
}

/** Provider failures keep their code; 4xx from the provider are the client's to fix (400), the rest are 502. */
function toJobError(err: unknown): JobError {
  if (err instanceof ProviderError) {
    const clientFault = err.status !== null && err.status >= 400 && err.status < 500 && !err.retryable && err.code !== 'provider_auth_failed';
    return {
      message: err.message,
      type: clientFault ? 'invalid_request_error' : 'provider_error',
      code: err.code,
      // the parameter the provider blamed, as the client named it
      ...(err.param ? { param: err.param } : {}),
      status: clientFault ? 400 : err.code === 'invalid_image' ? 400 : 502,
    };
  }
  return { message: 'The edit failed because of an internal error; it was retried and may be submitted again', type: 'server_error', code: 'internal_error', status: 500 };
}
