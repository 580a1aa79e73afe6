import { randomUUID } from 'node:crypto';
import express from 'express';
import { pinoHttp } from 'pino-http';
import { consoleRouter } from './console';
import type { ApiDeps } from './deps';
import { createMetrics } from './metrics';
import { requireApiKey } from './middleware/auth';
import { errorHandler, notFoundHandler } from './middleware/errors';
import { checkInput } from './middleware/input-check';
import { limitRequests } from './middleware/limits';
import { batchesRouter } from './routes/batches';
import { editsRouter } from './routes/edits';
import { filesRouter } from './routes/files';
import { healthRouter } from './routes/health';
import { jobsRouter } from './routes/jobs';
import { modelsRouter } from './routes/models';
import { openApiRouter } from './openapi';
import { organizationRouter } from './routes/organization';
import { webhooksRouter } from './routes/webhooks';

/** The HTTP surface: thin routes over the use cases; errors end in one middleware. */
export function createApp(deps: ApiDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // no ETag: every job read carries freshly signed URLs, so a tag would never match, and hashing
  // each body (a sync answer is megabytes of base64) costs CPU on every response
  app.set('etag', false);
  app.set('trust proxy', true);
  const metrics = createMetrics(deps.config.env.METRICS_TOKEN);
  // every answer is what its Content-Type says (a downloaded file is never sniffed into HTML)
  app.use((_req, res, next) => {
    res.setHeader('x-content-type-options', 'nosniff');
    next();
  });

  app.use(
    pinoHttp({
      logger: deps.logger,
      genReqId: (_req, res) => {
        const id = `req_${randomUUID().replaceAll('-', '')}`;
        res.setHeader('x-request-id', id);
        return id;
      },
      autoLogging: { ignore: (req) => req.url === '/healthz' || req.url === '/readyz' || req.url === '/metrics' },
      redact: ['req.headers.authorization', 'req.headers["api-key"]', 'req.headers.cookie'],
    }),
  );
  app.use(metrics.middleware);
  app.use(healthRouter(deps));
  app.use(metrics.router);
  // the OpenAPI 3.1 document of every route below, generated from their zod schemas (no key needed)
  app.use(openApiRouter());
  // the browser console (static, built from apps/console) at / and its own routes; never /v1 or the probes
  app.use(consoleRouter());

  app.use('/v1', requireApiKey(deps));
  // no NUL or unpaired surrogate in an id or a query reaches Postgres (bodies: after their parsers)
  app.use('/v1', checkInput);
  // per-key budget and requests per minute, before a body is read (images per minute: in the edits routes, once n is known)
  const limits = limitRequests(deps);
  app.post('/v1/images/edits', limits);
  app.post('/v1/batches', limits);
  // before the 1 MB JSON parser: the JSON form of edits has its own, larger limit
  app.use(editsRouter(deps));
  app.use(express.json({ limit: '1mb' }));
  app.use(checkInput);
  app.use(filesRouter(deps));
  app.use(batchesRouter(deps));
  app.use(jobsRouter(deps));
  app.use(modelsRouter(deps));
  app.use(webhooksRouter(deps));
  app.use(organizationRouter(deps));

  app.use(notFoundHandler);
  app.use(errorHandler);
  return app;
}
