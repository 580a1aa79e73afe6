import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Request, RequestHandler, Response } from 'express';
import { conflict, idempotencyHeaders, invalidRequest, MAX_INPUT_DEPTH, parseInput, ServiceError, storableJson } from '@image-edits/core';
import { claimIdempotencyKey, completeIdempotencyKey, releaseIdempotencyKey } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import type { UploadedFile } from '../uploads';
import { apiKeyId } from './auth';
import { assertCleanInput } from './input-check';

/** How long a key is remembered (Stripe: 24 hours). */
export const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000;

export interface IdempotencyOptions {
  /** a digest of everything that makes two requests "the same" */
  hash(req: Request): Promise<string>;
  /** answers a replay of a request that created a job: rendered afresh from the job */
  replayJob?(req: Request, res: Response, jobId: string, prefer: string | undefined): Promise<void>;
}

/**
 * `Idempotency-Key` on a creating POST (Stripe's semantics): the same key with the same parameters
 * replays the first response and creates nothing; with other parameters it is a 422; while the first
 * request is still being accepted, a 409. Keys are scoped to the API key and kept 24 hours. A first
 * request that fails on our side (5xx) before creating anything leaves no trace, so it can be retried.
 */
export function idempotency(deps: Pick<ApiDeps, 'db' | 'logger'>, opts: IdempotencyOptions): RequestHandler {
  return async (req, res, next) => {
    // this follows every body parser of a creating route: a flawed input is refused before any key is claimed
    assertCleanInput(req, res);
    const header = req.get('idempotency-key');
    if (header === undefined) return next();
    const key = parseInput(idempotencyHeaders, { 'Idempotency-Key': header })['Idempotency-Key']!;
    const hash = await opts.hash(req);
    const claim = await claimIdempotencyKey(deps.db, apiKeyId(res.locals), key, hash, IDEMPOTENCY_TTL_MS);
    if (!claim.claimed) {
      const first = claim.existing;
      if (first.requestHash !== hash) {
        throw new ServiceError(422, 'invalid_request_error', `Idempotency-Key '${key}' was first used with other parameters; use a new key for a different request`, {
          param: 'Idempotency-Key',
          code: 'idempotency_error',
        });
      }
      if (first.state === 'pending') throw conflict(`A request with Idempotency-Key '${key}' is still being processed; retry once it has answered`, 'idempotency_key_in_use', 'Idempotency-Key');
      res.set('idempotent-replayed', 'true');
      if (first.jobId && opts.replayJob) return opts.replayJob(req, res, first.jobId, first.prefer ?? undefined);
      res.status(first.responseStatus ?? 200).json(first.responseBody ?? {});
      return;
    }

    const id = claim.id;
    let settled = false;
    const settle = (work: () => Promise<void>) => {
      if (settled) return;
      settled = true;
      work().catch((err: unknown) => deps.logger.error({ err, idempotencyKey: id }, 'could not save the idempotent response'));
    };
    // a request that created a job is settled at once: a retry (even while a sync request still waits) replays the job
    res.locals.recordJob = (jobId: string) => settle(() => completeIdempotencyKey(deps.db, id, { status: 200, jobId, prefer: req.get('prefer') }));
    let body: unknown;
    const json = res.json.bind(res);
    res.json = (b: unknown) => {
      body = b;
      return json(b);
    };
    res.on('close', () => {
      // our own failure (5xx), or a client gone before an answer: forget the key, nothing was created
      if (res.statusCode >= 500 || !res.writableFinished) settle(() => releaseIdempotencyKey(deps.db, id));
      else
        settle(async () => {
          try {
            // an answer may quote the client's text: stored as storable text, so it can always be replayed
            await completeIdempotencyKey(deps.db, id, { status: res.statusCode, body: storableJson(body) });
          } catch (err) {
            // never a key stuck pending for 24 h: unstored, it is released and a retry runs again
            deps.logger.warn({ err, idempotencyKey: id }, 'idempotent answer not stored; the key is released');
            await releaseIdempotencyKey(deps.db, id);
          }
        });
    });
    next();
  };
}

/** Called by a route once its request has created a job (a no-op without an Idempotency-Key). */
export function recordJob(res: Response, jobId: string): void {
  (res.locals.recordJob as ((id: string) => void) | undefined)?.(jobId);
}

/** The digest of a multipart request: method, path, every text field, every file's bytes, and the given headers. */
export async function multipartDigest(req: Request, files: UploadedFile[], headers: string[] = []): Promise<string> {
  const h = createHash('sha256');
  const fields = req.body && typeof req.body === 'object' ? (req.body as Record<string, unknown>) : {};
  h.update(JSON.stringify([req.method, req.path, sortKeys(fields), headers.map((name) => [name, req.get(name) ?? null])]));
  for (const f of files) {
    h.update(`\0${f.field}\0`);
    if (f.buffer) h.update(f.buffer);
    else if (f.path) for await (const chunk of createReadStream(f.path)) h.update(chunk as Buffer);
  }
  return h.digest('hex');
}

/** Recursive, so bounded: the input check refuses deeper bodies before this runs, and this refuses them itself too. */
function sortKeys(v: unknown, depth = 0): unknown {
  if (depth > MAX_INPUT_DEPTH) throw invalidRequest(`the request body is nested more than ${MAX_INPUT_DEPTH} levels deep; no parameter of this API is`, null, 'invalid_value');
  if (Array.isArray(v)) return v.map((x) => sortKeys(x, depth + 1));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)).map(([k, x]) => [k, sortKeys(x, depth + 1)]));
  return v;
}

/** The digest of a JSON request: method, path and the parsed body (key order does not matter). */
export async function jsonDigest(req: Request): Promise<string> {
  return createHash('sha256').update(JSON.stringify([req.method, req.path, sortKeys(req.body ?? null)])).digest('hex');
}
