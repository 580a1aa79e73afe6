import { createHash, randomBytes } from 'node:crypto';
import { newId } from '@image-edits/core';
import type { Db } from './client';

export const hashKey = (key: string) => createHash('sha256').update(key).digest('hex');

export interface CreatedKey {
  id: string;
  name: string;
  /** shown once; only its hash is stored */
  key: string;
}

/**
 * A key's own limits and retention: null = the deployment's default (KEY_RPM, KEY_IPM,
 * KEY_MONTHLY_BUDGET_USD, INPUT_RETENTION_SECONDS, RESULT_RETENTION_SECONDS); 0 = no limit (rpm,
 * ipm, budget).
 */
export interface KeySettings {
  admin: boolean;
  requestsPerMinute: number | null;
  imagesPerMinute: number | null;
  monthlyBudgetUsd: number | null;
  inputRetentionSeconds: number | null;
  resultRetentionSeconds: number | null;
}

/** What `npm run keys -- create|set` may change; an absent field is left as it is. */
export type KeySettingsPatch = Partial<KeySettings> & { maxConcurrentJobs?: number | null };

export async function createApiKey(db: Db, name: string, opts: KeySettingsPatch = {}): Promise<CreatedKey> {
  const key = `sk-ie-${randomBytes(24).toString('base64url')}`;
  const row = await db.apiKey.create({
    data: { id: newId('key'), name, keyHash: hashKey(key), keyPrefix: key.slice(0, 10), maxConcurrentJobs: checkLimit(opts.maxConcurrentJobs ?? null), ...settingsData(opts) },
  });
  return { id: row.id, name: row.name, key };
}

/** Changes the given settings of a key (null: back to the default); the API and workers apply them within seconds. False for an unknown key. */
export async function setKeySettings(db: Db, id: string, patch: KeySettingsPatch): Promise<boolean> {
  const data = { ...settingsData(patch), ...(patch.maxConcurrentJobs !== undefined ? { maxConcurrentJobs: checkLimit(patch.maxConcurrentJobs) } : {}) };
  const res = await db.apiKey.updateMany({ where: { id }, data });
  return res.count > 0;
}

/** A key's settings; null for an unknown key. */
export async function getKeySettings(db: Db, id: string): Promise<KeySettings | null> {
  const row = await db.apiKey.findUnique({ where: { id }, select: SETTINGS_SELECT });
  return row ? toSettings(row) : null;
}

const SETTINGS_SELECT = { isAdmin: true, requestsPerMinute: true, imagesPerMinute: true, monthlyBudgetUsd: true, inputRetentionSeconds: true, resultRetentionSeconds: true } as const;

function toSettings(row: {
  isAdmin: boolean;
  requestsPerMinute: number | null;
  imagesPerMinute: number | null;
  monthlyBudgetUsd: { toString(): string } | null;
  inputRetentionSeconds: number | null;
  resultRetentionSeconds: number | null;
}): KeySettings {
  return {
    admin: row.isAdmin,
    requestsPerMinute: row.requestsPerMinute,
    imagesPerMinute: row.imagesPerMinute,
    monthlyBudgetUsd: row.monthlyBudgetUsd === null ? null : Number(row.monthlyBudgetUsd),
    inputRetentionSeconds: row.inputRetentionSeconds,
    resultRetentionSeconds: row.resultRetentionSeconds,
  };
}

function settingsData(p: KeySettingsPatch) {
  const whole = (name: string, v: number | null | undefined) => {
    if (v !== undefined && v !== null && (!Number.isInteger(v) || v < 0 || v > 2_147_483_647)) throw new RangeError(`${name} is a whole number, 0 or more: ${v}`);
    return v;
  };
  if (p.monthlyBudgetUsd !== undefined && p.monthlyBudgetUsd !== null && (!Number.isFinite(p.monthlyBudgetUsd) || p.monthlyBudgetUsd < 0 || p.monthlyBudgetUsd >= 1e10)) {
    throw new RangeError(`a monthly budget is an amount of USD, 0 or more: ${p.monthlyBudgetUsd}`);
  }
  const out: Record<string, unknown> = {};
  if (p.admin !== undefined) out.isAdmin = p.admin;
  if (p.requestsPerMinute !== undefined) out.requestsPerMinute = whole('requests per minute', p.requestsPerMinute);
  if (p.imagesPerMinute !== undefined) out.imagesPerMinute = whole('images per minute', p.imagesPerMinute);
  if (p.monthlyBudgetUsd !== undefined) out.monthlyBudgetUsd = p.monthlyBudgetUsd === null ? null : Math.round(p.monthlyBudgetUsd * 100) / 100;
  if (p.inputRetentionSeconds !== undefined) out.inputRetentionSeconds = whole('an input retention', p.inputRetentionSeconds);
  if (p.resultRetentionSeconds !== undefined) out.resultRetentionSeconds = whole('a result retention', p.resultRetentionSeconds);
  return out as { isAdmin?: boolean; requestsPerMinute?: number | null; imagesPerMinute?: number | null; monthlyBudgetUsd?: number | null; inputRetentionSeconds?: number | null; resultRetentionSeconds?: number | null };
}

/**
 * How many of the key's jobs may run at once per provider, across all workers: a number (0 = no
 * cap), or null for the deployment's default (KEY_MAX_CONCURRENT_JOBS). Undefined for an unknown key.
 */
export async function getKeyConcurrencyLimit(db: Db, id: string): Promise<number | null | undefined> {
  const row = await db.apiKey.findUnique({ where: { id }, select: { maxConcurrentJobs: true } });
  return row ? row.maxConcurrentJobs : undefined;
}

/** Sets the key's cap (null: back to the default); workers apply it within seconds. False for an unknown key. */
export async function setKeyConcurrencyLimit(db: Db, id: string, limit: number | null): Promise<boolean> {
  const res = await db.apiKey.updateMany({ where: { id }, data: { maxConcurrentJobs: checkLimit(limit) } });
  return res.count > 0;
}

function checkLimit(limit: number | null): number | null {
  if (limit !== null && (!Number.isInteger(limit) || limit < 0)) throw new RangeError(`a concurrency limit is a whole number, 0 or more (0 = no cap): ${limit}`);
  return limit;
}

/** The key's id (and its settings) when the key is known and not revoked. */
export async function findApiKey(db: Db, key: string): Promise<{ id: string; name: string; settings: KeySettings } | null> {
  const row = await db.apiKey.findUnique({ where: { keyHash: hashKey(key) }, select: { id: true, name: true, revokedAt: true, ...SETTINGS_SELECT } });
  return row && !row.revokedAt ? { id: row.id, name: row.name, settings: toSettings(row) } : null;
}

export async function revokeApiKey(db: Db, id: string): Promise<boolean> {
  const res = await db.apiKey.updateMany({ where: { id, revokedAt: null }, data: { revokedAt: new Date() } });
  return res.count > 0;
}
