import net from 'node:net';
import { afterEach, describe, expect, it } from '@jest/globals';
import { Redis } from 'ioredis';
import { type FaultProxy, startFaultProxy } from './fault-proxy';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startEcho(): Promise<net.Server> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return server;
}

async function proxyTo(port: number): Promise<FaultProxy> {
  const proxy = await startFaultProxy({ host: '127.0.0.1', port });
  cleanups.push(() => proxy.close());
  return proxy;
}

async function echoProxy(): Promise<FaultProxy> {
  const echo = await startEcho();
  return proxyTo((echo.address() as net.AddressInfo).port);
}

/** a client socket that records what it receives and how it ended */
function connect(port: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  cleanups.push(() => {
    socket.destroy();
  });
  let received = '';
  let error: NodeJS.ErrnoException | undefined;
  socket.on('data', (d: Buffer) => {
    received += d.toString();
  });
  socket.on('error', (e) => {
    error = e;
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return {
    socket,
    received: () => received,
    error: () => error,
    closed,
    /** resolves once `text` has arrived, rejects after `ms` */
    waitFor: (text: string, ms = 1000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (received.includes(text)) done(resolve);
        };
        const timer = setTimeout(() => done(() => reject(new Error(`no "${text}" within ${ms} ms, got "${received}"`))), ms);
        const done = (f: () => void) => {
          clearTimeout(timer);
          socket.off('data', check);
          f();
        };
        socket.on('data', check);
        check();
      }),
  };
}

const within = <T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), ms);
    }),
  ]);
};

describe('fault proxy over TCP (echo server)', () => {
  it('forwards when up, both ways, and counts connections', async () => {
    const proxy = await echoProxy();
    const c = connect(proxy.port);
    c.socket.write('hello');
    await c.waitFor('hello');
    const big = 'x'.repeat(1 << 20);
    c.socket.write(big);
    await c.waitFor(`hello${big}`);
    expect(proxy.stats()).toEqual({ open: 1, accepted: 1, refused: 0 });
    c.socket.end();
    await c.closed;
  });

  it('closes the client when the upstream is down', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const deadPort = (server.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const proxy = await proxyTo(deadPort);
    const c = connect(proxy.port);
    expect(await within(c.closed, 1000)).toBeUndefined();
    expect(proxy.stats().open).toBe(0);
  });

  it('refuse cuts existing connections and resets new ones at once', async () => {
    const proxy = await echoProxy();
    const before = connect(proxy.port);
    before.socket.write('a');
    await before.waitFor('a');
    proxy.set('refuse');
    expect(proxy.stats().open).toBe(0);
    expect(await within(before.closed, 1000)).toBeUndefined();
    expect(before.error()?.code).toBe('ECONNRESET');

    const during = connect(proxy.port);
    during.socket.write('b');
    expect(await within(during.closed, 500)).toBeUndefined();
    expect(during.received()).toBe('');
    expect(proxy.stats()).toMatchObject({ open: 0, accepted: 1, refused: 1 });

    proxy.set('up');
    const after = connect(proxy.port);
    after.socket.write('c');
    await after.waitFor('c');
  });

  it('stall forwards nothing until up, then the held bytes flow on', async () => {
    const proxy = await echoProxy();
    const before = connect(proxy.port);
    before.socket.write('1');
    await before.waitFor('1');
    proxy.set('stall');
    before.socket.write('2');
    const during = connect(proxy.port);
    await new Promise((resolve) => during.socket.once('connect', resolve));
    during.socket.write('3');
    await expect(before.waitFor('12', 200)).rejects.toThrow();
    expect(during.received()).toBe('');
    expect(proxy.stats().open).toBe(2);

    proxy.set('up');
    await before.waitFor('12');
    await during.waitFor('3');
  });

  it('outage() brings the proxy back up', async () => {
    const proxy = await echoProxy();
    const outage = proxy.outage('refuse', 200);
    const during = connect(proxy.port);
    expect(await within(during.closed, 150)).toBeUndefined();
    await outage;
    expect(proxy.mode()).toBe('up');
    const after = connect(proxy.port);
    after.socket.write('back');
    await after.waitFor('back');
  });

  it('cutAll resets open connections and keeps accepting', async () => {
    const proxy = await echoProxy();
    const c = connect(proxy.port);
    c.socket.write('a');
    await c.waitFor('a');
    proxy.cutAll();
    expect(proxy.stats().open).toBe(0);
    expect(await within(c.closed, 1000)).toBeUndefined();
    expect(c.error()?.code).toBe('ECONNRESET');
    expect(proxy.mode()).toBe('up');
    const next = connect(proxy.port);
    next.socket.write('b');
    await next.waitFor('b');
    expect(proxy.stats()).toMatchObject({ open: 1, accepted: 2 });
  });

  it('close() destroys every connection and resolves', async () => {
    const proxy = await echoProxy();
    const c = connect(proxy.port);
    c.socket.write('a');
    await c.waitFor('a');
    proxy.set('stall');
    await proxy.close();
    expect(await within(c.closed, 1000)).toBeUndefined();
    await proxy.close();
  });

  it('url() points a URL at the proxy', async () => {
    const proxy = await echoProxy();
    expect(proxy.url('postgresql://postgres:pw@127.0.0.1:5432/db?schema=x')).toBe(
      `postgresql://postgres:pw@127.0.0.1:${proxy.port}/db?schema=x`,
    );
    expect(proxy.url('redis://localhost:6379')).toBe(`redis://127.0.0.1:${proxy.port}`);
  });
});

describe('fault proxy in front of the real Redis', () => {
  async function redisThroughProxy() {
    const proxy = await proxyTo(6379);
    const client = new Redis(proxy.url('redis://127.0.0.1:6379'), {
      maxRetriesPerRequest: 1,
      retryStrategy: () => 20,
    });
    client.on('error', () => {});
    cleanups.push(() => {
      client.disconnect();
    });
    await client.ping();
    return { proxy, client };
  }

  it('up forwards', async () => {
    const { client } = await redisThroughProxy();
    const big = 'y'.repeat(200_000);
    expect(await client.echo(big)).toBe(big);
  });

  it('refuse fails requests fast, and the client reconnects once up', async () => {
    const { proxy, client } = await redisThroughProxy();
    proxy.set('refuse');
    await expect(within(client.ping(), 1000)).rejects.toThrow();
    proxy.set('up');
    expect(await within(client.ping(), 1000)).toBe('PONG');
  });

  it('stall makes a request hang; it completes after up', async () => {
    const { proxy, client } = await redisThroughProxy();
    proxy.set('stall');
    const ping = client.ping();
    expect(await within(ping, 200)).toBe('timeout');
    proxy.set('up');
    expect(await within(ping, 1000)).toBe('PONG');
  });

  it('outage() restores, cutAll forces a reconnect', async () => {
    const { proxy, client } = await redisThroughProxy();
    await proxy.outage('stall', 100);
    expect(await within(client.ping(), 1000)).toBe('PONG');
    proxy.cutAll();
    expect(await within(client.ping(), 1000)).toBe('PONG');
    expect(proxy.stats().accepted).toBe(2);
  });
});
