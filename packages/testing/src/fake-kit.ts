import type http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The test-control parts every fake upstream shares: holding requests until a test releases them,
 * and waiting until a number of requests has arrived.
 */
export interface Holds {
  /** hold every request that reaches `pass()` until the returned function is called */
  hold(): () => void;
  /** resolves once no hold is left that was in place when it was called */
  pass(): Promise<void>;
  releaseAll(): void;
}

export function createHolds(): Holds {
  const holds = new Set<Promise<void>>();
  const releases = new Set<() => void>();
  return {
    hold() {
      let release!: () => void;
      const p = new Promise<void>((resolve) => {
        release = () => {
          holds.delete(p);
          releases.delete(release);
          resolve();
        };
      });
      holds.add(p);
      releases.add(release);
      return release;
    },
    pass: async () => {
      await Promise.all(holds);
    },
    releaseAll() {
      for (const r of [...releases]) r();
    },
  };
}

/** Promises that resolve once `count()` reaches what each waiter asked for; call `check()` after each request. */
export function createRequestWaiters(count: () => number): { waitFor(n: number): Promise<void>; check(): void } {
  const waiters: { count: number; resolve: () => void }[] = [];
  return {
    waitFor(n) {
      if (count() >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ count: n, resolve }));
    },
    check() {
      for (const w of waiters.splice(0)) {
        if (count() >= w.count) w.resolve();
        else waiters.push(w);
      }
    },
  };
}

/** Closes a fake's server, dropping kept-alive connections. */
export async function closeServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
}

/** Scripted answers, used in the order they were added, each for its number of requests. */
export function createScripts<T>(): { add(value: T, times?: number): void; take(): T | undefined; clear(): void } {
  const queue: { value: T; remaining: number }[] = [];
  return {
    add(value, times = 1) {
      queue.push({ value, remaining: times });
    },
    take() {
      const first = queue[0];
      if (first && --first.remaining <= 0) queue.shift();
      return first?.value;
    },
    clear() {
      queue.length = 0;
    },
  };
}

/** Listens on a free port of 127.0.0.1; the server's origin. */
export async function listenOnLoopback(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
