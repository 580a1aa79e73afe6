import { ProviderError } from '../types';

/** Upstream codes that mean "the content was refused": permanent, never retried. */
export const CONTENT_POLICY_CODES = new Set([
  'content_policy_violation',
  'contentFilter',
  'content_filter',
  'moderation_blocked',
  'ResponsibleAIPolicyViolation',
  'content_moderated',
  'SAFETY',
  'PROHIBITED_CONTENT',
]);

type HeaderSource = Headers | Record<string, string | string[] | undefined> | undefined;

function header(headers: HeaderSource, name: string): string | null {
  if (!headers) return null;
  if (headers instanceof Headers) return headers.get(name);
  const v = headers[name] ?? headers[name.toLowerCase()];
  return Array.isArray(v) ? (v[0] ?? null) : (v ?? null);
}

/** `retry-after-ms` (milliseconds) wins over `retry-after` (seconds or an HTTP date). */
export function retryAfterMs(headers: HeaderSource): number | null {
  const ms = header(headers, 'retry-after-ms');
  if (ms !== null && ms.trim() !== '') {
    const v = Number(ms);
    if (Number.isFinite(v) && v >= 0) return Math.round(v);
  }
  const ra = header(headers, 'retry-after');
  if (ra === null || ra.trim() === '') return null;
  const seconds = Number(ra);
  if (Number.isFinite(seconds)) return seconds >= 0 ? Math.round(seconds * 1000) : null;
  const date = Date.parse(ra);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}

/**
 * The one place an upstream HTTP failure becomes retryable or permanent: 408, 409, 429 and 5xx are
 * retried (429 and 503 with the upstream's Retry-After); content refusals, auth failures and other
 * 4xx fail the job at once with the upstream's message.
 */
export function errorFromStatus(
  provider: string,
  status: number,
  message: string,
  opts: { headers?: HeaderSource; upstreamCode?: string | undefined; param?: string | null | undefined } = {},
): ProviderError {
  const base = { status, param: opts.param ?? null };
  const upstreamCode = opts.upstreamCode;
  if (status === 429) {
    return new ProviderError(provider, message, { ...base, code: 'rate_limited', retryable: true, retryAfterMs: retryAfterMs(opts.headers) });
  }
  if (status === 408 || status === 409 || status >= 500) {
    return new ProviderError(provider, message, { ...base, code: 'upstream_error', retryable: true, retryAfterMs: retryAfterMs(opts.headers) });
  }
  if (upstreamCode && CONTENT_POLICY_CODES.has(upstreamCode)) {
    return new ProviderError(provider, message, { ...base, code: 'content_policy_violation', retryable: false });
  }
  if (status === 401 || status === 403) {
    return new ProviderError(provider, message, { ...base, code: 'provider_auth_failed', retryable: false });
  }
  return new ProviderError(provider, message, { ...base, code: upstreamCode ?? 'provider_rejected', retryable: false });
}

/** Network-level failures (reset, refused, DNS, timeout) are worth another attempt. */
export function connectionError(provider: string, err: unknown, timedOut: boolean): ProviderError {
  if (timedOut) return new ProviderError(provider, 'the upstream request timed out', { code: 'upstream_timeout', retryable: true });
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
  const message = err instanceof Error ? `${err.message}${cause}` : String(err);
  return new ProviderError(provider, message, { code: 'upstream_unreachable', retryable: true });
}

/** Removes a secret from a message before it can reach a job row or a log. */
export function redact(message: string, ...secrets: Array<string | undefined>): string {
  let out = message;
  for (const s of secrets) if (s) out = out.split(s).join('***');
  return out;
}
