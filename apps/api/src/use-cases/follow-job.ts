import { type JobStreamEntry, readJobStream } from '@image-edits/queue';
import type { ApiDeps } from '../deps';

export type Followed = { id: string; entry: JobStreamEntry } | 'tick';

/**
 * A job's stream from after `afterId` ('0': from its start): entries as the worker (or a cancel, or
 * the deadline sweep) appends them, woken by the process's one Redis subscription (no polling per
 * follower), and a 'tick' whenever `tickMs` passes without one, so the caller can refresh what it
 * derives from the row and keep the connection alive. Ends when `signal` aborts. With Redis away,
 * only ticks come (the caller reads the row).
 */
export async function* followJob(deps: Pick<ApiDeps, 'hub' | 'redis' | 'config' | 'logger'>, jobId: string, afterId: string, signal: AbortSignal, tickMs: () => number): AsyncGenerator<Followed> {
  const prefix = deps.config.env.QUEUE_PREFIX;
  let last = afterId;
  while (!signal.aborted) {
    // listen before reading, so an entry appended in between is not missed
    const stop = new AbortController();
    const woken = deps.hub.waitFor(jobId, () => true, tickMs(), AbortSignal.any([signal, stop.signal]));
    const entries = await readJobStream(deps.redis, prefix, jobId, last).catch((err: unknown) => {
      deps.logger.warn({ err, jobId }, 'job stream unreadable; following the row only');
      return [];
    });
    if (entries.length > 0) {
      stop.abort();
      for (const e of entries) {
        last = e.id;
        yield e;
        if (signal.aborted) return;
      }
      continue;
    }
    if ((await woken) === null && !signal.aborted) yield 'tick';
  }
}
