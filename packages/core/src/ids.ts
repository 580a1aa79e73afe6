import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/**
 * Prefixed ids that sort by creation time (48-bit millisecond timestamp, then 80 random bits),
 * so listings can page by id and two replicas never collide.
 */
export function newId(prefix: string, now = Date.now()): string {
  const time = now.toString(36).padStart(10, '0');
  const bytes = randomBytes(16);
  let rand = '';
  for (const b of bytes) rand += ALPHABET[b % 36];
  return `${prefix}_${time}${rand}`;
}

/**
 * When an id of `newId` (or one built from it, like `file-...`) was made, in epoch ms; undefined for
 * anything else. Lets a sweep tell old objects from new ones by their key alone.
 */
export function idTime(id: string): number | undefined {
  const m = /^[a-z]+[_-]([0-9a-z]{10})[0-9a-z]{16}$/.exec(id);
  if (!m) return undefined;
  const t = Number.parseInt(m[1]!, 36);
  return Number.isSafeInteger(t) ? t : undefined;
}
