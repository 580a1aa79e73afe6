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
 * What a job holds while it runs, as measured (bench section 5b: a 16 MB input costs about 80 MB of
 * RSS in flight): its inputs five times over (the bytes read from S3 and the SDK's gathering of them,
 * the file and multipart body an SDK builds its request from), plus its outputs (2 MB per image: a 1024² PNG and its base64 on the way).
 */
export const INPUT_COPIES = 5;
export function jobFootprint(inputs: { images: { bytes: number }[]; mask?: { bytes: number } }, n: number): number {
  const inputBytes = inputs.images.reduce((sum, i) => sum + i.bytes, 0) + (inputs.mask?.bytes ?? 0);
  return INPUT_COPIES * inputBytes + n * 2 * 1024 * 1024;
}
