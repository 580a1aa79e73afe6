import type { RequestHandler } from 'express';
import { unauthorized } from '@image-edits/core';
import { findApiKey } from '@image-edits/db';
import type { ApiDeps } from '../deps';

/** `Authorization: Bearer <key>`; the key's id lands in res.locals.apiKeyId. */
export function requireApiKey(deps: Pick<ApiDeps, 'db'>): RequestHandler {
  return async (req, res, next) => {
    const header = req.get('authorization') ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) {
      next(unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' (create one with: npm run keys -- create --name NAME)"));
      return;
    }
    const key = await findApiKey(deps.db, match[1]!);
    if (!key) {
      next(unauthorized('Incorrect API key provided. Create one with: npm run keys -- create --name NAME'));
      return;
    }
    res.locals.apiKeyId = key.id;
    next();
  };
}

export const apiKeyId = (locals: Record<string, unknown>) => locals.apiKeyId as string;
