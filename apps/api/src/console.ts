import path from 'node:path';
import express, { type RequestHandler, type Response, Router } from 'express';

/** Where the console's build lands (`npm run build -w @image-edits/console`; `npm start` runs it when stale). */
export const CONSOLE_DIR = path.resolve(__dirname, '../../console/dist');

/**
 * The console's own routes (client-side routing): a reload or a shared link of one answers
 * index.html. An explicit list, so nothing of the API (`/v1`, `/healthz`, `/readyz`, `/metrics`,
 * `/openapi.json`) or any other path is ever shadowed.
 */
export const CONSOLE_ROUTES = ['/', '/signin', '/playground', '/jobs', '/jobs/:id', '/batches', '/batches/:id', '/usage'];

/** Paths the static files never answer for, whatever lands in the build directory. */
const RESERVED = /^\/(?:v1(?:\/|$)|healthz$|readyz$|metrics$|openapi\.json$)/;

/**
 * Everything the console loads comes from this origin (it works offline); API calls too. Images may
 * be presigned URLs of the object store (another origin), or data:/blob: URLs built in the page.
 */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob: http: https:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const NOT_BUILT = `<!doctype html><meta charset="utf-8"><title>Console not built</title>
<h1>The console is not built</h1>
<p>Build it with <code>npm run build -w @image-edits/console</code> (<code>npm start</code> does it when needed), then reload.
The API itself is at <code>/v1</code>.</p>`;

/** GET / and the console's routes: the built single-page app from `dir`, with its static assets. */
export function consoleRouter(dir: string = CONSOLE_DIR): Router {
  const router = Router();
  const index = path.join(dir, 'index.html');
  const secure = (res: Response) => res.set({ 'content-security-policy': CSP, 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' });

  const page: RequestHandler = (_req, res, next) => {
    secure(res);
    // index.html names the hashed assets of the current build: always revalidated
    res.sendFile(index, { headers: { 'cache-control': 'no-cache' }, cacheControl: false, lastModified: true }, (err?: Error & { code?: string; status?: number }) => {
      if (!err) return;
      if (res.headersSent) return;
      if (err.code === 'ENOENT' || err.status === 404) res.status(404).type('html').send(NOT_BUILT);
      else next(err);
    });
  };
  for (const route of CONSOLE_ROUTES) router.get(route, page);

  // hashed file names: cached for good
  router.use('/assets', express.static(path.join(dir, 'assets'), { index: false, immutable: true, maxAge: '1y', redirect: false }));
  // other files of the build (icons), never in place of an API path
  const files = express.static(dir, { index: false, redirect: false, maxAge: '1h' });
  router.use((req, res, next) => {
    if ((req.method !== 'GET' && req.method !== 'HEAD') || RESERVED.test(req.path)) {
      next();
      return;
    }
    secure(res);
    files(req, res, next);
  });
  return router;
}
