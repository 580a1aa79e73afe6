import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { sendWebhook } from './send';

/** One HTTP attempt against a real server on loopback: pinned address, no redirects, capped reads. */
let server: http.Server;
let port: number;
const hits: { url: string; host: string | undefined }[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    hits.push({ url: req.url ?? '', host: req.headers.host });
    req.resume();
    if (req.url === '/redirect') res.writeHead(302, { location: '/ok' }).end();
    else if (req.url === '/huge') res.writeHead(500).end('x'.repeat(4 * 1024 * 1024));
    else res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const base = { headers: { 'content-type': 'application/json' }, body: '{}', timeoutMs: 1000 };

describe('sendWebhook', () => {
  it('connects to the address that was checked, not to a second resolution of the name', async () => {
    let lookups = 0;
    // `.invalid` never resolves for real: the request can only arrive through the checked address
    const lookup = async () => {
      lookups++;
      return [{ address: '127.0.0.1', family: 4 }];
    };
    const r = await sendWebhook({ ...base, url: `http://hooks.invalid:${port}/pinned`, allowPrivate: true, lookup });
    expect(r).toMatchObject({ outcome: 'delivered', statusCode: 204, error: null });
    expect(lookups).toBe(1);
    expect(hits.find((h) => h.url === '/pinned')?.host).toBe(`hooks.invalid:${port}`);
  });

  it('a name that rebinds to loopback after the check never reaches it', async () => {
    // public when checked, loopback on any later resolution
    const answers = ['8.8.8.8', '127.0.0.1'];
    const lookup = async () => [{ address: answers.shift() ?? '127.0.0.1', family: 4 }];
    const r = await sendWebhook({ ...base, timeoutMs: 500, url: `http://rebind.invalid:${port}/rebind`, allowPrivate: false, lookup });
    // the connection went to 8.8.8.8 (unreachable or silent here), never to the receiver on loopback
    expect(r).toMatchObject({ outcome: 'retry', statusCode: null });
    expect(answers).toEqual(['127.0.0.1']);
    expect(hits.some((h) => h.url === '/rebind')).toBe(false);
  });

  it('refuses a name resolving to a private address before connecting', async () => {
    const lookup = async () => [{ address: '127.0.0.1', family: 4 }];
    const r = await sendWebhook({ ...base, url: `http://private.invalid:${port}/private`, allowPrivate: false, lookup });
    expect(r).toMatchObject({ outcome: 'failed', statusCode: null });
    // refused without telling what the name resolves to inside our network
    expect(r.error).toMatch(/egress guard.*does not resolve to a public internet address/);
    expect(r.error).not.toContain('127.0.0.1');
    expect(hits.some((h) => h.url === '/private')).toBe(false);
  });

  it('does not follow redirects', async () => {
    const r = await sendWebhook({ ...base, url: `http://127.0.0.1:${port}/redirect`, allowPrivate: true });
    expect(r).toMatchObject({ outcome: 'failed', statusCode: 302 });
    expect(r.error).toMatch(/redirects are not followed/);
    expect(hits.filter((h) => h.url === '/ok')).toHaveLength(0);
  });

  it('reads only the start of a large answer', async () => {
    const r = await sendWebhook({ ...base, url: `http://127.0.0.1:${port}/huge`, allowPrivate: true });
    expect(r).toMatchObject({ outcome: 'retry', statusCode: 500 });
    expect(r.error!.length).toBeLessThan(250);
  });

  it('a refused connection is retryable', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const freePort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const r = await sendWebhook({ ...base, url: `http://127.0.0.1:${freePort}/`, allowPrivate: true });
    expect(r).toMatchObject({ outcome: 'retry', statusCode: null, error: 'connection failed: ECONNREFUSED' });
  });
});
