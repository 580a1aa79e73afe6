import { editCost, type JobError, type ProviderSettings } from '@image-edits/core';
import { emitJobEvent, getJob, markFailed, markStarted, markSucceeded, moveToNextTarget, recordAttemptError, type Db, type WebhookEnqueuer } from '@image-edits/db';
import { type EditProvider, type InputImage, type ProviderEditRequest, ProviderError } from '@image-edits/providers';
import { backoffDelay, type BatchQueue, type EditJobContext, type EditQueue, type JobEventHub, permanent, ProviderThrottled, publishJobEvent } from '@image-edits/queue';
import { CONTENT_TYPES, extensionFor, type ObjectStore, outputKey, outputPrefix } from '@image-edits/storage';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import sharp from 'sharp';
import { onJobFinished } from './batches/deps';

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
}

/**
 * One attempt at one edit job. Postgres decides whether it may run; outputs go to deterministic keys
 * and success is one conditional transaction, so a crashed-and-restarted attempt finishes the job
 * once: one set of outputs, one usage row.
 */
export async function processEdit(deps: WorkerDeps, ctx: EditJobContext): Promise<void> {
  const { jobId } = ctx.payload;
  const targetIndex = ctx.payload.target ?? 0;
  const log = deps.logger.child({ jobId, attempt: ctx.attempt, target: targetIndex });
  const job = await markStarted(deps.db, jobId, targetIndex);
  if (!job) {
    const current = await getJob(deps.db, jobId);
    log.info({ status: current?.status ?? 'missing', currentTarget: current?.targetIndex }, 'job not runnable on this target; skipped');
    return;
  }
  await publishJobEvent(deps.redis, deps.prefix, { jobId, status: 'in_progress' });
  // only the first start is news (and only to those who asked for job.started); recorded while the
  // inputs load, settled before the provider is called (never rejects: failures are logged)
  const announced = job.attempts === 1 ? emitWebhooks(deps, jobId, 'job.started') : undefined;

  const target = job.targets[targetIndex];
  const provider = target ? deps.providers.get(target.provider) : undefined;
  if (!target || !provider) {
    await announced;
    await fail(deps, jobId, { message: `model '${job.model}' is no longer configured on this worker`, type: 'server_error', code: 'provider_not_configured', status: 500 });
    throw permanent(`provider ${target?.provider ?? job.provider} not configured`);
  }
  const settings = deps.settings(target.provider);

  // a cancel (from any API process) aborts the provider call; the late result is discarded
  const canceled = new AbortController();
  const stopListening = new AbortController();
  void deps.hub
    .waitFor(jobId, (e) => e.status === 'canceled', 24 * 3600 * 1000, stopListening.signal)
    .then((e) => {
      if (e) canceled.abort();
    });
  try {
    // inputs are re-read from S3 on every attempt: a retry always re-sends the full upload
    const [images, mask] = await Promise.all([
      Promise.all(job.inputs.images.map((img) => loadImage(deps.store, img))),
      job.inputs.mask ? loadImage(deps.store, job.inputs.mask) : undefined,
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
      ...(p.search_prompt !== undefined ? { searchPrompt: p.search_prompt } : {}),
    };
    const started = Date.now();
    const result = await provider.edit(request, { signal: AbortSignal.any([ctx.signal, canceled.signal]) });
    if (canceled.signal.aborted) {
      log.info('job canceled while running; result discarded');
      return;
    }
    const outputs = await Promise.all(
      result.images.map(async (img, i) => {
        const key = outputKey(jobId, i, extensionFor(img.format));
        // the header is read while the bytes travel to S3
        const [meta] = await Promise.all([
          sharp(img.data).metadata(),
          deps.store.put(key, img.data, { contentType: CONTENT_TYPES[img.format] ?? 'application/octet-stream', contentLength: img.data.length }),
        ]);
        return { key, format: img.format, bytes: img.data.length, width: meta.width ?? 0, height: meta.height ?? 0, ...(img.revisedPrompt ? { revisedPrompt: img.revisedPrompt } : {}) };
      }),
    );
    const costUsd = editCost(target.price, { quality: p.quality, outputs, usage: result.usage });
    const won = await markSucceeded(deps.db, jobId, {
      job: { apiKeyId: job.apiKeyId, model: job.model, provider: target.provider },
      outputs,
      usage: { images: outputs.length, inputTokens: result.usage?.inputTokens, outputTokens: result.usage?.outputTokens, size: p.size, quality: p.quality, costUsd },
    });
    log.info({ provider: target.provider, model: job.model, images: outputs.length, costUsd, ms: Date.now() - started, recorded: !!won }, 'edit finished');
    if (won) {
      await publishJobEvent(deps.redis, deps.prefix, { jobId, status: 'succeeded' });
      await emitWebhooks(deps, jobId, 'job.succeeded');
      await onJobFinished(deps, won);
    } else if ((await getJob(deps.db, jobId))?.status === 'canceled') {
      // canceled between the provider's answer and the commit: nothing of it may stay
      await deps.store.deletePrefix(outputPrefix(jobId));
    }
  } catch (err) {
    if (canceled.signal.aborted || (await getJob(deps.db, jobId))?.status === 'canceled') {
      log.info('job canceled while running; attempt stopped');
      return;
    }
    const error = toJobError(err);
    const retryable = isRetryable(err);
    // a 429 pauses this provider's queue instead of spending an attempt, a bounded number of times
    const rateLimitWaits = ctx.starts - ctx.attempt;
    if (err instanceof ProviderError && err.code === 'rate_limited' && rateLimitWaits < settings.maxRateLimitWaits) {
      const waitMs = err.retryAfterMs ?? backoffDelay(rateLimitWaits + 1, settings.backoffMs, null);
      log.warn({ provider: target.provider, waitMs }, 'provider rate limited; its queue waits');
      await recordAttemptError(deps.db, jobId, error);
      throw new ProviderThrottled(waitMs);
    }
    if (retryable && !ctx.isLastAttempt) {
      log.warn({ code: error.code, message: error.message }, 'attempt failed; will retry');
      await recordAttemptError(deps.db, jobId, error);
      throw err;
    }
    const next = job.targets[targetIndex + 1];
    if (retryable && next) {
      // this target's retries are spent: the next target takes over, on its provider's queue
      if (await moveToNextTarget(deps.db, jobId, targetIndex, next, error)) {
        // same key, same lane (a batch child stays one), at the back of its key's line there
        await deps.queue.enqueue(next.provider, { ...ctx.payload, apiKeyId: job.apiKeyId, target: targetIndex + 1 });
        log.warn({ code: error.code, from: target.provider, to: next.provider }, 'target spent; falling back to the next one');
      }
      return;
    }
    log.warn({ code: error.code, message: error.message }, 'job failed');
    await fail(deps, jobId, error);
    throw permanent(error.message);
  } finally {
    stopListening.abort();
  }
}

async function fail(deps: WorkerDeps, jobId: string, error: JobError): Promise<void> {
  const finished = await markFailed(deps.db, jobId, error);
  if (finished) {
    await publishJobEvent(deps.redis, deps.prefix, { jobId, status: 'failed' });
    await emitWebhooks(deps, jobId, 'job.failed');
    await onJobFinished(deps, finished);
  }
}

/** The job's state is already committed: a webhook hiccup is logged, never turned into a job failure. */
async function emitWebhooks(deps: WorkerDeps, jobId: string, type: 'job.started' | 'job.succeeded' | 'job.failed'): Promise<void> {
  await emitJobEvent({ db: deps.db, webhookQueue: deps.webhookQueue, logger: deps.logger }, jobId, type).catch((err: unknown) => deps.logger.error({ err, jobId, event: type }, 'webhook event not recorded'));
}

async function loadImage(store: ObjectStore, img: { key: string; format: InputImage['format']; width: number; height: number; filename?: string }): Promise<InputImage> {
  const data = await store.getBuffer(img.key);
  return { data, format: img.format, width: img.width, height: img.height, filename: img.filename ?? img.key.split('/').pop()! };
}

function isRetryable(err: unknown): boolean {
  if (err instanceof ProviderError) return err.retryable;
  // our own infrastructure (S3, Postgres) failing mid-attempt is worth another try
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
      status: clientFault ? 400 : err.code === 'invalid_image' ? 400 : 502,
    };
  }
  return { message: 'The edit failed because of an internal error; it was retried and may be submitted again', type: 'server_error', code: 'internal_error', status: 500 };
}
