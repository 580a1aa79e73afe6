import type { Redis } from 'ioredis';
import { type JobEvent, jobEvent, jobEventsChannel } from './contract';

/**
 * A job's events are kept for a while in a Redis stream of their own (`{prefix}:job-stream:{jobId}`),
 * so a client following the job (`GET /v1/jobs/{id}/events`, a streamed edit) can resume after a
 * reconnect with `Last-Event-ID` (the stream entry's id), whichever API process it lands on; and
 * announced on the shared channel, so the API processes holding its followers read the new entries.
 */
export const jobStreamKey = (prefix: string, jobId: string) => `${prefix}:job-stream:${jobId}`;
/** how long a job's events stay readable after its last one */
const JOB_STREAM_TTL_S = 3600;
/** entries a job's stream keeps (status moves are a handful; partial images at most 3 per try) */
const JOB_STREAM_MAX = 64;

/** One entry of a job's stream: a status move, or a partial image the provider streamed. */
export type JobStreamEntry =
  | { type: 'status'; status: string }
  | { type: 'partial'; index: number; b64: string; format: string; width: number; height: number };

export async function publishJobEvent(redis: Redis, prefix: string, event: JobEvent): Promise<void> {
  await appendJobStream(redis, prefix, event.jobId, { type: 'status', status: event.status }, event);
}

/** A partial image of a running job, for whoever follows it (never stored beyond the stream's TTL). */
export async function publishPartialImage(redis: Redis, prefix: string, jobId: string, partial: Omit<Extract<JobStreamEntry, { type: 'partial' }>, 'type'>): Promise<void> {
  await appendJobStream(redis, prefix, jobId, { type: 'partial', ...partial }, { jobId, status: 'partial' });
}

async function appendJobStream(redis: Redis, prefix: string, jobId: string, entry: JobStreamEntry, announce: JobEvent): Promise<void> {
  const key = jobStreamKey(prefix, jobId);
  await redis
    .multi()
    .xadd(key, 'MAXLEN', '~', JOB_STREAM_MAX, '*', 'e', JSON.stringify(entry))
    .expire(key, JOB_STREAM_TTL_S)
    .publish(jobEventsChannel(prefix), JSON.stringify(announce))
    .exec();
}

/** The job's stream entries after `afterId` ('0' from the start), oldest first. */
export async function readJobStream(redis: Redis, prefix: string, jobId: string, afterId: string): Promise<{ id: string; entry: JobStreamEntry }[]> {
  const rows = await redis.xrange(jobStreamKey(prefix, jobId), afterId === '0' ? '-' : `(${afterId}`, '+');
  return rows.flatMap(([id, fields]) => {
    const raw = fields[fields.indexOf('e') + 1];
    const entry = raw ? (safeJson(raw) as JobStreamEntry | null) : null;
    return entry ? [{ id, entry }] : [];
  });
}

/** Whether `id` is a stream entry id a client may send back as Last-Event-ID. */
export const isStreamId = (id: string) => /^\d{1,15}-\d{1,10}$/.test(id);

/**
 * One Redis subscription per API process, fanned out in memory to the requests waiting on a job.
 * Waiters cost nothing while they wait: no polling of Postgres or Redis per waiter.
 */
export interface JobEventHub {
  /** resolves with the event, or null after timeoutMs; `abort` stops waiting early */
  waitFor(jobId: string, accept: (e: JobEvent) => boolean, timeoutMs: number, signal?: AbortSignal): Promise<JobEvent | null>;
  waiting(): number;
  close(): Promise<void>;
}

export async function createJobEventHub(subscriber: Redis, prefix: string): Promise<JobEventHub> {
  const waiters = new Map<string, Set<(e: JobEvent) => void>>();
  const channel = jobEventsChannel(prefix);
  subscriber.on('message', (ch: string, message: string) => {
    if (ch !== channel) return;
    const parsed = jobEvent.safeParse(safeJson(message));
    if (!parsed.success) return;
    for (const notify of waiters.get(parsed.data.jobId) ?? []) notify(parsed.data);
  });
  await subscriber.subscribe(channel);

  return {
    waitFor(jobId, accept, timeoutMs, signal) {
      return new Promise((resolve) => {
        const set = waiters.get(jobId) ?? new Set<(e: JobEvent) => void>();
        waiters.set(jobId, set);
        const done = (value: JobEvent | null) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          set.delete(notify);
          if (set.size === 0) waiters.delete(jobId);
          resolve(value);
        };
        const notify = (e: JobEvent) => {
          if (accept(e)) done(e);
        };
        const onAbort = () => done(null);
        const timer = setTimeout(() => done(null), timeoutMs);
        set.add(notify);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    },
    waiting: () => [...waiters.values()].reduce((n, s) => n + s.size, 0),
    async close() {
      await subscriber.unsubscribe(channel).catch(() => undefined);
      subscriber.disconnect();
    },
  };
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
}
