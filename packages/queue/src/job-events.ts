import type { Redis } from 'ioredis';
import { type JobEvent, jobEvent, jobEventsChannel } from './contract';

export async function publishJobEvent(redis: Redis, prefix: string, event: JobEvent): Promise<void> {
  await redis.publish(jobEventsChannel(prefix), JSON.stringify(event));
}

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
