import { ConfigError, parseConfig } from '@image-edits/core';
import { startApi } from './server';

/** a drain that ended at SHUTDOWN_TIMEOUT_MS gets this long to disconnect before the process exits anyway */
const DISCONNECT_GRACE_MS = 1000;

/** One API process (production shape: run any number behind a load balancer). */
async function main(): Promise<void> {
  const config = parseConfig(process.env);
  const api = await startApi(config);
  const logger = api.deps.logger;
  logger.info(`image-edits API listening on ${api.url}`);
  const timeoutMs = config.env.SHUTDOWN_TIMEOUT_MS;
  let closing = false;
  // SIGTERM (process manager, `docker stop`) or SIGINT (Ctrl-C): drain (RunningApi.close), exit 0 when
  // every open request finished, 1 when SHUTDOWN_TIMEOUT_MS cut some short. A repeated signal changes
  // nothing: Ctrl-C under npm delivers SIGINT twice.
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    logger.info({ signal, timeoutMs }, 'shutting down: not accepting, finishing open requests');
    setTimeout(() => {
      logger.warn({ timeoutMs }, 'shutdown cut short: still closing after SHUTDOWN_TIMEOUT_MS; exiting');
      process.exit(1);
    }, timeoutMs + DISCONNECT_GRACE_MS).unref();
    api.close().then(
      ({ drained }) => {
        if (drained) logger.info('drained: every open request finished; exiting');
        else logger.warn({ timeoutMs }, 'shutdown cut short: SHUTDOWN_TIMEOUT_MS passed with requests open; exiting');
        process.exit(drained ? 0 : 1);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
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
