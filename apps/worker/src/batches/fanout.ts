import { rm } from 'node:fs/promises';
import {
  BATCH_MAX_LINE_BYTES,
  BATCH_MAX_LISTED_ERRORS,
  BATCH_MAX_REQUESTS,
  type BatchErrors,
  type BatchLineError,
  batchChildJobId,
  batchErrorList,
  findInputFlaw,
  isDependencyError,
  isFinalBatch,
  parseBatchLine,
  ServiceError,
  storableJson,
  storableText,
} from '@image-edits/core';
import {
  type BatchRecord,
  endUnstartedBatch,
  failBatchValidation,
  type FileRecord,
  getBatch,
  getFilesForKey,
  getKeySettings,
  type NewJob,
  type NewRequestError,
  recordFanOutChunk,
  startBatch,
} from '@image-edits/db';
import { jsonFormError, prepareEdit, resolveJsonEdit, type StoredFileInputs } from '@image-edits/edits';
import { batchFileInputKey, fileKey, ObjectNotFoundError } from '@image-edits/storage';
import { announceBatch, type BatchDeps, batchInputKey, isStopping, onJobFinished } from './deps';
import { type Line, readLines } from './lines';

/** A chunk is recorded (one transaction) and enqueued (one addBulk) at once: this many lines, or bytes of them. */
export const CHUNK_LINES = 500;
const CHUNK_BYTES = 32 * 1024 * 1024;
/** Lines of a chunk validated and stored at once (their S3 writes and image_url fetches wait on the network). */
const LINE_CONCURRENCY = 16;

/** The worker is closing: the fan-out stops between two chunks and resumes from its progress later. */
export class FanOutInterrupted extends Error {}

interface Request {
  line: number;
  customId: string;
  body: Record<string, unknown>;
  /** refused by the line parser (text no request may hold): the line's error, it never runs */
  refused?: { message: string; param: string | null; code: string };
}

/**
 * The `fanout` step of a batch. Validating: the input file (snapshotted first, so deleting the file
 * later changes nothing) is read line by line, only its structure checked; any structural error
 * fails the batch, naming the lines. Then the fan-out proper reads it again from the line after the
 * recorded progress: each chunk's lines are validated as edits (a refused body becomes a request
 * error, as OpenAI does) and their inputs stored, then the jobs, the request errors and the
 * progress are recorded in one transaction and the jobs enqueued at the bottom lane. A crash
 * anywhere repeats at most the chunk in hand, and writes the same ids and keys again.
 */
export async function runFanOut(deps: BatchDeps, batchId: string, signal: AbortSignal): Promise<void> {
  let batch = await getBatch(deps.db, batchId);
  if (!batch || isFinalBatch(batch.status) || batch.fannedOutAt) return;
  const log = deps.logger.child({ batchId });

  if (batch.status === 'validating') {
    const snapshot = await snapshotInput(deps, batch);
    const checked = snapshot ? await validateInput(deps, batch) : { errors: inputGone(batch) };
    if ('errors' in checked) {
      if (await failBatchValidation(deps.db, batchId, storableJson(checked.errors))) {
        log.info({ errors: checked.errors.data.length }, 'batch input refused; batch failed');
        await announceBatch(deps, batchId, 'failed');
      }
      return;
    }
    await startBatch(deps.db, batchId, checked.total);
    batch = (await getBatch(deps.db, batchId))!;
    log.info({ total: batch.total, status: batch.status }, 'batch input valid; fanning out');
  }
  if (batch.inProgressAt === null) {
    // cancelled (or out of time) before it ever ran: it ends with no requests
    const end = batch.status === 'cancelling' ? 'cancelled' : batch.expiredAt ? 'expired' : null;
    if (end && (await endUnstartedBatch(deps.db, batchId, end))) await announceBatch(deps, batchId, end);
    return;
  }
  await fanOut(deps, batch, signal);
}

/** The batch reads its own copy of the input file: a server-side copy, made once. */
async function snapshotInput(deps: BatchDeps, batch: BatchRecord): Promise<boolean> {
  try {
    await deps.store.copy(fileKey(batch.inputFileId), batchInputKey(batch.id));
    return true;
  } catch (err) {
    if (err instanceof ObjectNotFoundError) return false;
    throw err;
  }
}

