import type { ErrorRequestHandler, RequestHandler } from 'express';
import { isDependencyError, ServiceError, serviceUnavailable } from '@image-edits/core';

/** One place maps every failure to OpenAI's error shape; clients never see a stack trace. */
export const errorHandler: ErrorRequestHandler = (err, req, res, _next) => {
  const error = toServiceError(err);
  if (error.status >= 500) req.log?.error({ err }, error.code === 'service_unavailable' ? 'request failed: a dependency of ours is unavailable' : 'request failed');
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

function toServiceError(err: unknown): ServiceError {
  if (err instanceof ServiceError) return err;
  if (isDependencyError(err)) return serviceUnavailable(err);
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string };
  // body-parser's own errors carry a status and a type
  if (e?.type === 'entity.parse.failed') return new ServiceError(400, 'invalid_request_error', `request body is not valid JSON: ${e.message ?? ''}`.trim(), { code: 'invalid_json' });
  if (e?.type === 'entity.too.large') return new ServiceError(413, 'invalid_request_error', 'request body is too large', { code: 'request_too_large' });
  const status = e?.status ?? e?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return new ServiceError(status, 'invalid_request_error', e.message ?? 'invalid request');
  return new ServiceError(500, 'server_error', 'The server had an error while processing your request; the request id is in the x-request-id header');
}
