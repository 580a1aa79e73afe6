import net from 'node:net';

export type FaultMode = 'up' | 'refuse' | 'stall';

/**
 * A TCP proxy for fault-injection tests (as Toxiproxy does), protocol agnostic: put it in front of
 * Postgres, Redis or S3, point the process under test at `port`, then simulate outages.
 */
export interface FaultProxy {
  /** the 127.0.0.1 port the proxy listens on */
  port: number;
  /** `target` with its host:port rewritten to the proxy: `proxy.url('postgresql://postgres@127.0.0.1:5432/db')` */
  url(target: string): string;
  /**
   * - `up`: forwards (bytes held by a stall flow on);
   * - `refuse`: cuts every open connection (RST both sides) and resets new ones at once (a stopped
   *   server; ECONNREFUSED is not possible on a listening port);
   * - `stall`: accepts new connections and forwards nothing in either direction on any connection
   *   (a black hole, a network partition); a close on one side reaches the other only once up again.
   */
  set(mode: FaultMode): void;
  mode(): FaultMode;
  /** cuts every open connection now (RST both sides); the mode is unchanged */
  cutAll(): void;
  /** open proxied connections; connections accepted in total (refused ones not counted); connections reset by `refuse` mode */
  stats(): { open: number; accepted: number; refused: number };
  /** `mode` for `ms`, then up again: `await proxy.outage('refuse', 5000)` */
  outage(mode: 'refuse' | 'stall', ms: number): Promise<void>;
  /** destroys every connection and stops listening */
  close(): Promise<void>;
}

interface Conn {
  client: net.Socket;
  upstream: net.Socket;
}

const noop = () => {};

/** RST when possible (a connected TCP socket), otherwise a plain destroy; never throws */
function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  try {
    if (socket.connecting) socket.destroy();
    else socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

export async function startFaultProxy(
  target: { host: string; port: number },
  opts: { port?: number } = {},
): Promise<FaultProxy> {
  let mode: FaultMode = 'up';
  let closed = false;
  let accepted = 0;
  let refused = 0;
  const conns = new Set<Conn>();

  const cut = (conn: Conn) => {
    conns.delete(conn);
    reset(conn.client);
    reset(conn.upstream);
  };

  /** after one side closed: close the other the same way (RST after an error, FIN after a clean close) */
  const propagate = (conn: Conn) => {
    const { client, upstream } = conn;
    if (client.destroyed && upstream.destroyed) {
      conns.delete(conn);
      return;
    }
    if (mode === 'stall') return; // a partition hides it; set('up') propagates
    const [gone, other] = client.destroyed ? [client, upstream] : [upstream, client];
    if (!gone.destroyed) return;
    if (gone.errored || other.writableFinished) {
      conns.delete(conn);
      reset(other);
    } else {
      other.once('finish', () => other.destroy());
      other.end();
    }
  };

  const forward = (conn: Conn, src: net.Socket, dst: net.Socket) => {
    src.on('data', (chunk: Buffer) => {
      if (dst.destroyed) return;
      if (!dst.write(chunk)) src.pause();
    });
    dst.on('drain', () => {
      if (mode === 'up') src.resume();
    });
    // half-close travels on; 'end' only comes once src flows, so a stall holds it too
    src.on('end', () => {
      if (!dst.destroyed) dst.end();
    });
    src.on('close', () => propagate(conn));
  };

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    client.on('error', noop);
    if (closed || mode === 'refuse') {
      refused++;
      reset(client);
      return;
    }
    accepted++;
    client.setNoDelay(true);
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    upstream.on('error', noop);
    upstream.setNoDelay(true);
    const conn: Conn = { client, upstream };
    conns.add(conn);
    forward(conn, client, upstream);
    forward(conn, upstream, client);
    if (mode === 'stall') {
      client.pause();
      upstream.pause();
    }
  });
  server.on('error', noop);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;

  const set = (next: FaultMode) => {
    if (closed) return;
    mode = next;
    if (next === 'refuse') {
      for (const conn of [...conns]) cut(conn);
    } else if (next === 'stall') {
      for (const { client, upstream } of conns) {
        client.pause();
        upstream.pause();
      }
    } else {
      for (const conn of [...conns]) {
        // a side whose peer still has a full buffer waits for its 'drain'
        if (!conn.upstream.writableNeedDrain) conn.client.resume();
        if (!conn.client.writableNeedDrain) conn.upstream.resume();
        propagate(conn);
      }
    }
  };

  let closing: Promise<void> | undefined;

  return {
    port,
    url(targetUrl) {
      const u = new URL(targetUrl);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.href;
    },
    set,
    mode: () => mode,
    cutAll() {
      for (const conn of [...conns]) cut(conn);
    },
    stats: () => ({ open: conns.size, accepted, refused }),
    async outage(outageMode, ms) {
      set(outageMode);
      await new Promise((resolve) => setTimeout(resolve, ms));
      set('up');
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        closed = true;
        server.close(() => resolve());
        for (const conn of [...conns]) cut(conn);
      });
      return closing;
    },
  };
}
