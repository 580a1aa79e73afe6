import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import express from 'express';
import { createApiKey, createDb, type Db, revokeApiKey } from '@image-edits/db';
import { createTestEnv, type TestEnv } from '@image-edits/testing';
import { apiKeyId, requireApiKey } from './auth';

/** The key cache's promise: known keys skip the database for a while; a revoked one stops working after that. */
let env: TestEnv;
let db: Db;
let server: ReturnType<express.Express['listen']>;
let base = '';
const TTL_MS = 300;

beforeAll(async () => {
  env = await createTestEnv();
  db = createDb(env.databaseUrl, { poolSize: 2 });
  const app = express();
  app.get('/whoami', requireApiKey({ db }, { cacheTtlMs: TTL_MS }), (_req, res) => {
    res.json({ id: apiKeyId(res.locals) });
  });
  app.use(((err, _req, res, _next) => res.status(err.status ?? 500).json({ code: err.code })) as express.ErrorRequestHandler);
  server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await db?.$disconnect();
  await env?.cleanup();
});

const whoami = async (key: string) => {
  const res = await fetch(`${base}/whoami`, { headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, body: (await res.json()) as { id?: string } };
};

describe('API key cache', () => {
  it('accepts a new key at once, and refuses it once revoked and the cache entry has expired', async () => {
    const key = await createApiKey(db, 'cached');
    expect(await whoami(key.key)).toEqual({ status: 200, body: { id: key.id } });
    expect(await revokeApiKey(db, key.id)).toBe(true);
    await new Promise((r) => setTimeout(r, TTL_MS + 50));
    expect((await whoami(key.key)).status).toBe(401);
  });

  it('does not remember unknown keys: a key created after a refusal works at once', async () => {
    expect((await whoami('sk-ie-not-a-key')).status).toBe(401);
    const key = await createApiKey(db, 'fresh');
    expect((await whoami(key.key)).body.id).toBe(key.id);
  });
});
