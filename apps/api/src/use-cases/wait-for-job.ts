import { isFinal, type JobStatus } from '@image-edits/core';
import { getJob, type JobRecord } from '@image-edits/db';
import type { ApiDeps } from '../deps';

/**
 * Waits until the job reaches a final status, or `timeoutMs` passes, or `signal` aborts (the client
 * went away: the job itself goes on). Completion arrives over Redis pub/sub; the row is read once
 * before waiting (the job may already be done) and again at long intervals in case a message was
 * lost while Redis reconnected.
 */
export async function waitForJob(deps: Pick<ApiDeps, 'db' | 'hub'>, jobId: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord | null> {
  const deadline = Date.now() + timeoutMs;
  const SAFETY_RECHECK_MS = 15_000;
  for (;;) {
    const remaining = deadline - Date.now();
    // subscribe before reading, so a completion between the read and the wait is not missed
    const stop = new AbortController();
    const waitSignal = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
    const event = deps.hub.waitFor(jobId, (e) => isFinal(e.status as JobStatus), Math.max(0, Math.min(remaining, SAFETY_RECHECK_MS)), waitSignal);
    const job = await getJob(deps.db, jobId);
    if (!job || isFinal(job.status) || remaining <= 0 || signal?.aborted) {
      stop.abort();
      await event;
      return job;
    }
    await event;
    if (signal?.aborted) return getJob(deps.db, jobId);
  }
}
