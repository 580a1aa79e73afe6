import { createHash } from 'node:crypto';
import { z } from 'zod';
import { invalidRequest } from './errors';
import { findInputFlaw, inputFlawError, printable, storableText } from './input-text';
import { parseMetadata } from './edit-request';
import { FAMILY_CAPABILITIES } from './models';

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

/**
 * The body of `POST /v1/batches`, as OpenAI defines it (only this service's endpoint and the 24h
 * window). The required fields are checked first: their types, then the two values.
 */
export const batchCreateSchema = z
  .object({
    input_file_id: z.string({ error: 'input_file_id is required' }).min(1, 'input_file_id is required').meta({ description: "a file of the key with purpose 'batch' (JSONL, at most 200 MB)" }),
    endpoint: z.string({ error: 'endpoint is required' }).meta({ enum: [BATCH_ENDPOINT] }),
    completion_window: z.string({ error: 'completion_window is required' }).meta({ enum: ['24h'] }),
    metadata: z.unknown().optional().meta({ description: 'up to 16 string pairs' }),
  })
  .superRefine((b, ctx) => {
    if (b.endpoint !== BATCH_ENDPOINT) ctx.addIssue({ code: 'custom', message: `endpoint must be '${BATCH_ENDPOINT}' here; got '${b.endpoint}'`, path: ['endpoint'] });
    else if (b.completion_window !== '24h') ctx.addIssue({ code: 'custom', message: `completion_window must be '24h'; got '${b.completion_window}'`, path: ['completion_window'] });
  });

/** `POST /v1/batches` body, as OpenAI defines it (only this service's endpoint and the 24h window). */
export function parseBatchCreate(body: unknown): BatchCreate {
  const r = batchCreateSchema.safeParse(body ?? {});
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const param = String(issue.path[0] ?? '') || null;
    throw invalidRequest(issue.message, param, issue.code === 'invalid_type' ? 'missing_required_parameter' : 'invalid_value');
  }
  const metadata = parseMetadata(r.data.metadata);
  // metadata sent as a JSON string is checked once decoded, by the same rule as the request's own text
  const flaw = findInputFlaw(metadata);
  if (flaw) throw inputFlawError(flaw, ['metadata']);
  return { inputFileId: r.data.input_file_id, endpoint: BATCH_ENDPOINT, completionWindowMs: 24 * 3600 * 1000, metadata };
}

/** A structural problem with one input line: it fails the whole batch, as OpenAI does. */
export interface BatchLineError {
  code: string;
  message: string;
  /** 1-based */
  line: number;
  param: string | null;
}

/**
 * A well-formed line. `refused`: its custom_id or body holds text no request may (a NUL, an unpaired
 * surrogate) or nests absurdly deep; the line is then a failed request of its own (400) and never runs.
 * `customId` is always storable (such characters replaced by U+FFFD), so even that line's error can be written.
 */
export type BatchLine =
  | { ok: true; customId: string; body: Record<string, unknown>; refused?: { message: string; param: string | null; code: string } }
  | { ok: false; error: BatchLineError };

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
  // messages quote the line's text printable: the batch's errors are stored (jsonb refuses \u0000)
  if (seen.has(o.custom_id)) return fail('duplicate_custom_id', `line ${line}: custom_id '${printable(o.custom_id)}' appears more than once`, 'custom_id');
  seen.add(o.custom_id);
  if (o.method !== 'POST') return fail('invalid_value', `line ${line}: method must be 'POST'`, 'method');
  if (o.url !== BATCH_ENDPOINT) return fail('invalid_url', `line ${line}: url must be '${BATCH_ENDPOINT}'; got '${printable(String(o.url)).slice(0, 200)}'`, 'url');
  if (typeof o.body !== 'object' || o.body === null || Array.isArray(o.body)) return fail('invalid_value', `line ${line}: body must be a JSON object`, 'body');
  const parsed: BatchLine = { ok: true, customId: storableText(o.custom_id), body: o.body as Record<string, unknown> };
  // the same rule as the API's input check: such a line is refused alone, the rest of the batch runs
  const idFlaw = findInputFlaw(o.custom_id);
  const flaw = idFlaw ? { ...idFlaw, path: ['custom_id'] } : findInputFlaw(o.body);
  if (flaw) {
    const err = inputFlawError(flaw);
    parsed.refused = { message: err.message, param: err.param, code: err.code ?? 'invalid_value' };
  }
  return parsed;
}

