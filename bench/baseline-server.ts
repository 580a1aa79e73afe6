/**
 * The baseline: a bare Express 5 + multer endpoint that receives the same multipart upload as
 * POST /v1/images/edits and discards it. multer uses its plain disk storage (a typical setup; the service
 * keeps small requests in memory and spools large ones to disk, apps/api/src/upload-storage.ts), and the
 * files are deleted when the response ends. No auth, no validation, no storage, no database: what "just
 * receiving the upload" costs on this machine.
 * Run as its own process: PORT and BASELINE_UPLOAD_DIR from the environment.
 */
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import express from 'express';
import multer from 'multer';

const port = Number(process.env.PORT ?? 0);
const dir = process.env.BASELINE_UPLOAD_DIR;
if (!dir) throw new Error('BASELINE_UPLOAD_DIR is required');
mkdirSync(dir, { recursive: true });

const upload = multer({
  storage: multer.diskStorage({ destination: dir, filename: (_req, _file, cb) => cb(null, randomUUID()) }),
  limits: { fileSize: 50 * 1024 * 1024 + 1 },
}).any();

const app = express();
app.disable('x-powered-by');
app.get('/healthz', (_req, res) => {
  res.json({ status: 'ok' });
});
app.post('/v1/images/edits', (req, res, next) => {
  res.on('close', () => {
    for (const f of (req.files ?? []) as Express.Multer.File[]) rm(f.path, { force: true }).catch(() => undefined);
  });
  upload(req, res, (err: unknown) => {
    if (err) return next(err);
    const files = (req.files ?? []) as Express.Multer.File[];
    res.status(202).json({ received: files.map((f) => ({ field: f.fieldname, bytes: f.size })) });
  });
});

const server = app.listen(port, '127.0.0.1', () => {
  process.send?.({ ready: true });
});
server.requestTimeout = 0;
server.keepAliveTimeout = 65_000;
process.on('SIGTERM', () => server.close(() => process.exit(0)));
