import type { ModelPrice, ProviderId } from './models';
/** Job statuses and the moves between them. Postgres holds the status; this is the one rule book. */
export const JOB_STATUSES = ['queued', 'in_progress', 'succeeded', 'failed', 'canceled', 'expired'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const FINAL_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'canceled', 'expired'];

export function isFinal(status: JobStatus): boolean {
  return FINAL_STATUSES.includes(status);
}

const MOVES: Record<JobStatus, readonly JobStatus[]> = {
  queued: ['in_progress', 'failed', 'canceled', 'expired'],
  // in_progress -> in_progress: a retry or a restart after a crashed worker
  in_progress: ['in_progress', 'succeeded', 'failed', 'canceled'],
  succeeded: [],
  failed: [],
  canceled: [],
  expired: [],
};

export function canMove(from: JobStatus, to: JobStatus): boolean {
  return MOVES[from].includes(to);
}

/** The statuses a job may be in when it moves to `to`: used as the WHERE of conditional updates. */
export function movableFrom(to: JobStatus): JobStatus[] {
  return JOB_STATUSES.filter((s) => canMove(s, to));
}

/** An image kept in the object store, as recorded on the job row. */
export interface StoredImage {
  key: string;
  format: 'png' | 'jpeg' | 'webp';
  bytes: number;
  width: number;
  height: number;
  filename?: string;
  revisedPrompt?: string;
}

export interface JobInputs {
  images: StoredImage[];
  mask?: StoredImage;
}

/** What a failed job tells its client, in OpenAI's error shape; `status` is the HTTP status for sync mode. */
export interface JobError {
  message: string;
  type: string;
  code: string;
  param?: string | null;
  status?: number;
}

/** One target of a job's route as stored on the row: self-contained, so a registry change never strands a job. */
export interface JobTarget {
  provider: ProviderId;
  upstream: string;
  /** the effective price (the target's own, else the model's) */
  price: ModelPrice;
}
