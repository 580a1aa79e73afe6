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
  /** when the result expires (retention); null while the job runs, or for a batch child (its batch's output file decides) */
  resultExpiresAt?: Date | null;
  /** the outputs are gone (expired or deleted) */
  outputsDeletedAt?: Date | null;
  usage: { images: number; inputTokens: number | null; outputTokens: number | null; costUsd: number; details?: TokenUsage | null } | null;
}

/**
 * A provider's token usage in OpenAI's shape, complete: what sync answers, job objects, webhooks and
 * batch output show, and what the usage row keeps (`details`).
 */
export interface TokenUsage {
  input_tokens: number;
  input_tokens_details?: { image_tokens: number; text_tokens: number };
  output_tokens: number;
  total_tokens: number;
  /** as the provider reports them (e.g. image_tokens, text_tokens) */
  output_tokens_details?: Record<string, number>;
}

/** The token counts a provider reports (packages/providers' ProviderUsage fits). */
export interface ReportedTokens {
  inputTokens?: number | undefined;
  outputTokens?: number | undefined;
  totalTokens?: number | undefined;
  imageTokens?: number | undefined;
  textTokens?: number | undefined;
  outputTokensDetails?: Record<string, number> | undefined;
}

/** The provider's usage in OpenAI's shape; undefined when it reported no tokens (local, per-image providers). */
export function tokenUsage(u: ReportedTokens | undefined): TokenUsage | undefined {
  if (!u || (u.inputTokens === undefined && u.outputTokens === undefined && u.totalTokens === undefined)) return undefined;
  const input = u.inputTokens ?? (u.imageTokens ?? 0) + (u.textTokens ?? 0);
  const output = u.outputTokens ?? Math.max(0, (u.totalTokens ?? input) - input);
  const usage: TokenUsage = { input_tokens: input, output_tokens: output, total_tokens: u.totalTokens ?? input + output };
  if (u.imageTokens !== undefined || u.textTokens !== undefined) {
    // both, as OpenAI gives them: one the provider left out is what the other leaves of the input
    const image = u.imageTokens ?? Math.max(0, input - (u.textTokens ?? 0));
    usage.input_tokens_details = { image_tokens: image, text_tokens: u.textTokens ?? Math.max(0, input - image) };
  }
  if (u.outputTokensDetails && Object.keys(u.outputTokensDetails).length > 0) usage.output_tokens_details = { ...u.outputTokensDetails };
  // OpenAI's key order: input_tokens, input_tokens_details, output_tokens, total_tokens, output_tokens_details
  const { input_tokens, input_tokens_details, output_tokens, total_tokens, output_tokens_details } = usage;
  return { input_tokens, ...(input_tokens_details ? { input_tokens_details } : {}), output_tokens, total_tokens, ...(output_tokens_details ? { output_tokens_details } : {}) };
}

/** The object store as the views need it (ObjectStore fits). */
export interface MediaSource {
  presignGet(key: string, expiresInSeconds: number): Promise<string>;
  getBuffer(key: string): Promise<Buffer>;
  /** an object already in base64, when the source has it so (then b64_json is not encoded again) */
  getBase64?(key: string): Promise<Base64Text>;
}

/**
 * Base64 text of an image as bytes (ASCII), kept out of JavaScript strings: a JSON writer can put it
 * into a body as is (see the API's sendJson), where a 2 MB string would be encoded, escaped and
 * copied three times. Anywhere else JSON.stringify sees its text.
 */
export class Base64Text {
  constructor(readonly bytes: Buffer) {}
  toJSON(): string {
    return this.bytes.toString('latin1');
  }
}

export interface ViewOptions {
  /** presigned URLs even when the job asked for b64_json: webhook payloads stay small */
  urlsOnly?: boolean;
  /** a queued job's place in its provider's line (jobs ahead of it), when the caller looked it up */
  queuePosition?: number | null;
}

type ImageDatum = { url: string; revised_prompt?: string } | { b64_json: string | Base64Text; revised_prompt?: string };

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
      if (!inline) return { url: await store.presignGet(o.key, ttlSeconds), ...revised };
      return { b64_json: store.getBase64 ? await store.getBase64(o.key) : (await store.getBuffer(o.key)).toString('base64'), ...revised };
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
  // the provider's usage as it reported it; rows from before `details` was kept show the totals
  if (usage?.details) body.usage = usage.details;
  else if (usage && (usage.inputTokens !== null || usage.outputTokens !== null)) {
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

/**
 * A succeeded job whose outputs were deleted, or are past their expiry (the sweep deletes them a
 * little later): no result to show, no object to read.
 */
export function resultExpired(job: Pick<JobView, 'status' | 'resultExpiresAt' | 'outputsDeletedAt'>, now = Date.now()): boolean {
  if (job.status !== 'succeeded') return false;
  return !!job.outputsDeletedAt || (!!job.resultExpiresAt && job.resultExpiresAt.getTime() <= now);
}

/** What a client is told about a result that expired (sync answers, stream errors, batch lines). */
export const RESULT_EXPIRED_ERROR = {
  message: 'The result of this job has expired and its images were deleted (see the job\'s expires_at); the job\'s status and usage remain',
  type: 'invalid_request_error',
  param: null,
  code: 'result_expired',
} as const;

/** The job object of design.md §3. */
export async function jobObject(job: JobView, store: MediaSource, ttlSeconds: number, opts: ViewOptions = {}): Promise<Record<string, unknown>> {
  const seconds = (d: Date | null) => (d ? Math.floor(d.getTime() / 1000) : null);
  const expired = resultExpired(job);
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
    queue_position: job.status === 'queued' ? (opts.queuePosition ?? null) : null,
    result: job.status === 'succeeded' && !expired ? await editResponse(job, store, ttlSeconds, opts) : null,
    // the result is kept until expires_at; after it, result is null and result_expired true (status, usage and metadata stay)
    expires_at: seconds(job.resultExpiresAt ?? null),
    result_expired: expired,
    error: job.status === 'succeeded' || !job.error ? null : publicError(job.error),
    usage: job.usage ? usageObject(job.usage) : null,
    metadata: job.metadata,
    urls: { get: `/v1/jobs/${job.id}` },
  };
}

/** The job object's usage: images and cost beside the provider's token usage (nulls when it reported none). */
function usageObject(u: NonNullable<JobView['usage']>): Record<string, unknown> {
  const d = u.details ?? undefined;
  const input = d?.input_tokens ?? u.inputTokens;
  const output = d?.output_tokens ?? u.outputTokens;
  return {
    images: u.images,
    input_tokens: input,
    input_tokens_details: d?.input_tokens_details ?? null,
    output_tokens: output,
    ...(d?.output_tokens_details ? { output_tokens_details: d.output_tokens_details } : {}),
    total_tokens: d?.total_tokens ?? (input === null && output === null ? null : (input ?? 0) + (output ?? 0)),
    cost_usd: u.costUsd,
  };
}
