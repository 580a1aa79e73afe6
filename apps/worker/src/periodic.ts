import type { Logger } from 'pino';

export interface Periodic {
  /** stops the timer and waits for the run in progress, if any */
  stop(): Promise<void>;
}

/**
 * Runs `task` every `intervalMs`, never two at once (a slow run is not stacked behind itself); a
 * failed run is logged and the next one tries again. The timer does not keep the process alive.
 */
export function runEvery(intervalMs: number, task: () => Promise<unknown>, logger: Logger, what: string): Periodic {
  let running: Promise<unknown> | null = null;
  const timer = setInterval(() => {
    if (running) return;
    running = task()
      .catch((err: unknown) => logger.error({ err }, `${what} failed; will try again`))
      .finally(() => {
        running = null;
      });
  }, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
