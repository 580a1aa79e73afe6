import { z } from 'zod';

/** Queue names. Never rename one: jobs already waiting in Redis under the old name would be orphaned. */
export const QUEUES = {
  imageEdits: 'image-edits',
} as const;

/** Payloads carry ids, never image bytes. Schemas only grow, with optional fields. */
export const imageEditPayload = z.object({ jobId: z.string().regex(/^job_[0-9a-z]+$/) });
export type ImageEditPayload = z.infer<typeof imageEditPayload>;

/** Redis pub/sub channel (under the queue prefix) on which workers announce job status changes. */
export const jobEventsChannel = (prefix: string) => `${prefix}:job-events`;

export const jobEvent = z.object({ jobId: z.string(), status: z.string() });
export type JobEvent = z.infer<typeof jobEvent>;
