import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { buildModelRoutes, ConfigError, parseConfig } from '@image-edits/core';
import { migrate } from '@image-edits/db';
import { startLocalS3 } from '@image-edits/storage';

/**
 * `npm start`: everything on one machine on embedded defaults. Applies pending migrations, starts a
 * local S3-compatible server on disk when AWS_ENDPOINT_URL_S3 is unset, then one API and one worker,
 * each in its own process (as `npm run start:api` / `start:worker` run them), so they use both cores.
 * This process supervises them: signals go to both, and if one dies the other is stopped too.
 */
const ROOT = path.resolve(__dirname, '..');

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

  const children: ChildProcess[] = [];
  let closing = false;
  const start = (name: string, entry: string) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, entry)], { cwd: ROOT, env: env as NodeJS.ProcessEnv, stdio: 'inherit' });
    children.push(child);
    child.once('exit', (code, signal) => {
      if (closing) return;
      console.error(`${name} exited (${signal ?? `code ${code}`}); stopping the rest`);
      void stopAll(1);
    });
    return child;
  };
  const worker = start('worker', 'apps/worker/src/main.ts');
  const api = start('api', 'apps/api/src/main.ts');
  const exited = (c: ChildProcess) => new Promise<number>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve(c.exitCode ?? 1) : c.once('exit', (code) => resolve(code ?? 1))));

  // SIGTERM/SIGINT: the API drains first (stops accepting, finishes open requests while the worker
  // still runs their jobs), then the worker (takes no new job, finishes those in flight); each within
  // its SHUTDOWN_TIMEOUT_MS. A repeated signal changes nothing.
  const stopAll = async (failed: number) => {
    if (closing) return;
    closing = true;
    api.kill('SIGTERM');
    const apiCode = await exited(api);
    worker.kill('SIGTERM');
    const workerCode = await exited(worker);
    await localS3?.close();
    const ok = failed === 0 && apiCode === 0 && workerCode === 0;
    console.log(ok ? 'stopped: everything in flight finished' : `stopped (api exit ${apiCode}, worker exit ${workerCode})`);
    process.exit(ok ? 0 : 1);
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (!closing) console.log(`${signal}: stopping (open requests and jobs in flight finish first, within ${config.env.SHUTDOWN_TIMEOUT_MS} ms)`);
      void stopAll(0);
    });
  }

  const host = config.env.HOST === '0.0.0.0' ? '127.0.0.1' : config.env.HOST;
  const url = config.env.PUBLIC_URL ?? `http://${host}:${config.env.PORT}`;
  for (let i = 0; ; i++) {
    if (closing) return;
    if (await fetch(`http://${host}:${config.env.PORT}/healthz`).then((r) => r.ok, () => false)) break;
    if (i > 600) {
      console.error('the API did not answer /healthz within a minute; stopping');
      return stopAll(1);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const models = [...buildModelRoutes(config).values()].filter((r) => !r.aliasOf).map((r) => r.id).join(', ');
  console.log(`\nimage-edits is running at ${url}\n  models: ${models}\n  create an API key:  npm run keys -- create --name me\n  then:  curl ${url}/v1/models -H "Authorization: Bearer $KEY"\n`);
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
