import type { RequestHandler } from 'express';
import { unauthorized } from '@image-edits/core';
import { findApiKey, hashKey, type KeySettings } from '@image-edits/db';
import type { ApiDeps } from '../deps';

/**
 * A known key is remembered for this long (by its hash, in this process only), sparing a database
 * round trip per request. So a revoked key keeps working for at most this long on each API replica;
 * unknown keys are never remembered, so a new key works at once.
 */
export const KEY_CACHE_TTL_MS = 5_000;
const KEY_CACHE_MAX = 10_000;

/** `Authorization: Bearer <key>`; the key's id lands in res.locals.apiKeyId, its settings (limits, retention, admin) in res.locals.apiKey. */
export function requireApiKey(deps: Pick<ApiDeps, 'db'>, opts: { cacheTtlMs?: number } = {}): RequestHandler {
  const ttlMs = opts.cacheTtlMs ?? KEY_CACHE_TTL_MS;
  const known = new Map<string, { id: string; settings: KeySettings; until: number }>();
  return async (req, res, next) => {
    const header = req.get('authorization') ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) {
      next(unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' (create one with: npm run keys -- create --name NAME)"));
      return;
    }
    const hash = hashKey(match[1]!);
    const now = Date.now();
    let entry = known.get(hash);
    if (!entry || entry.until <= now) {
      const key = await findApiKey(deps.db, match[1]!);
      if (!key) {
        known.delete(hash);
        next(unauthorized('Incorrect API key provided. Create one with: npm run keys -- create --name NAME'));
        return;
      }
      // bounded: only valid keys get in, and the map starts over when it is full
      if (known.size >= KEY_CACHE_MAX) known.clear();
      entry = { id: key.id, settings: key.settings, until: now + ttlMs };
      known.set(hash, entry);
    }
    res.locals.apiKeyId = entry.id;
    res.locals.apiKey = entry.settings;
    next();
  };
}

export const apiKeyId = (locals: Record<string, unknown>) => locals.apiKeyId as string;
/** The authenticated key's own settings (as of at most KEY_CACHE_TTL_MS ago). */
export const apiKeySettings = (locals: Record<string, unknown>) => locals.apiKey as KeySettings;
