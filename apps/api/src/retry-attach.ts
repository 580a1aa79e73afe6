import type { Request, Response } from 'express';
import type { ApiDeps } from './deps';
import { apiKeyId } from './middleware/auth';

/**
 * Client retries of a synchronous edit attach to the job their first try created, so that a client
 * whose own timeout is shorter than the edit (or whose connection broke) never pays for it twice.
 *
 * Every synchronous submission notes its request digest (method, path, fields, image bytes) for its
 * key while it may still be waited on; when we answered 504 for it or saw its client leave before the
 * job ended, the note is kept for RETRY_ATTACH_WINDOW_SECONDS. A later identical submission from the
 * same key attaches to that job if it says it is a retry (the OpenAI SDKs' `x-stainless-retry-count`)
 * or if its first try was left unanswered. Everything lives in Redis (any API process can answer a
 * retry) and is best effort: with Redis away a retry is simply a new submission.
 */
export interface RetryNotes {
  /** the job of an earlier identical try this request should attach to, if any */
  find(req: Request, res: Response, digest: string): Promise<string | undefined>;
  /** a synchronous submission created `jobId`; a retry of it while it runs attaches to it */
  submitted(res: Response, digest: string, jobId: string, waitMs: number): void;
  /** we answered 504 for `jobId` or its client left before it ended: an identical submission is a retry */
  unanswered(res: Response, digest: string, jobId: string): void;
}

/** Redis calls on this path wait at most this long: a slow Redis must not hold a submission. */
const REDIS_BUDGET_MS = 300;

export function retryNotes(deps: Pick<ApiDeps, 'redis' | 'config' | 'logger'>): RetryNotes {
  const prefix = deps.config.env.QUEUE_PREFIX;
  const windowS = deps.config.env.RETRY_ATTACH_WINDOW_SECONDS;
  const key = (kind: 'running' | 'unanswered', res: Response, digest: string) => `${prefix}:retry-attach:${kind}:${apiKeyId(res.locals)}:${digest}`;
  const bounded = <T>(p: Promise<T>): Promise<T | undefined> =>
    Promise.race([p, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), REDIS_BUDGET_MS).unref())]).catch((err: unknown) => {
      deps.logger.warn({ err }, 'retry notes unavailable; a retry is a new submission');
      return undefined;
    });
  const note = (k: string, jobId: string, ttlS: number) => {
    if (ttlS <= 0) return;
    void bounded(deps.redis.set(k, jobId, 'EX', ttlS));
  };
  return {
    async find(req, res, digest) {
      if (windowS <= 0) return undefined;
      const retry = Number(req.get('x-stainless-retry-count') ?? '0') >= 1;
      const keys = retry ? [key('unanswered', res, digest), key('running', res, digest)] : [key('unanswered', res, digest)];
      const found = await bounded(deps.redis.mget(...keys));
      return found?.find((id): id is string => typeof id === 'string' && id.length > 0);
    },
    submitted(res, digest, jobId, waitMs) {
      // while the first try may still be waited on, and a little after
      note(key('running', res, digest), jobId, Math.min(windowS, Math.ceil(waitMs / 1000) + 60));
    },
    unanswered(res, digest, jobId) {
      note(key('unanswered', res, digest), jobId, windowS);
    },
  };
}
