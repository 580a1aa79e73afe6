import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { buildModelRoutes, createLogger, type ProviderId, type ServiceConfig } from '@image-edits/core';
import { createDb } from '@image-edits/db';
import { createBatchQueue, createEditQueue, createJobEventHub, createRedis, createWebhookQueue } from '@image-edits/queue';
import { createObjectStore } from '@image-edits/storage';
import type { Logger } from 'pino';
import { createApp } from './app';
import type { ApiDeps } from './deps';

export interface RunningApi {
  url: string;
  deps: ApiDeps;
  /**
   * The drain of a SIGTERM (see `deps.lifecycle`): /readyz answers 503, the listener stops accepting,
   * every response from then on carries `Connection: close` (idle keep-alive connections close at
   * once), open requests finish; at SHUTDOWN_TIMEOUT_MS the remaining connections are destroyed.
   * Then it disconnects. `drained` is false when the deadline cut requests short. Calling it again
   * returns the same drain.
   */
  close(): Promise<{ drained: boolean }>;
}

/** waiting requests answer this long before SHUTDOWN_TIMEOUT_MS (at most a quarter of it), so their answer goes out before the exit */
const WAIT_DEADLINE_MARGIN_MS = 2000;

/** Builds the API's dependencies from configuration and listens. */
export async function startApi(config: ServiceConfig, opts: { logger?: Logger } = {}): Promise<RunningApi> {
  const env = config.env;
  const logger = opts.logger ?? createLogger('api', env);
  const routes = buildModelRoutes(config);
  const db = createDb(env.DATABASE_URL, { poolSize: env.DATABASE_POOL_SIZE });
  const redis = createRedis(env.REDIS_URL);
  const store = createObjectStore(config.s3);
  await store.ensureBucket();
  // retries per provider, from the registry: a job's first queue sets the policy of its first target
  const queue = createEditQueue({ redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX }, redis, (provider) => config.registry.providers[provider as ProviderId]);
  const webhookQueue = createWebhookQueue({ redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX }, redis, env.WEBHOOK_RETRY_DELAYS_MS);
  const batchQueue = createBatchQueue({ redisUrl: env.REDIS_URL, prefix: env.QUEUE_PREFIX }, redis);
  const hub = await createJobEventHub(createRedis(env.REDIS_URL), env.QUEUE_PREFIX);
  const uploadDir = env.UPLOAD_DIR ?? path.join(os.tmpdir(), 'image-edits-uploads');
  const waitDeadline = new AbortController();
  const lifecycle = { draining: false, waitDeadline: waitDeadline.signal };
  const deps: ApiDeps = { config, db, store, queue, webhookQueue, batchQueue, hub, redis, routes, logger, uploadDir, lifecycle };

  const app = createApp(deps);
  // Node's own timeouts cover a request until it has arrived (headers, then the whole body); checked
  // often enough that a short setting means what it says. Long sync waits come after: never cut.
  const server: Server = http.createServer(
    {
      headersTimeout: env.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeout: env.HTTP_REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(env.HTTP_HEADERS_TIMEOUT_MS / 2))),
    },
    app,
  );
  await new Promise<void>((resolve) => server.listen(env.PORT, env.HOST, resolve));
  // keep-alive longer than typical LBs
  server.keepAliveTimeout = 65_000;
  server.on('clientError', answerClientError);
  const { port } = server.address() as AddressInfo;
  const url = env.PUBLIC_URL ?? `http://${env.HOST === '0.0.0.0' ? '127.0.0.1' : env.HOST}:${port}`;

  // responses not finished yet; before Express sees a request, so even a synchronous answer gets the header
  const open = new Set<ServerResponse>();
  server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
    watchBodyIdle(req, env.HTTP_BODY_IDLE_TIMEOUT_MS);
    open.add(res);
    res.once('close', () => {
      open.delete(res);
      quiet.set(req.socket, req.socket.bytesRead);
    });
    if (lifecycle.draining) res.setHeader('Connection', 'close');
  });

  // each connection and how many bytes it had read when its last answer ended: one that has read
  // nothing since holds no request, and is closed at the drain (Node's closeIdleConnections misses
  // one whose client abandoned a stream and left it half-open, which would hold the drain)
  const quiet = new Map<Socket, number>();
  server.on('connection', (socket: Socket) => {
    quiet.set(socket, 0);
    socket.once('close', () => quiet.delete(socket));
  });

  /** resolves when every connection has ended; true unless the deadline had to destroy some */
  const drain = async (): Promise<boolean> => {
    const timeoutMs = env.SHUTDOWN_TIMEOUT_MS;
    lifecycle.draining = true;
    logger.info({ openRequests: open.size, timeoutMs }, 'draining: not accepting, finishing open requests');
    const answering = new Set([...open].map((res) => res.socket));
    for (const [socket, readAtRest] of quiet) if (!answering.has(socket) && socket.bytesRead === readAtRest) socket.destroy();
    for (const res of open) {
      if (!res.headersSent) res.setHeader('Connection', 'close');
      // already answering with keep-alive (a download): its connection closes once the response ends
      else res.once('close', () => setImmediate(() => server.closeIdleConnections()));
    }
    const waitTimer = setTimeout(() => waitDeadline.abort(new Error('the API is shutting down')), timeoutMs - Math.min(WAIT_DEADLINE_MARGIN_MS, Math.floor(timeoutMs / 4)));
    let cutShort = false;
    const hardTimer = setTimeout(() => {
      cutShort = true;
      logger.warn({ openRequests: open.size, timeoutMs }, 'SHUTDOWN_TIMEOUT_MS passed: destroying the connections still open');
      server.closeAllConnections();
    }, timeoutMs);
    try {
      // stops listening and closes idle keep-alive connections; the callback runs when the last connection ends
      await new Promise<void>((resolve) => server.close(() => resolve()));
    } finally {
      clearTimeout(waitTimer);
      clearTimeout(hardTimer);
    }
    return !cutShort;
  };

  const disconnect = async () => {
    await hub.close();
    await queue.close();
    await webhookQueue.close();
    await batchQueue.close();
    redis.disconnect();
    store.destroy();
    await db.$disconnect();
  };

  let closing: Promise<{ drained: boolean }> | undefined;
  return {
    url,
    deps,
    close() {
      closing ??= (async () => {
        const drained = await drain();
        await disconnect();
        return { drained };
      })();
      return closing;
    },
  };
}