/** OpenAI's limits of one batch: requests per input file, and the file's size. */
export const BATCH_MAX_REQUESTS = 50_000;
export const BATCH_MAX_FILE_BYTES = 200 * 1024 * 1024;
/** A line holds at most what the JSON form of an edit may: one image at the largest size any model takes, in base64, and the fields. */
export const BATCH_MAX_LINE_BYTES = Math.ceil((Math.max(...Object.values(FAMILY_CAPABILITIES).map((c) => c.maxImageBytes)) * 4) / 3) + 1024 * 1024;
/** A failed validation lists this many line errors, then one saying how many there were. */
export const BATCH_MAX_LISTED_ERRORS = 100;

/** `errors` of the batch object. */
export interface BatchErrors {
  object: 'list';
  data: { code: string; message: string; param: string | null; line: number | null }[];
}

/** The structural errors of a file as the batch shows them: the first BATCH_MAX_LISTED_ERRORS, then their count. */
export function batchErrorList(first: BatchLineError[], count: number): BatchErrors {
  const data: BatchErrors['data'] = first.slice(0, BATCH_MAX_LISTED_ERRORS).map((e) => ({ code: e.code, message: e.message, param: e.param, line: e.line }));
  if (count > data.length) data.push({ code: 'too_many_errors', message: `the input file has ${count} invalid lines; the first ${data.length} are listed`, param: null, line: null });
  return { object: 'list', data };
}

/** Once final, a batch moves no more. */
export const FINAL_BATCH_STATUSES: readonly BatchStatus[] = ['failed', 'completed', 'expired', 'cancelled'];
export const isFinalBatch = (s: BatchStatus) => FINAL_BATCH_STATUSES.includes(s);

const ALPHABET36 = '0123456789abcdefghijklmnopqrstuvwxyz';
function digest36(text: string, length: number): string {
  let out = '';
  for (const b of createHash('sha256').update(text).digest().subarray(0, length)) out += ALPHABET36[b % 36];
  return out;
}
const time36 = (d: Date) => d.getTime().toString(36).padStart(10, '0');

/**
 * The job id of a batch line: the same for the same (batch, line), so a fan-out that resumes after a
 * crash writes the same rows and S3 keys again rather than a second set. The batch's creation time
 * comes first (as in `newId`) and then the line, so a batch's children sort by line.
 */
export function batchChildJobId(batchId: string, batchCreatedAt: Date, line: number): string {
  return `job_${time36(batchCreatedAt)}${line.toString(36).padStart(5, '0')}${digest36(batchId, 11)}`;
}

/** `id` of a line of the output or error file: stable, so a rewritten file says the same. */
export const batchRequestId = (batchId: string, line: number) => `batch_req_${digest36(`${batchId}:${line}`, 24)}`;

/** The ids of a batch's output and error files: fixed once its requests are all final (`settledAt`), so a retried finalization writes the same files. */
export function batchResultFileId(batchId: string, settledAt: Date, kind: 'output' | 'error'): string {
  return `file-${time36(settledAt)}${digest36(`${batchId}:${kind}`, 16)}`;
}

/** A batch as stored, as the views need it (the db's BatchRecord fits). */
export interface BatchView {
  id: string;
  status: BatchStatus;
  endpoint: string;
  inputFileId: string;
  completionWindow: string;
  errors: BatchErrors | null;
  outputFileId: string | null;
  errorFileId: string | null;
  total: number;
  completed: number;
  failed: number;
  metadata: Record<string, string>;
  createdAt: Date;
  inProgressAt: Date | null;
  expiresAt: Date;
  finalizingAt: Date | null;
  completedAt: Date | null;
  failedAt: Date | null;
  expiredAt: Date | null;
  cancellingAt: Date | null;
  cancelledAt: Date | null;
}

/** The batch object, exactly OpenAI's shape; rendered the same by the API and in webhook payloads. */
export function batchObject(b: BatchView): Record<string, unknown> {
  const seconds = (d: Date | null) => (d ? Math.floor(d.getTime() / 1000) : null);
  return {
    id: b.id,
    object: 'batch',
    endpoint: b.endpoint,
    errors: b.errors,
    input_file_id: b.inputFileId,
    completion_window: b.completionWindow,
    status: b.status,
    output_file_id: b.outputFileId,
    error_file_id: b.errorFileId,
    created_at: seconds(b.createdAt),
    in_progress_at: seconds(b.inProgressAt),
    expires_at: seconds(b.expiresAt),
    finalizing_at: seconds(b.finalizingAt),
    completed_at: seconds(b.completedAt),
    failed_at: seconds(b.failedAt),
    // set when the window ran out; shown once the batch is over
    expired_at: b.status === 'expired' ? seconds(b.expiredAt) : null,
    cancelling_at: seconds(b.cancellingAt),
    cancelled_at: seconds(b.cancelledAt),
    request_counts: { total: b.total, completed: b.completed, failed: b.failed },
    metadata: Object.keys(b.metadata).length ? b.metadata : null,
  };
}
