import { setTimeout as sleep } from 'node:timers/promises';
import { isDependencyError, isFinal, type JobStatus } from '@image-edits/core';
import { getJob, type JobRecord } from '@image-edits/db';
import type { JobEvent } from '@image-edits/queue';
import type { ApiDeps } from '../deps';

const SAFETY_RECHECK_MS = 15_000;
/** while our database does not answer, it is asked again this often (the wait goes on; it never fails) */
const OUTAGE_RECHECK_MS = 1000;

/** A wait for a job's final event that was registered before the job could end (see `listenForEnd`). */
export interface EarlyListener {
  event: Promise<JobEvent | null>;
  /** the job was never created (the submission failed): stop listening */
  cancel(): void;
}

/**
 * Starts listening for a job's final event before the job is enqueued: when it ends, the event cannot
 * have gone by unheard, so `waitForJob` needs no read of the row before waiting (one query less on
 * every synchronous edit).
 */
export function listenForEnd(deps: Pick<ApiDeps, 'hub'>, jobId: string, timeoutMs: number, signal: AbortSignal): EarlyListener {
  const stop = new AbortController();
  const event = deps.hub.waitFor(jobId, (e) => isFinal(e.status as JobStatus), Math.max(0, Math.min(timeoutMs, SAFETY_RECHECK_MS)), AbortSignal.any([signal, stop.signal]));
  return { event, cancel: () => stop.abort() };
}

/**
 * Waits until the job reaches a final status, or `timeoutMs` passes, or `signal` aborts (the client
 * went away: the job itself goes on). Completion arrives over Redis pub/sub; the row is read once
 * before waiting (the job may already be done; unless `early` was listening since before the job
 * was enqueued) and again at long intervals in case a message was lost while Redis reconnected.
 * A read that fails because our database is away is retried until the deadline: null then means
 * the job's state is unknown (the caller answers as for an unfinished job).
 */
export async function waitForJob(deps: Pick<ApiDeps, 'db' | 'hub'>, jobId: string, timeoutMs: number, signal?: AbortSignal, early?: EarlyListener): Promise<JobRecord | null> {
  const deadline = Date.now() + timeoutMs;
  const read = (): Promise<JobRecord | null | 'unknown'> =>
    getJob(deps.db, jobId).catch((err: unknown) => {
      if (!isDependencyError(err)) throw err;
      return 'unknown' as const;
    });
  // 'unknown': our database did not answer
  let last: JobRecord | null | 'unknown';
  if (early) {
    await early.event;
    last = await read();
    if (last === null || (last !== 'unknown' && isFinal(last.status)) || deadline - Date.now() <= 0 || signal?.aborted) return known(last);
  }
  for (;;) {
    const remaining = deadline - Date.now();
    // subscribe before reading, so a completion between the read and the wait is not missed
    const stop = new AbortController();
    const waitSignal = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
    const event = deps.hub.waitFor(jobId, (e) => isFinal(e.status as JobStatus), Math.max(0, Math.min(remaining, SAFETY_RECHECK_MS)), waitSignal);
    last = await read();
    if (last === null || (last !== 'unknown' && isFinal(last.status)) || remaining <= 0 || signal?.aborted) {
      stop.abort();
      await event;
      return known(last);
    }
    // a read that failed is tried again soon rather than at the long interval
    if (last === 'unknown') await Promise.race([event, sleep(Math.min(remaining, OUTAGE_RECHECK_MS))]);
    else await event;
    stop.abort();
    if (signal?.aborted) return known(await read());
  }
}

const known = (job: JobRecord | null | 'unknown'): JobRecord | null => (job === 'unknown' ? null : job);
