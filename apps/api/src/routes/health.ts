import { Router } from 'express';
import type { ApiDeps } from '../deps';

async function check(name: string, fn: () => Promise<unknown>, timeoutMs = 2000): Promise<[string, string]> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([fn(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('timed out')), timeoutMs)))]);
    return [name, 'ok'];
  } catch (err) {
    return [name, `error: ${(err as Error).message || (err as Error).name}`];
  } finally {
    clearTimeout(timer);
  }
}

/** /healthz: the process answers. /readyz: Postgres, Redis and S3 answer too, and the process is not shutting down. */
export function healthRouter(deps: ApiDeps): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    // SIGTERM: out of the load balancer's rotation at once (the response also carries Connection: close)
    if (deps.lifecycle.draining) {
      res.status(503).json({ status: 'draining' });
      return;
    }
    const checks = Object.fromEntries(
      await Promise.all([
        check('postgres', () => deps.db.$queryRaw`SELECT 1`),
        check('redis', () => deps.redis.ping()),
        check('s3', () => deps.store.ping()),
      ]),
    );
    const ready = Object.values(checks).every((v) => v === 'ok');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', checks });
  });
  return router;
}
