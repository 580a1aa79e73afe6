import { ConfigError, parseConfig } from '@image-edits/core';
import { startWorker } from './worker';

/** One worker process (production shape: run any number; they share Redis, Postgres and S3). */
async function main(): Promise<void> {
  const config = parseConfig(process.env);
  const worker = await startWorker(config);
  const timeoutMs = config.env.SHUTDOWN_TIMEOUT_MS;
  let closing = false;
  // SIGTERM (process manager, `docker stop`) or SIGINT (Ctrl-C): stop taking jobs, finish those in
  // flight, exit 0; after SHUTDOWN_TIMEOUT_MS exit 1 anyway (their locks lapse and another worker
  // runs them again). A repeated signal changes nothing: Ctrl-C under npm delivers SIGINT twice.
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    worker.logger.info({ signal, timeoutMs }, 'draining: taking no new jobs, finishing those in flight before exit');
    setTimeout(() => {
      worker.logger.warn({ timeoutMs }, 'shutdown cut short: SHUTDOWN_TIMEOUT_MS passed with jobs still in flight; exiting (they run again elsewhere)');
      process.exit(1);
    }, timeoutMs).unref();
    worker.close().then(
      () => {
        worker.logger.info('drained: every job in flight finished; exiting');
        process.exit(0);
      },
      (err: unknown) => {
        worker.logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