const inputGone = (batch: BatchRecord): BatchErrors => ({
  object: 'list',
  data: [{ code: 'invalid_file', message: `the input file ${batch.inputFileId} was deleted before the batch could read it`, param: 'input_file_id', line: null }],
});

async function inputLines(deps: BatchDeps, batch: BatchRecord): Promise<AsyncGenerator<Line>> {
  const { body } = await deps.store.getStream(batchInputKey(batch.id));
  return readLines(body, BATCH_MAX_LINE_BYTES);
}

/** The structural pass: every line a JSON object with a unique custom_id, method POST, the batch's url and a body. */
async function validateInput(deps: BatchDeps, batch: BatchRecord): Promise<{ total: number } | { errors: BatchErrors }> {
  const seen = new Set<string>();
  const first: BatchLineError[] = [];
  let invalid = 0;
  let total = 0;
  const refuse = (e: BatchLineError) => {
    invalid++;
    if (first.length < BATCH_MAX_LISTED_ERRORS) first.push(e);
  };
  for await (const l of await inputLines(deps, batch)) {
    if (l.text === null) {
      refuse({ code: 'line_too_long', message: `line ${l.line} is ${l.bytes} bytes; a line may have at most ${BATCH_MAX_LINE_BYTES}`, line: l.line, param: null });
      continue;
    }
    const parsed = parseBatchLine(l.text, l.line, seen);
    if (!parsed) continue;
    if (!parsed.ok) {
      refuse(parsed.error);
      continue;
    }
    if (++total > BATCH_MAX_REQUESTS) {
      refuse({ code: 'too_many_requests', message: `the input file has more than ${BATCH_MAX_REQUESTS} requests, the most a batch takes`, line: l.line, param: null });
      break;
    }
  }
  if (invalid > 0) return { errors: batchErrorList(first, invalid) };
  if (total === 0) return { errors: { object: 'list', data: [{ code: 'empty_file', message: 'the input file holds no requests', param: 'input_file_id', line: null }] } };
  return { total };
}

async function fanOut(deps: BatchDeps, start: BatchRecord, signal: AbortSignal): Promise<void> {
  const log = deps.logger.child({ batchId: start.id });
  let batch = start;
  let linesDone = batch.linesDone;
  let stopping = isStopping(batch);
  const storedFiles = sharedFileInputs(deps, batch);
  let chunk: Request[] = [];
  let chunkBytes = 0;
  let lastLine = linesDone;
  const started = Date.now();
  const firstLine = linesDone;

  /** Records the chunk (lines up to `toLine`); false when another run of this fan-out moved on meanwhile. */
  const flush = async (toLine: number, last: boolean): Promise<boolean> => {
    if (!stopping) {
      const { jobs, errors } = await prepareChunk(deps, batch, chunk, storedFiles, signal);
      const out = await recordFanOutChunk(deps.db, batch.id, { fromLine: linesDone, toLine, jobs, errors, last, mode: 'running' });
      if (out.recorded) {
        linesDone = toLine;
        await enqueueChildren(deps, jobs);
        if (out.settled) await onJobFinished(deps, { batchId: batch.id, batchSettled: true });
        return true;
      }
      // not recorded: the batch stopped running (cancel, expiry), or another run recorded this chunk
      await discardInputs(deps, jobs);
      batch = (await getBatch(deps.db, batch.id))!;
      if (batch.linesDone !== linesDone || !isStopping(batch)) return false;
      stopping = true;
      log.info({ line: linesDone }, 'batch stopping; the rest of its lines are recorded as not run');
    }
    // stopping: the lines become request errors of the error file, none runs
    const error = batch.status === 'cancelling' ? CANCELLED : EXPIRED;
    const errors = chunk.map((r) => ({ line: r.line, customId: r.customId, error }));
    const out = await recordFanOutChunk(deps.db, batch.id, { fromLine: linesDone, toLine, jobs: [], errors, last, mode: 'stopping' });
    if (!out.recorded) return false;
    linesDone = toLine;
    if (out.settled) await onJobFinished(deps, { batchId: batch.id, batchSettled: true });
    return true;
  };

  for await (const l of await inputLines(deps, batch)) {
    if (l.line <= linesDone) continue;
    lastLine = l.line;
    // the structure was checked by the validation pass, on the same (snapshotted) bytes
    const parsed = l.text === null ? null : parseBatchLine(l.text, l.line, new Set());
    if (!parsed?.ok) continue;
    chunk.push({ line: l.line, customId: parsed.customId, body: parsed.body, ...(parsed.refused ? { refused: parsed.refused } : {}) });
    chunkBytes += l.bytes;
    if (chunk.length >= CHUNK_LINES || chunkBytes >= CHUNK_BYTES) {
      if (signal.aborted) throw new FanOutInterrupted(`worker closing; batch ${batch.id} resumes after line ${linesDone}`);
      if (!(await flush(l.line, false))) return superseded(log, linesDone);
      chunk = [];
      chunkBytes = 0;
    }
  }
  if (!(await flush(lastLine, true))) return superseded(log, linesDone);
  log.info({ lines: linesDone - firstLine, ms: Date.now() - started, stopped: stopping }, 'batch fanned out');
}

