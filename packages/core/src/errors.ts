/**
 * The service's own errors. Every failure a client can see is one of these; the API's error
 * middleware turns it into OpenAI's error shape `{error: {message, type, param, code}}`.
 */
export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'conflict_error'
  | 'rate_limit_error'
  /** OpenAI's types of a 429: a per-minute limit (`requests`, and `images` beside its `tokens`), a spent budget */
  | 'requests'
  | 'images'
  | 'insufficient_quota'
  | 'provider_error'
  | 'server_error';

export interface ErrorBody {
  message: string;
  type: ErrorType;
  param: string | null;
  code: string | null;
}

export class ServiceError extends Error {
  readonly status: number;
  readonly type: ErrorType;
  readonly param: string | null;
  readonly code: string | null;

  constructor(status: number, type: ErrorType, message: string, opts: { param?: string | null; code?: string | null } = {}) {
    super(message);
    this.name = 'ServiceError';
    this.status = status;
    this.type = type;
    this.param = opts.param ?? null;
    this.code = opts.code ?? null;
  }

  toBody(): ErrorBody {
    return { message: this.message, type: this.type, param: this.param, code: this.code };
  }
}

export const invalidRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ServiceError(400, 'invalid_request_error', message, { param, code });

export const tooLarge = (message: string, param: string | null = null) =>
  new ServiceError(413, 'invalid_request_error', message, { param, code: 'file_too_large' });

export const notFound = (message: string, param: string | null = null, code: string | null = null) =>
  new ServiceError(404, 'not_found_error', message, { param, code });

export const unauthorized = (message: string) => new ServiceError(401, 'authentication_error', message, { code: 'invalid_api_key' });

export const conflict = (message: string, code: string, param: string | null = null) => new ServiceError(409, 'invalid_request_error', message, { param, code });
