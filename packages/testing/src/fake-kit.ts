import type http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The test-control parts every fake upstream shares: holding requests until a test releases them,
 * and waiting until a number of requests has arrived.
 */
export interface HoldOptions<T> {
  /** hold only the requests this accepts (a request that reaches `pass()` without a subject is not held) */
  match?: (subject: T) => boolean;
  /** hold only the first `times` matching requests; later ones pass (default: every one) */
  times?: number;
}

export interface Holds<T = unknown> {
  /** hold every request that reaches `pass()` (or those `opts` picks) until the returned function is called */
  hold(opts?: HoldOptions<T>): () => void;
  /** resolves once no hold is left that was in place when it was called and caught this request */
  pass(subject?: T): Promise<void>;
  releaseAll(): void;
}

export function createHolds<T = unknown>(): Holds<T> {
  interface Hold {
    done: Promise<void>;
    match: ((subject: T) => boolean) | undefined;
    /** matching requests it may still catch */
    left: number;
  }
  const holds = new Set<Hold>();
  const releases = new Set<() => void>();
  return {
    hold(opts = {}) {
      let release!: () => void;
      const entry: Hold = {
        done: new Promise<void>((resolve) => {
          release = () => {
            holds.delete(entry);
            releases.delete(release);
            resolve();
          };
        }),
        match: opts.match,
        left: opts.times ?? Number.POSITIVE_INFINITY,
      };
      holds.add(entry);
      releases.add(release);
      return release;
    },
    pass: async (subject) => {
      const caught: Promise<void>[] = [];
      for (const h of holds) {
        if (h.left <= 0 || (h.match && (subject === undefined || !h.match(subject)))) continue;
        h.left--;
        caught.push(h.done);
      }
      await Promise.all(caught);
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
