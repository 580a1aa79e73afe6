import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler, Router } from 'express';
import { Router as createRouter } from 'express';
import { collectDefaultMetrics, Histogram, Registry } from 'prom-client';

/** Prometheus metrics of one API process (a registry per app, so tests can build several). `token`: METRICS_TOKEN, required as a bearer token when set. */
export function createMetrics(token?: string): { middleware: RequestHandler; router: Router } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const duration = new Histogram({
    name: 'image_edits_http_request_duration_seconds',
    help: 'HTTP request duration by route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  const middleware: RequestHandler = (req, res, next) => {
    const end = duration.startTimer();
    res.on('finish', () => {
      const route = (req.route?.path as string | undefined) ?? 'unmatched';
      end({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  };
  const router = createRouter();
  router.get('/metrics', async (req, res) => {
    if (token !== undefined && !sameSecret(req.get('authorization') ?? '', `Bearer ${token}`)) {
      res.set('www-authenticate', 'Bearer').status(401).json({ error: { message: 'GET /metrics needs the METRICS_TOKEN as a bearer token (Authorization: Bearer ...)', type: 'authentication_error', param: null, code: 'invalid_metrics_token' } });
      return;
    }
    res.type(registry.contentType).send(await registry.metrics());
  });
  return { middleware, router };
}

/** Compared as digests, in constant time: neither the token's length nor its prefix leaks through timing. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}