/**
 * The body-idle timeout: a request whose body stops arriving for `ms` loses its connection (and, with
 * it, its uploads and its share of the upload memory budget). It watches only while the body is being
 * received: once the request is complete (a sync edit waiting on its job), it is gone. Silence that is
 * ours (our reader holds a full buffer: S3 or the disk is slow) is not counted against the client.
 */
export function watchBodyIdle(req: IncomingMessage, ms: number): void {
  if (ms <= 0 || req.complete) return;
  const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
  if (!hasBody) return;
  const socket = req.socket;
  let seen = socket.bytesRead;
  const timer = setInterval(() => {
    if (req.complete || req.destroyed) return clearInterval(timer);
    const now = socket.bytesRead;
    if (now !== seen || req.readableLength >= req.readableHighWaterMark) {
      seen = now;
      return;
    }
    // a whole interval without a byte: at least `ms` of silence
    clearInterval(timer);
    socket.destroy();
  }, ms);
  timer.unref();
  req.once('close', () => clearInterval(timer));
}

/** What Node answers itself (malformed or oversized headers, a request that took too long to arrive), in OpenAI's shape. */
const CLIENT_ERRORS: Record<string, [status: number, reason: string, code: string, message: string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'headers_too_large', 'the request headers are larger than this server accepts (16 KB); send fewer or shorter headers'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, 'Content Too Large', 'request_too_large', 'the chunk extensions of the request body are too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'request_timeout', 'the request (its headers or its body) took too long to arrive; send it again at a steady pace'],
};
const BAD_REQUEST: [number, string, string, string] = [400, 'Bad Request', 'invalid_http_request', 'the request is not valid HTTP/1.1 (its request line or headers are malformed)'];

function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  // a response already under way (or a client already gone) cannot be answered again
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const [status, reason, code, message] = CLIENT_ERRORS[err.code ?? ''] ?? BAD_REQUEST;
  const body = JSON.stringify({ error: { message, type: 'invalid_request_error', param: null, code } });
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n${body}`);
  // a client that never reads its answer does not keep the socket
  setTimeout(() => socket.destroy(), 1000).unref();
}
