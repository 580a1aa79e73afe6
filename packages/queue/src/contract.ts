import { z } from 'zod';

/** Queue names. Never rename one: jobs already waiting in Redis under the old name would be orphaned. */
export const QUEUES = {
  /** base name: each provider has its own queue, `image-edits.<provider>` (see editQueueName) */
  imageEdits: 'image-edits',
} as const;

/**
 * One queue per provider, so a slow or throttled provider only holds up its own jobs, with its own
 * concurrency, rate limit and retry policy.
 */
export const editQueueName = (provider: string) => `${QUEUES.imageEdits}.${provider}`;

/** Payloads carry ids, never image bytes. Schemas only grow, with optional fields. */
export const imageEditPayload = z.object({
  jobId: z.string().regex(/^job_[0-9a-z]+$/),
  /** index of the route target this run is for (fallback moves it on); absent = 0 */
  target: z.number().int().min(0).optional(),
  /** the API key that submitted it: its place in line and its key's concurrency cap (fairness.ts); absent on older jobs */
  apiKeyId: z.string().min(1).optional(),
  /** a batch child: runs after every direct submission on its provider */
  batch: z.boolean().optional(),
  /** the edit's n: what a batch child takes from its key's images per minute (absent = 1) */
  images: z.number().int().min(1).optional(),
  /**
   * a client waits on the line for its images (OpenAI's synchronous answer, or a stream): the worker
   * also hands the outputs back through Redis for a few seconds, sparing that answer an S3 read
   */
  inline: z.boolean().optional(),
  /** an outage of our own Postgres/Redis/S3 this job is waiting out: since when, how many tries (no provider attempt is spent on them) */
  outage: z.object({ since: z.number(), last: z.number(), tries: z.number().int() }).optional(),
});

/** BullMQ job id: the row id for the first target, so adding the same job twice is a no-op; `.N` after a fallback. */
export const bullJobId = (payload: ImageEditPayload) => (payload.target ? `${payload.jobId}.${payload.target}` : payload.jobId);
export type ImageEditPayload = z.infer<typeof imageEditPayload>;

/** Redis pub/sub channel (under the queue prefix) on which workers announce job status changes. */
export const jobEventsChannel = (prefix: string) => `${prefix}:job-events`;

export const jobEvent = z.object({ jobId: z.string(), status: z.string() });
export type JobEvent = z.infer<typeof jobEvent>;
