import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import { isDependencyError, ServiceError, serviceUnavailable } from '@image-edits/core';

/** nginx's status for a client that closed its request before the answer: logged and counted as such, never sent. */
export const CLIENT_CLOSED_REQUEST = 499;

/** One place maps every failure to OpenAI's error shape; clients never see a stack trace. */
export const errorHandler: ErrorRequestHandler = async (err, req, res, _next) => {
  if (clientAborted(err, req)) {
    // the client's doing, not ours: no 500, no error-level log, nobody to answer
    res.statusCode = CLIENT_CLOSED_REQUEST;
    req.log?.info({ err: { message: (err as Error)?.message, code: (err as { code?: string })?.code } }, 'request aborted by the client');
    await discardUploads(res);
    res.destroy();
    return;
  }
  const error = toServiceError(err);
  if (error.status >= 500) req.log?.error({ err }, error.code === 'service_unavailable' ? 'request failed: a dependency of ours is unavailable' : 'request failed');
  // a refused request's uploads are gone before the client hears why (no race with its next look)
  await discardUploads(res);
  if (res.headersSent) {
    res.end();
    return;
  }
  // our own outage: the client may retry shortly (the OpenAI SDKs honour retry-after on 503)
  if (error.status === 503) res.set('retry-after', '2');
  res.status(error.status).json({ error: error.toBody() });
};

export const notFoundHandler: RequestHandler = (req, res) => {
  res.status(404).json({ error: { message: `Invalid URL (${req.method} ${req.path})`, type: 'invalid_request_error', param: null, code: 'unknown_url' } });
};

/** What a body parser stored for this request, deleted when it is refused: set by the upload middlewares. */
export function onRefusal(res: Response, discard: () => Promise<void>): void {
  res.locals.discardUploads = discard;
}

async function discardUploads(res: Response): Promise<void> {
  const discard = res.locals.discardUploads as (() => Promise<void>) | undefined;
  // best effort: the response-close cleanups and the orphan sweep catch what this misses
  if (discard) await discard().catch(() => undefined);
}

/** The client closed the connection while its request was still being read. */
function clientAborted(err: unknown, req: Request): boolean {
  const e = err as { type?: string; code?: string } | null;
  const gone = req.destroyed || req.socket?.destroyed === true;
  if (e?.type === 'request.aborted') return true;
  // a reset while the body was arriving (or with the client's socket gone) is the client's; one after
  // that, with the client still there, came from our Postgres or S3: a 503, not a dropped connection
  if ((e?.code === 'ECONNABORTED' || e?.code === 'ECONNRESET') && (!req.complete || gone)) return true;
  return !req.complete && gone;
}

/** body-parser's errors by `type`: status, code and a message saying what to fix. */
const BODY_ERRORS: Record<string, (e: { charset?: string; encoding?: string; message?: string }) => ServiceError> = {
  'entity.parse.failed': (e) => new ServiceError(400, 'invalid_request_error', `request body is not valid JSON: ${e.message ?? ''}`.trim(), { code: 'invalid_json' }),
  'entity.too.large': () => new ServiceError(413, 'invalid_request_error', 'request body is too large', { code: 'request_too_large' }),
  'charset.unsupported': (e) =>
    new ServiceError(415, 'invalid_request_error', `request body charset '${e.charset ?? ''}' is not supported; send UTF-8`, { param: 'Content-Type', code: 'unsupported_charset' }),
  'encoding.unsupported': (e) =>
    new ServiceError(415, 'invalid_request_error', `Content-Encoding '${e.encoding ?? ''}' is not supported; send the body as is, or gzip, deflate or br`, {
      param: 'Content-Encoding',
      code: 'unsupported_content_encoding',
    }),
  'request.size.invalid': () => new ServiceError(400, 'invalid_request_error', 'the request body is not as long as its Content-Length says', { param: 'Content-Length', code: 'invalid_content_length' }),
  'parameters.too.many': () => new ServiceError(413, 'invalid_request_error', 'the request has too many parameters', { code: 'request_too_large' }),
};

/** A code for a 4xx that came without one (from a library): every error the API sends has a code. */
const CODE_BY_STATUS: Record<number, string> = { 400: 'invalid_request', 404: 'not_found', 405: 'method_not_allowed', 408: 'request_timeout', 413: 'request_too_large', 415: 'unsupported_media_type' };

function toServiceError(err: unknown): ServiceError {
  if (err instanceof ServiceError) return err;
  if (isDependencyError(err)) return serviceUnavailable(err);
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string; code?: string; charset?: string; encoding?: string };
  const known = e?.type ? BODY_ERRORS[e.type] : undefined;
  if (known) return known(e);
  // a compressed body that does not decompress (body-parser passes zlib's error on as a 400)
  if (typeof e?.code === 'string' && e.code.startsWith('Z_')) {
    return new ServiceError(400, 'invalid_request_error', 'the request body could not be decompressed as its Content-Encoding says', { param: 'Content-Encoding', code: 'invalid_content_encoding' });
  }
  // the router's: a path that is not valid percent-encoded UTF-8
  if (err instanceof URIError) return new ServiceError(400, 'invalid_request_error', 'the URL is not validly percent-encoded UTF-8', { code: 'invalid_url' });
  const status = e?.status ?? e?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ServiceError(status, 'invalid_request_error', e.message ?? 'invalid request', { code: CODE_BY_STATUS[status] ?? 'invalid_request' });
  }
  return new ServiceError(500, 'server_error', 'The server had an error while processing your request; the request id is in the x-request-id header', { code: 'internal_error' });
}
