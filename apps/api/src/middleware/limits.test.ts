import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from '@jest/globals';
import { parseConfig } from '@image-edits/core';
import express from 'express';
import type { ApiDeps } from '../deps';
import { errorHandler } from './errors';
import { duration, keyLimits, limitRequests } from './limits';

describe('duration (OpenAI x-ratelimit-reset-* format)', () => {
  it('writes ms, s, m and h as OpenAI does', () => {
    expect([duration(0), duration(17), duration(999), duration(1000), duration(1001), duration(59_500), duration(360_000), duration(3_723_000)]).toEqual([
      '0ms',
      '17ms',
      '999ms',
      '1s',
      '2s',
      '1m0s',
      '6m0s',
      '1h2m3s',
    ]);
  });
});

describe('keyLimits', () => {
  it("takes the key's own setting, else the deployment's default; 0 and unset are no limit", () => {
    const env = { KEY_RPM: 10, KEY_IPM: undefined, KEY_MONTHLY_BUDGET_USD: 50 };
    const settings = { admin: false, requestsPerMinute: null, imagesPerMinute: 5, monthlyBudgetUsd: 0, inputRetentionSeconds: null, resultRetentionSeconds: null };
    expect(keyLimits(settings, env)).toEqual({ rpm: 10, ipm: 5, budgetUsd: 0 });
    expect(keyLimits(undefined, env)).toEqual({ rpm: 10, ipm: 0, budgetUsd: 50 });
  });
});

describe('limitRequests when Redis does not answer', () => {
  it('lets requests through (no 500, no 429) and warns once', async () => {
    const warnings: unknown[] = [];
    const never = () => new Promise<never>(() => undefined);
    const deps = {
      config: parseConfig({}),
      db: {} as ApiDeps['db'],
      redis: { evalsha: never, eval: never, get: never, set: never } as unknown as ApiDeps['redis'],
      logger: { warn: (o: unknown) => warnings.push(o) } as unknown as ApiDeps['logger'],
    };
    const app = express();
    app.use((_req, res, next) => {
      res.locals.apiKeyId = 'key_test';
      res.locals.apiKey = { admin: false, requestsPerMinute: 1, imagesPerMinute: 1, monthlyBudgetUsd: null, inputRetentionSeconds: null, resultRetentionSeconds: null };
      next();
    });
    app.post('/v1/images/edits', limitRequests(deps), (_req, res) => {
      res.json({ ok: true });
    });
    app.use(errorHandler);
    const server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/images/edits`;
      for (let i = 0; i < 3; i++) {
        const res = await fetch(url, { method: 'POST' });
        expect(res.status).toBe(200);
        expect(res.headers.get('x-ratelimit-limit-requests')).toBeNull();
      }
      expect(warnings).toHaveLength(1);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
