import { z } from 'zod';
import { invalidRequest } from './errors';
import { parseMetadata } from './edit-request';

/** OpenAI Batch API statuses, in their order of life. */
export const BATCH_STATUSES = ['validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', 'cancelling', 'cancelled'] as const;
export type BatchStatus = (typeof BATCH_STATUSES)[number];

export const BATCH_ENDPOINT = '/v1/images/edits';

export interface BatchCreate {
  inputFileId: string;
  endpoint: typeof BATCH_ENDPOINT;
  completionWindowMs: number;
  metadata: Record<string, string>;
}

const createSchema = z.object({
  input_file_id: z.string({ error: 'input_file_id is required' }).min(1, 'input_file_id is required'),
  endpoint: z.string({ error: 'endpoint is required' }),
  completion_window: z.string({ error: 'completion_window is required' }),
  metadata: z.unknown().optional(),
});

/** `POST /v1/batches` body, as OpenAI defines it (only this service's endpoint and the 24h window). */
export function parseBatchCreate(body: unknown): BatchCreate {
  const r = createSchema.safeParse(body ?? {});
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const param = String(issue.path[0] ?? '') || null;
    throw invalidRequest(issue.message, param, issue.code === 'invalid_type' ? 'missing_required_parameter' : 'invalid_value');
  }
  if (r.data.endpoint !== BATCH_ENDPOINT) throw invalidRequest(`endpoint must be '${BATCH_ENDPOINT}' here; got '${r.data.endpoint}'`, 'endpoint', 'invalid_value');
  if (r.data.completion_window !== '24h') throw invalidRequest(`completion_window must be '24h'; got '${r.data.completion_window}'`, 'completion_window', 'invalid_value');
  return { inputFileId: r.data.input_file_id, endpoint: BATCH_ENDPOINT, completionWindowMs: 24 * 3600 * 1000, metadata: parseMetadata(r.data.metadata) };
}

/** A structural problem with one input line: it fails the whole batch, as OpenAI does. */
export interface BatchLineError {
  code: string;
  message: string;
  /** 1-based */
  line: number;
  param: string | null;
}

export type BatchLine = { ok: true; customId: string; body: Record<string, unknown> } | { ok: false; error: BatchLineError };

/**
 * Checks one JSONL line's structure: JSON object, `custom_id` unique within the file, `method`
 * POST, `url` the batch's endpoint, `body` an object. Whether the body is a valid edit is decided
 * later, per line: a bad body becomes a failed request in the error file, not a failed batch.
 * `seen` collects custom_ids across calls.
 */
export function parseBatchLine(text: string, line: number, seen: Set<string>): BatchLine | null {
  if (text.trim() === '') return null;
  const fail = (code: string, message: string, param: string | null = null): BatchLine => ({ ok: false, error: { code, message, line, param } });
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return fail('invalid_json_line', `line ${line} is not valid JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail('invalid_request', `line ${line} must be a JSON object`);
  const o = v as Record<string, unknown>;
  if (typeof o.custom_id !== 'string' || o.custom_id.length === 0) return fail('missing_required_parameter', `line ${line}: custom_id must be a non-empty string`, 'custom_id');
  if (o.custom_id.length > 512) return fail('invalid_value', `line ${line}: custom_id is longer than 512 characters`, 'custom_id');
  if (seen.has(o.custom_id)) return fail('duplicate_custom_id', `line ${line}: custom_id '${o.custom_id}' appears more than once`, 'custom_id');
  seen.add(o.custom_id);
  if (o.method !== 'POST') return fail('invalid_value', `line ${line}: method must be 'POST'`, 'method');
  if (o.url !== BATCH_ENDPOINT) return fail('invalid_url', `line ${line}: url must be '${BATCH_ENDPOINT}'; got '${String(o.url)}'`, 'url');
  if (typeof o.body !== 'object' || o.body === null || Array.isArray(o.body)) return fail('invalid_value', `line ${line}: body must be a JSON object`, 'body');
  return { ok: true, customId: o.custom_id, body: o.body as Record<string, unknown> };
}
