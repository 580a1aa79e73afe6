import { ServiceError } from './errors';

/**
 * Our own infrastructure (Postgres, Redis, S3) failing: never the client's fault, never the
 * provider's. The API answers 503 + Retry-After for these; the worker waits for the dependency to come
 * back without spending a provider attempt.
 */
export class DependencyUnavailable extends Error {
  constructor(
    readonly dependency: 'postgres' | 'redis' | 's3' | 'unknown',
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DependencyUnavailable';
  }
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_SOCKET_CLOSED',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);
/** Prisma: can't reach / timed out / server closed the connection / pool timeout */
const PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024']);
/** kinds of @prisma/adapter-pg's driver errors that mean the database is not there */
const ADAPTER_KINDS = new Set(['DatabaseNotReachable', 'ConnectionClosed', 'SocketTimeout', 'TooManyConnections', 'TlsConnectionError']);
/** Postgres SQLSTATEs of a server that is going away or not taking connections (class 08: connection exceptions) */
const isUnavailableSqlState = (code: string) => code.startsWith('08') || ['57P01', '57P02', '57P03', '53300', '57014'].includes(code);
const AWS_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'ServiceUnavailable', 'SlowDown', 'InternalError', 'NetworkingError']);
const MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|Connection is closed|Stream isn't writeable|max retries per request|socket hang up|Client network socket disconnected|Can't reach database server|Command timed out|connect ECONNREFUSED|read ECONNRESET|Redis is loading|LOADING|READONLY|CLUSTERDOWN|TRYAGAIN/;

/** Whether `err` (or an error it wraps) says one of our own dependencies is unreachable or failing. */
export function isDependencyError(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; depth < 6 && e && typeof e === 'object'; depth++) {
    if (e instanceof ServiceError) return false;
    if (e instanceof DependencyUnavailable) return true;
    const x = e as { name?: unknown; code?: unknown; message?: unknown; meta?: { driverAdapterError?: { cause?: { kind?: string; code?: string } } }; $metadata?: { httpStatusCode?: number }; $retryable?: unknown; cause?: unknown };
    if (typeof x.code === 'string' && (NETWORK_CODES.has(x.code) || PRISMA_CODES.has(x.code))) return true;
    const adapter = x.meta?.driverAdapterError?.cause;
    if (adapter?.kind && ADAPTER_KINDS.has(adapter.kind)) return true;
    if (adapter?.kind === 'postgres' && typeof adapter.code === 'string' && isUnavailableSqlState(adapter.code)) return true;
    if (x.name === 'PrismaClientInitializationError' || x.name === 'MaxRetriesPerRequestError') return true;
    if (typeof x.name === 'string' && AWS_NAMES.has(x.name)) return true;
    if (x.$metadata && ((x.$metadata.httpStatusCode ?? 0) >= 500 || x.$retryable)) return true;
    if (typeof x.message === 'string' && MESSAGES.test(x.message)) return true;
    e = x.cause;
  }
  return false;
}

/** Which of our dependencies an error most likely came from, for logs and metrics. */
export function dependencyOf(err: unknown): DependencyUnavailable['dependency'] {
  if (err instanceof DependencyUnavailable) return err.dependency;
  const x = err as { name?: string; meta?: unknown; $metadata?: unknown; message?: string };
  if (x?.$metadata) return 's3';
  if (x?.meta || x?.name?.startsWith('Prisma')) return 'postgres';
  if (/redis|Connection is closed|Stream isn't writeable|max retries per request/i.test(x?.message ?? '')) return 'redis';
  return 'unknown';
}

/** The API's answer to a dependency failure: 503, retry shortly, nothing of it is the client's doing. */
export function serviceUnavailable(err: unknown): ServiceError {
  const dep = dependencyOf(err);
  const what = dep === 'unknown' ? 'A service we depend on' : `Our ${dep === 's3' ? 'object storage' : dep === 'postgres' ? 'database' : 'queue'}`;
  return new ServiceError(503, 'server_error', `${what} is unavailable right now (this is not a problem with your request); retry in a few seconds`, { code: 'service_unavailable' });
}