function superseded(log: BatchDeps['logger'], line: number): void {
  log.warn({ line }, 'another run of this fan-out recorded progress first; this one stops');
}

/** The request error of a line that never ran because its batch stopped. */
const CANCELLED = { message: 'the batch was cancelled before this request ran', type: 'invalid_request_error', code: 'batch_cancelled', status: 499 };
const EXPIRED = { message: 'the batch reached the end of its completion window before this request ran', type: 'invalid_request_error', code: 'batch_expired', status: 408 };

/**
 * Each line through the JSON form and the same checks as POST /v1/images/edits, a few at a time:
 * its job (inputs stored under the line's job id) or its request error. Each line is on its own:
 * whatever it throws is its error, except an outage of our own (S3, Postgres, Redis) or the worker
 * closing, which fail the step so it is retried. No line can stop its batch.
 */
async function prepareChunk(
  deps: BatchDeps,
  batch: BatchRecord,
  chunk: Request[],
  storedFiles: StoredFileInputs,
  signal: AbortSignal,
): Promise<{ jobs: NewJob[]; errors: NewRequestError[] }> {
  // the chunk's file_ids in one query
  const files = new Map<string, FileRecord>((await getFilesForKey(deps.db, [...fileIdsOf(chunk.filter((r) => !r.refused))], batch.apiKeyId)).map((f) => [f.id, f]));
  const findFile = async (id: string) => files.get(id) ?? null;
  // the key's input retention (a child's result follows its batch's output file)
  const retention = { inputSeconds: (await getKeySettings(deps.db, batch.apiKeyId))?.inputRetentionSeconds ?? deps.config.env.INPUT_RETENTION_SECONDS, resultSeconds: null };
  const jobs: NewJob[] = [];
  const errors: NewRequestError[] = [];
  await pool(LINE_CONCURRENCY, chunk, async (r) => {
    if (r.refused) {
      errors.push({ line: r.line, customId: r.customId, error: { ...r.refused, type: 'invalid_request_error', status: 400 } });
      return;
    }
    const temps: string[] = [];
    try {
      const input = await resolveJsonEdit({ ...deps, findFile }, batch.apiKeyId, r.body, { add: (p) => temps.push(p) }, signal);
      jobs.push({
        ...(await prepareEdit(
          { ...deps, storedFiles },
          {
            apiKeyId: batch.apiKeyId,
            fields: input.fields,
            files: input.files,
            jobId: batchChildJobId(batch.id, batch.createdAt, r.line),
            deadlineAt: batch.expiresAt,
            batch: { id: batch.id, customId: r.customId, line: r.line },
          },
        )),
        retention,
      });
    } catch (err) {
      if (signal.aborted || isDependencyError(err)) throw err;
      const e = jsonFormError(err);
      if (e instanceof ServiceError && e.status !== 503) {
        errors.push({ line: r.line, customId: r.customId, error: { message: e.message, type: e.type, param: e.param, code: e.code ?? 'invalid_request', status: e.status } });
      } else {
        // a bug or a library's surprise on this line's input: its error, never a step retried without end
        deps.logger.warn({ err, batchId: batch.id, line: r.line }, 'batch line failed unexpectedly; recorded as its error');
        errors.push({ line: r.line, customId: r.customId, error: LINE_FAILED });
      }
    } finally {
      await Promise.all(temps.map((p) => rm(p, { force: true })));
    }
  });
  // the chunk's rows go in one statement: a row Postgres would refuse (a NUL or an unpaired surrogate
  // that came by some other way than the line's text) is taken out first, or it would fail them all
  const unstorable = jobs.filter((j) => findInputFlaw(j) !== null);
  if (unstorable.length > 0) {
    await discardInputs(deps, unstorable);
    for (const j of unstorable) errors.push({ line: j.batch!.line, customId: j.batch!.customId, error: UNSTORABLE });
  }
  const stored = jobs.filter((j) => !unstorable.includes(j));
  // in line order: a key's jobs run in the order they were added
  stored.sort((a, b) => a.batch!.line - b.batch!.line);
  return { jobs: stored, errors: errors.map((e) => storableJson({ ...e, customId: storableText(e.customId) })) };
}

