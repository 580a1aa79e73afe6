import type { Request } from 'express';
import multer from 'multer';

/**
 * Bytes of request bodies that may be held in memory by the whole process at once. Uploads that do
 * not fit go to disk, so memory stays bounded however many large uploads arrive together.
 */
export interface MemoryBudget {
  readonly limit: number;
  inUse(): number;
  /** reserves `bytes` if they fit; false (and nothing reserved) otherwise */
  take(bytes: number): boolean;
  give(bytes: number): void;
}

export function createMemoryBudget(limit: number): MemoryBudget {
  let used = 0;
  return {
    limit,
    inUse: () => used,
    take(bytes) {
      if (used + bytes > limit) return false;
      used += bytes;
      return true;
    },
    give(bytes) {
      used = Math.max(0, used - bytes);
    },
  };
}

/** 64 MiB for the whole process: 300 typical 200 KB edits in flight, while 26 MB uploads go to disk. */
export const processMemoryBudget = createMemoryBudget(64 * 1024 * 1024);
/** A request larger than this is spooled to disk even when the budget has room. */
export const MAX_IN_MEMORY_REQUEST_BYTES = 8 * 1024 * 1024;

export interface HybridStorage {
  storage: multer.StorageEngine;
  /** Decides, before parsing, where this request's files go; reserves its bytes when in memory. */
  admit(req: Request): void;
  /** Returns the request's reservation (once; later calls do nothing). */
  release(req: Request): void;
}

/**
 * multer's own memory and disk engines, chosen per request. The choice is made from Content-Length:
 * Node's HTTP parser never delivers more body than that, so a request in memory holds at most the
 * bytes it reserved. No Content-Length (chunked), too large, or no room left in the budget: disk.
 */
export function hybridStorage(opts: { dir: string; filename: () => string; budget: MemoryBudget; maxRequestBytes: number }): HybridStorage {
  const disk = multer.diskStorage({ destination: opts.dir, filename: (_req, _file, cb) => cb(null, opts.filename()) });
  const memory = multer.memoryStorage();
  const reserved = new WeakMap<Request, number>();

  const storage: multer.StorageEngine = {
    _handleFile(req, file, cb) {
      (reserved.get(req as Request) ? memory : disk)._handleFile(req, file, cb);
    },
    _removeFile(req, file, cb) {
      (file.path ? disk : memory)._removeFile(req, file, cb);
    },
  };

  return {
    storage,
    admit(req) {
      const length = Number(req.get('content-length'));
      if (Number.isSafeInteger(length) && length > 0 && length <= opts.maxRequestBytes && opts.budget.take(length)) reserved.set(req, length);
    },
    release(req) {
      const bytes = reserved.get(req);
      if (!bytes) return;
      reserved.set(req, 0);
      opts.budget.give(bytes);
    },
  };
}
