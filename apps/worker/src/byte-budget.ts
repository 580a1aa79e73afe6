/**
 * A worker-wide budget of image bytes held by running jobs, so that concurrency can be sized for a
 * provider's latency (dozens of calls in flight) without the sum of their images exhausting memory.
 * Jobs take their share first come, first served; one larger than the whole budget runs alone.
 */
export interface ByteBudget {
  /** resolves when `bytes` fit (the caller then holds them until `release`) */
  acquire(bytes: number): Promise<void>;
  release(bytes: number): void;
  /** bytes held now, and jobs waiting for room */
  inFlight(): number;
  waiting(): number;
}

export function createByteBudget(limit: number): ByteBudget {
  let used = 0;
  const queue: { bytes: number; go: () => void }[] = [];
  const admit = () => {
    while (queue.length > 0) {
      const next = queue[0]!;
      // an oversized job runs alone rather than never
      if (used > 0 && used + next.bytes > limit) return;
      queue.shift();
      used += next.bytes;
      next.go();
    }
  };
  return {
    acquire(bytes) {
      return new Promise<void>((go) => {
        queue.push({ bytes, go });
        admit();
      });
    },
    release(bytes) {
      used = Math.max(0, used - bytes);
      admit();
    },
    inFlight: () => used,
    waiting: () => queue.length,
  };
}

/**
 * What a job holds while it runs: its inputs twice (the bytes read from S3 and the copy an SDK
 * builds its request from), plus its outputs (estimated: a few MB per image).
 */
export function jobFootprint(inputs: { images: { bytes: number }[]; mask?: { bytes: number } }, n: number): number {
  const inputBytes = inputs.images.reduce((sum, i) => sum + i.bytes, 0) + (inputs.mask?.bytes ?? 0);
  return 2 * inputBytes + n * 4 * 1024 * 1024;
}
