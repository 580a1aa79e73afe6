import { type JobEvent, type PartialImageEntry, readJobStream } from '@image-edits/queue';
import type { ApiDeps } from '../deps';

export type Followed = { kind: 'status'; status: string } | { kind: 'partial'; id: string; partial: PartialImageEntry } | 'tick';

/**
 * A job as it moves: its status events as the worker (or a cancel, or the deadline sweep) announces
 * them, heard through the process's one Redis subscription (no polling per follower), its partial
 * images from its stream after `afterId` ('0': from the start; replayed first), and a 'tick' whenever
 * `tickMs` passes without news, so the caller can re-read the row (the record; an announcement can be
 * lost while Redis reconnects) and keep the connection alive. Ends when `signal` aborts.
 */
export async function* followJob(deps: Pick<ApiDeps, 'hub' | 'redis' | 'config' | 'logger'>, jobId: string, afterId: string, signal: AbortSignal, tickMs: () => number): AsyncGenerator<Followed> {
  const prefix = deps.config.env.QUEUE_PREFIX;
  const done = new AbortController();
  const listening = AbortSignal.any([signal, done.signal]);
  const pending: JobEvent[] = [];
  let wake: (() => void) | undefined;
  // listening from before the first read: nothing announced meanwhile is missed
  deps.hub.listen(
    jobId,
    (e) => {
      pending.push(e);
      wake?.();
    },
    listening,
  );
  listening.addEventListener('abort', () => wake?.(), { once: true });
  let last = afterId;
  let readPartials = true;
  try {
    while (!signal.aborted) {
      if (readPartials) {
        readPartials = false;
        const entries = await readJobStream(deps.redis, prefix, jobId, last).catch((err: unknown) => {
          deps.logger.warn({ err, jobId }, 'job stream unreadable; partial images skipped');
          return [];
        });
        for (const e of entries) {
          last = e.id;
          yield { kind: 'partial', id: e.id, partial: e.partial };
          if (signal.aborted) return;
        }
      }
      if (pending.length === 0) {
        const ticked = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(true), tickMs());
          wake = () => {
            clearTimeout(timer);
            resolve(false);
          };
        });
        wake = undefined;
        if (ticked) yield 'tick';
        continue;
      }
      for (const e of pending.splice(0)) {
        if (e.status === 'partial') readPartials = true;
        else yield { kind: 'status', status: e.status };
        if (signal.aborted) return;
      }
    }
  } finally {
    done.abort();
  }
}
