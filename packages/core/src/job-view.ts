import type { EditParams } from './edit-request';
import type { JobError, JobStatus, StoredImage } from './job';

/**
 * How a job looks to clients: the job object of design.md §3 and OpenAI's image response. Shared by
 * the API (responses) and the worker (webhook payloads), so both render a job the same way. The
 * job is structural (the db's JobRecord fits) and the object store is injected.
 */
export interface JobView {
  id: string;
  status: JobStatus;
  model: string;
  provider: string;
  params: Pick<EditParams, 'response_format' | 'background' | 'output_format' | 'quality' | 'size'>;
  outputs: StoredImage[] | null;
  error: JobError | null;
  metadata: Record<string, string>;
  attempts: number;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  usage: { images: number; inputTokens: number | null; outputTokens: number | null; costUsd: number } | null;
}

/** The object store as the views need it (ObjectStore fits). */
export interface MediaSource {
  presignGet(key: string, expiresInSeconds: number): Promise<string>;
  getBuffer(key: string): Promise<Buffer>;
}

export interface ViewOptions {
  /** presigned URLs even when the job asked for b64_json: webhook payloads stay small */
  urlsOnly?: boolean;
}

type ImageDatum = { url: string; revised_prompt?: string } | { b64_json: string; revised_prompt?: string };

/**
 * OpenAI's image response `{created, data, ...}` for a succeeded job. URLs are presigned afresh on
 * every call, so a client always gets a link valid for the full TTL.
 */
export async function editResponse(job: JobView, store: MediaSource, ttlSeconds: number, opts: ViewOptions = {}): Promise<Record<string, unknown>> {
  const outputs = job.outputs ?? [];
  const inline = job.params.response_format === 'b64_json' && !opts.urlsOnly;
  const data: ImageDatum[] = await Promise.all(
    outputs.map(async (o) => {
      const revised = o.revisedPrompt ? { revised_prompt: o.revisedPrompt } : {};
      return inline ? { b64_json: (await store.getBuffer(o.key)).toString('base64'), ...revised } : { url: await store.presignGet(o.key, ttlSeconds), ...revised };
    }),
  );
  const created = Math.floor((job.completedAt ?? job.createdAt).getTime() / 1000);
  const body: Record<string, unknown> = { created, data };
  if (job.model.includes('gpt-image')) {
    const first = outputs[0];
    body.background = job.params.background ?? 'auto';
    body.output_format = job.params.output_format ?? 'png';
    body.quality = job.params.quality ?? 'auto';
    body.size = first ? `${first.width}x${first.height}` : (job.params.size ?? 'auto');
  }
  const usage = job.usage;
  if (usage && (usage.inputTokens !== null || usage.outputTokens !== null)) {
    const input = usage.inputTokens ?? 0;
    const output = usage.outputTokens ?? 0;
    body.usage = { input_tokens: input, output_tokens: output, total_tokens: input + output };
  }
  return body;
}

/** A job's error as clients see it: OpenAI's shape, without the HTTP status kept for sync mode. */
export function publicError(error: JobError): Omit<JobError, 'status'> {
  const { status: _httpStatus, ...visible } = error;
  return visible;
}

/** The job object of design.md §3. */
export async function jobObject(job: JobView, store: MediaSource, ttlSeconds: number, opts: ViewOptions = {}): Promise<Record<string, unknown>> {
  const seconds = (d: Date | null) => (d ? Math.floor(d.getTime() / 1000) : null);
  return {
    id: job.id,
    object: 'image.edit.job',
    status: job.status,
    model: job.model,
    provider: job.provider,
    created_at: seconds(job.createdAt),
    started_at: seconds(job.startedAt),
    completed_at: seconds(job.completedAt),
    attempts: job.attempts,
    result: job.status === 'succeeded' ? await editResponse(job, store, ttlSeconds, opts) : null,
    error: job.status === 'succeeded' || !job.error ? null : publicError(job.error),
    usage: job.usage ? { images: job.usage.images, input_tokens: job.usage.inputTokens, output_tokens: job.usage.outputTokens, cost_usd: job.usage.costUsd } : null,
    metadata: job.metadata,
    urls: { get: `/v1/jobs/${job.id}` },
  };
}
