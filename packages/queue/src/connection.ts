import { Redis } from 'ioredis';

export interface QueueConfig {
  redisUrl: string;
  /** BullMQ key prefix: separates deployments (and tests) sharing one Redis */
  prefix: string;
}

/** BullMQ's blocking connections need maxRetriesPerRequest: null. */
export function createRedis(url: string, opts: { lazy?: boolean } = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, lazyConnect: opts.lazy ?? false });
}
