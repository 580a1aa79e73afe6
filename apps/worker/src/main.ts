import { ConfigError, parseConfig } from '@image-edits/core';
import { startWorker } from './worker';

/** One worker process (production shape: run any number; they share Redis, Postgres and S3). */
async function main(): Promise<void> {
  const worker = await startWorker(parseConfig(process.env));
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    worker.logger.info({ signal }, 'draining: finishing jobs in flight before exit');
    worker.close().then(
      () => process.exit(0),
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
