import { ConfigError, parseConfig } from '@image-edits/core';
import { startApi } from './server';

/** One API process (production shape: run any number behind a load balancer). */
async function main(): Promise<void> {
  const api = await startApi(parseConfig(process.env));
  api.deps.logger.info(`image-edits API listening on ${api.url}`);
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    api.deps.logger.info({ signal }, 'shutting down: finishing open requests');
    api.close().then(
      () => process.exit(0),
      (err: unknown) => {
        api.deps.logger.error({ err }, 'shutdown failed');
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
