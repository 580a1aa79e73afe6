import type { Redis } from 'ioredis';
import { type JobEvent, jobEvent, jobEventsChannel } from './contract';

/**
 * Job events. Status moves are announced on one shared channel (waiters and followers in every API
 * process hear them; nothing is stored: the row is the record). Partial images, which only a job
 * that asked to stream has, are also kept for an hour in a Redis stream of the job's own
 * (`{prefix}:job-stream:{jobId}`), so a client following the job can resume after a reconnect with
 * `Last-Event-ID` (the entry's id), whichever API process it lands on.
 */
export const jobStreamKey = (prefix: string, jobId: string) => `${prefix}:job-stream:${jobId}`;
/** how long a job's partial images stay readable */
const JOB_STREAM_TTL_S = 3600;
/** entries a job's stream keeps (at most 3 partial images per try) */
const JOB_STREAM_MAX = 32;

/** A partial image the provider streamed. */
export interface PartialImageEntry {
  index: number;
  b64: string;
  format: string;
  width: number;
  height: number;
}

export async function publishJobEvent(redis: Redis, prefix: string, event: JobEvent): Promise<void> {
  await redis.publish(jobEventsChannel(prefix), JSON.stringify(event));
}

/** A partial image of a running job, for whoever follows it (kept no longer than the stream's TTL). */
export async function publishPartialImage(redis: Redis, prefix: string, jobId: string, partial: PartialImageEntry): Promise<void> {
  const key = jobStreamKey(prefix, jobId);
  await redis
    .multi()
    .xadd(key, 'MAXLEN', '~', JOB_STREAM_MAX, '*', 'e', JSON.stringify(partial))
    .expire(key, JOB_STREAM_TTL_S)
    .publish(jobEventsChannel(prefix), JSON.stringify({ jobId, status: 'partial' } satisfies JobEvent))
    .exec();
}

/**
 * Where one S3 object of a synchronous job is handed over through Redis, read once (GETDEL), beside
 * the durable copy in S3 (see the payload's `inline`): its inputs' bytes from the API to the worker,
 * its outputs back as base64 text, which is what the answer sends. Whoever finds nothing reads S3.
 * (The two forms have their own keys: a process of another version finds nothing, never the other form.)
 */
export const inlineInputKey = (prefix: string, objectKey: string) => `${prefix}:inline:${objectKey}`;
export const inlineOutputKey = (prefix: string, objectKey: string) => `${prefix}:inline:b64:${objectKey}`;
/** long enough for a waiter that was woken to read it; what nobody read expires */
export const INLINE_OUTPUT_TTL_S = 30;
/** inputs wait in line: long enough for a queue that is moving, short enough to bound what Redis holds */
export const INLINE_INPUT_TTL_S = 30;
/** a synchronous job's inputs larger than this in all are read from S3 by the worker, not handed over */
export const INLINE_INPUT_MAX_BYTES = 8 * 1024 * 1024;

/** The job's partial images after `afterId` ('0' from the start), oldest first. */
export async function readJobStream(redis: Redis, prefix: string, jobId: string, afterId: string): Promise<{ id: string; partial: PartialImageEntry }[]> {
  const rows = await redis.xrange(jobStreamKey(prefix, jobId), afterId === '0' ? '-' : `(${afterId}`, '+');
  return rows.flatMap(([id, fields]) => {
    const raw = fields[fields.indexOf('e') + 1];
    const partial = raw ? (safeJson(raw) as PartialImageEntry | null) : null;
    return partial ? [{ id, partial }] : [];
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
  /** every event of the job until `signal` aborts (a follower that must not miss one between two waits) */
  listen(jobId: string, onEvent: (e: JobEvent) => void, signal: AbortSignal): void;
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
    listen(jobId, onEvent, signal) {
      if (signal.aborted) return;
      const set = waiters.get(jobId) ?? new Set<(e: JobEvent) => void>();
      waiters.set(jobId, set);
      set.add(onEvent);
      signal.addEventListener(
        'abort',
        () => {
          set.delete(onEvent);
          if (set.size === 0) waiters.delete(jobId);
        },
        { once: true },
      );
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
