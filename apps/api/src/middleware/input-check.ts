import type { Request, RequestHandler, Response } from 'express';
import { findInputFlaw, inputFlawError, notFound, textFlaw } from '@image-edits/core';

/**
 * The input rule of packages/core (`findInputFlaw`: no U+0000, no unpaired surrogate, no absurd
 * nesting) over everything a request carries that could reach Postgres or recursive code: the
 * path's ids (404: no id holds such a character), the query, the body and the uploads' filenames
 * (400 `invalid_value` naming the field). Mounted before the routes (path and query) and after the
 * shared JSON parser; a route with its own body parser has it run by its `idempotency` middleware,
 * which follows every such parser and checks the input before (and whether or not) a key is claimed.
 * Each part is checked once per request, however often it runs.
 */
export const checkInput: RequestHandler = (req, res, next) => {
  assertCleanInput(req, res);
  next();
};

/** Throws the 400 (or 404) of the request's first flaw; parts already checked are skipped. */
export function assertCleanInput(req: Request, res: Response): void {
  const seen = (res.locals.inputChecked as Set<unknown> | undefined) ?? new Set<unknown>();
  res.locals.inputChecked = seen;
  const once = (part: unknown) => {
    if (part === undefined || part === null || seen.has(part)) return false;
    seen.add(part);
    return true;
  };
  if (once('path')) checkPath(req.path);
  // Express 5 parses the query afresh on every read: it is marked by name
  if (once('query')) {
    const flaw = findInputFlaw(req.query);
    if (flaw) throw inputFlawError(flaw);
  }
  if (typeof req.body === 'object' && once(req.body)) {
    const flaw = findInputFlaw(req.body);
    if (flaw) throw inputFlawError(flaw);
  }
  const files = [...(Array.isArray(req.files) ? req.files : []), ...(req.file ? [req.file] : [])];
  for (const f of files) {
    if (!once(f)) continue;
    const flaw = textFlaw(f.originalname ?? '');
    if (flaw) throw inputFlawError({ kind: flaw, path: [], inKey: false }, [`${f.fieldname}.filename`]);
  }
}

/** The singular of a collection in the path: its 404's code (`job_not_found`, ...). */
const RESOURCES: Record<string, string> = {
  jobs: 'job',
  files: 'file',
  batches: 'batch',
  webhook_endpoints: 'webhook_endpoint',
  webhook_deliveries: 'webhook_delivery',
  models: 'model',
};

/** A path segment that decodes to a flawed id names nothing: 404 with the collection's code. */
function checkPath(path: Request['path']): void {
  const segments = path.split('/');
  for (let i = 0; i < segments.length; i++) {
    let segment: string;
    try {
      segment = decodeURIComponent(segments[i]!);
    } catch {
      // malformed percent-encoding: the router refuses it (400)
      continue;
    }
    if (!textFlaw(segment)) continue;
    const resource = RESOURCES[segments[i - 1] ?? ''];
    throw notFound(
      `No ${resource?.replace('_', ' ') ?? 'object'} with that id: ids never contain NUL characters or unpaired surrogates`,
      'id',
      resource ? `${resource}_not_found` : 'not_found',
    );
  }
}