const LINE_FAILED = { message: 'this request could not be processed because of an error on our side; submit it again', type: 'server_error', param: null, code: 'internal_error', status: 500 };
const UNSTORABLE = { message: 'this request holds text that cannot be stored (a NUL character or an unpaired surrogate)', type: 'invalid_request_error', param: null, code: 'invalid_value', status: 400 };

function* fileIdsOf(chunk: Request[]): Generator<string> {
  const idOf = (ref: unknown) => (ref && typeof ref === 'object' && typeof (ref as { file_id?: unknown }).file_id === 'string' ? (ref as { file_id: string }).file_id : undefined);
  const seen = new Set<string>();
  for (const r of chunk) {
    const refs = [...(Array.isArray(r.body.images) ? r.body.images : []), r.body.mask];
    for (const ref of refs) {
      const id = idOf(ref);
      if (id && !seen.has(id)) {
        seen.add(id);
        yield id;
      }
    }
  }
}

/**
 * A batch copies each file its lines name once, to its own prefix, and every child reads that copy
 * (so 50,000 lines naming one image cost one copy, and deleting the file breaks no child). What is
 * read of a file (its transparency) is remembered for the run.
 */
function sharedFileInputs(deps: BatchDeps, batch: BatchRecord): StoredFileInputs {
  const copies = new Map<string, Promise<string>>();
  const transparent = new Map<string, Promise<boolean>>();
  return {
    copy(from) {
      let copied = copies.get(from);
      if (!copied) {
        const to = batchFileInputKey(batch.id, from.split('/').pop()!);
        copied = deps.store.copy(from, to).then(() => to);
        copies.set(from, copied);
        // a failure other than a deleted file is not remembered: the step is retried with a fresh run
        copied.catch((err: unknown) => {
          if (!(err instanceof ObjectNotFoundError)) copies.delete(from);
        });
      }
      return copied;
    },
    hasTransparentPixel(key, compute) {
      let known = transparent.get(key);
      if (!known) {
        known = compute();
        transparent.set(key, known);
        known.catch(() => transparent.delete(key));
      }
      return known;
    },
  };
}

/** The chunk's jobs on their providers' queues, in the batch lane (after every direct submission). */
async function enqueueChildren(deps: BatchDeps, jobs: NewJob[]): Promise<void> {
  const byProvider = new Map<string, NewJob[]>();
  for (const j of jobs) byProvider.set(j.provider, [...(byProvider.get(j.provider) ?? []), j]);
  for (const [provider, list] of byProvider) {
    // a lost enqueue is not lost work: the rows are queued, and the reconciler enqueues what BullMQ lacks
    await deps.queue.enqueueMany(provider, list.map((j) => ({ jobId: j.id, apiKeyId: j.apiKeyId, batch: true, images: j.params.n })));
  }
}

/** Inputs stored for a chunk that was not recorded (the batch stopped meanwhile): nothing refers to them. */
async function discardInputs(deps: BatchDeps, jobs: NewJob[]): Promise<void> {
  const own = jobs.flatMap((j) => [...j.inputs.images, ...(j.inputs.mask ? [j.inputs.mask] : [])].filter((i) => i.key.startsWith(`jobs/${j.id}/`)).map((i) => i.key));
  await pool(16, own, (key) => deps.store.delete(key).catch(() => undefined));
}

/** Runs `fn` over `items`, `n` at a time; the first error stops the rest and is thrown once all settled. */
async function pool<T>(n: number, items: T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  let failed: { err: unknown } | undefined;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length && !failed) {
        const item = items[next++]!;
        try {
          await fn(item);
        } catch (err) {
          failed ??= { err };
        }
      }
    }),
  );
  if (failed) throw failed.err;
}
