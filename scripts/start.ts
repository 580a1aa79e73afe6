import path from 'node:path';
import { startApi } from '@image-edits/api';
import { ConfigError, parseConfig } from '@image-edits/core';
import { migrate } from '@image-edits/db';
import { startLocalS3 } from '@image-edits/storage';
import { startWorker } from '@image-edits/worker';

/**
 * `npm start`: everything on one machine on embedded defaults. Applies pending migrations, starts a
 * local S3-compatible server on disk when AWS_ENDPOINT_URL_S3 is unset, then one API and one worker.
 */
async function main(): Promise<void> {
  const env: Record<string, string | undefined> = { ...process.env };
  let config = parseConfig(env);
  const migrated = await migrate(config.env.DATABASE_URL);
  console.log(`database ${migrated.database}: ${migrated.applied.length ? `applied ${migrated.applied.join(', ')}` : 'up to date'}`);

  let localS3: { close(): Promise<void> } | undefined;
  if (!config.env.AWS_ENDPOINT_URL_S3) {
    const dir = path.resolve(config.env.LOCAL_S3_DIR);
    const s3 = await startLocalS3({ directory: dir, port: config.env.LOCAL_S3_PORT });
    localS3 = s3;
    // s3rver checks no signatures, but the SDK wants credentials to sign with
    env.AWS_ENDPOINT_URL_S3 = s3.endpoint;
    env.AWS_ACCESS_KEY_ID ??= 'S3RVER';
    env.AWS_SECRET_ACCESS_KEY ??= 'S3RVER';
    config = parseConfig(env);
    console.log(`local S3-compatible storage at ${s3.endpoint} (files in ${dir})`);
  }

  const worker = await startWorker(config);
  const api = await startApi(config);
  const models = [...api.deps.routes.values()].filter((r) => !r.aliasOf).map((r) => r.id).join(', ');
  console.log(`\nimage-edits is running at ${api.url}\n  models: ${models}\n  create an API key:  npm run keys -- create --name me\n  then:  curl ${api.url}/v1/models -H "Authorization: Bearer $KEY"\n`);

  // SIGTERM/SIGINT: the API drains first (stops accepting, finishes open requests while the worker
  // still runs their jobs), then the worker (takes no new job, finishes those in flight); all within
  // SHUTDOWN_TIMEOUT_MS of the signal, else exit 1 anyway. A repeated signal changes nothing.
  const timeoutMs = config.env.SHUTDOWN_TIMEOUT_MS;
  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    console.log(`${signal}: stopping (open requests and jobs in flight finish first, within ${timeoutMs} ms)`);
    setTimeout(() => {
      console.error(`shutdown cut short: SHUTDOWN_TIMEOUT_MS (${timeoutMs} ms) passed with work in flight; exiting`);
      process.exit(1);
    }, timeoutMs).unref();
    const { drained } = await api.close();
    await worker.close();
    await localS3?.close();
    console.log(drained ? 'stopped: everything in flight finished' : 'stopped: SHUTDOWN_TIMEOUT_MS cut open requests short');
    process.exit(drained ? 0 : 1);
  };
  const onSignal = (signal: string) =>
    shutdown(signal).catch((err: unknown) => {
      console.error('shutdown failed', err);
      process.exit(1);
    });
  process.on('SIGTERM', () => void onSignal('SIGTERM'));
  process.on('SIGINT', () => void onSignal('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
