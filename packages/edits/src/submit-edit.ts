import { createReadStream } from 'node:fs';
import sharp from 'sharp';
import {
  assertEgressAllowed,
  checkEditParams,
  checkImages,
  findInputFlaw,
  type ImageFacts,
  inputFlawError,
  invalidRequest,
  type JobInputs,
  type ModelRoute,
  needsTransparencyCheck,
  newId,
  noTransparencyError,
  parseEditFields,
  parseJobOptions,
  resolveModel,
  type ServiceConfig,
  type StoredImage,
} from '@image-edits/core';
import { type Db, insertJob, type JobRecord, type NewJob } from '@image-edits/db';
import { type EditQueue, INLINE_INPUT_MAX_BYTES, INLINE_INPUT_TTL_S, inlineInputKey } from '@image-edits/queue';
import type { Redis } from 'ioredis';
import { CONTENT_TYPES, extensionFor, inputImageKey, inputMaskKey, jobPrefix, ObjectNotFoundError, type ObjectStore } from '@image-edits/storage';
import { headerFacts } from './header-facts';
import { type EditInputFile, isImageField, type UploadedFile } from './inputs';

/** What accepting an edit touches; the API's and the worker's dependencies both fit. */
export interface EditDeps {
  config: ServiceConfig;
  db: Db;
  store: ObjectStore;
  queue: Pick<EditQueue, 'enqueue'>;
  routes: Map<string, ModelRoute>;
  logger: { warn(obj: object, msg: string): void };
  /** a synchronous edit's inputs are handed to the worker through it too (besides S3) */
  redis?: Pick<Redis, 'set' | 'status'>;
}

export interface SubmitEditInput {
  /** the job's id when the caller chose it beforehand (to listen for its end); a new one otherwise */
  jobId?: string;
  apiKeyId: string;
  fields: Record<string, unknown>;
  files: EditInputFile[];
  /** the `Cancel-After` header, if any */
  cancelAfter?: string | undefined;
  /** a client waits on the line for the images: the worker hands them back through Redis too */
  inlineResult?: boolean;
  /** how long its inputs and result are kept once final (the key's retention); the columns' defaults without it */
  retention?: NewJob['retention'];
}

/**
 * How stored files (`file_id`) become a job's inputs. Alone, each job gets its own S3 copy. A batch
 * passes one that copies each file once for all its children and remembers what it read, so 50,000
 * lines naming one file cost one copy.
 */
export interface StoredFileInputs {
  /** the key the job reads the file from: `jobKey` once copied there, or a shared copy */
  copy(fileKey: string, jobKey: string): Promise<string>;
  /** whether the stored image has a fully transparent pixel (decoded at most once per file) */
  hasTransparentPixel(fileKey: string, compute: () => Promise<boolean>): Promise<boolean>;
}

/** An input as stored, with its bytes (for the handover to the worker). */
interface InlineInput {
  key: string;
  bytes: Buffer;
}

/** How long a submission waits for the handover: it takes a millisecond when Redis is well. */
const HAND_OVER_WAIT_MS = 250;

/**
 * Best effort, before the job is enqueued: a worker that finds nothing reads S3, as for any other
 * job. Never holds the submission: skipped while Redis is not connected, and not waited for longer
 * than HAND_OVER_WAIT_MS (what was sent lands later, or expires).
 */
async function handOver(deps: EditDeps, inputs: InlineInput[]): Promise<void> {
  const total = inputs.reduce((n, i) => n + i.bytes.length, 0);
  if (deps.redis?.status !== 'ready' || inputs.length === 0 || total > INLINE_INPUT_MAX_BYTES) return;
  // one SET each, not a MULTI: nothing needs them atomic, and ioredis builds every defined script into each MULTI
  const redis = deps.redis;
  const sent = Promise.all(inputs.map((i) => redis.set(inlineInputKey(deps.config.env.QUEUE_PREFIX, i.key), i.bytes, 'EX', INLINE_INPUT_TTL_S))).then(
    () => undefined,
    (err: unknown) => deps.logger.warn({ err }, 'inputs not handed over through Redis; the worker reads S3'),
  );
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([sent, new Promise<void>((resolve) => (timer = setTimeout(resolve, HAND_OVER_WAIT_MS)))]);
  clearTimeout(timer);
}

export interface PrepareEditInput extends SubmitEditInput {
  /** a deadline the job may not outlive whatever it asks for (a batch's completion window) */
  deadlineAt?: Date;
  /** the job is this batch line */
  batch?: NewJob['batch'];
  /** each input stored from bytes in memory is added here (key and bytes) */
  inline?: InlineInput[];
}

export interface SubmittedEdit {
  job: JobRecord;
  /** false: the queue did not confirm in time (Redis down or slow); the row stands and the reconciler enqueues it */
  enqueued: boolean;
}

/**
 * Validates an edit on its real bytes, stores the inputs, records the job (`queued`) and enqueues
 * it. Nothing is stored or enqueued for a rejected request: every check runs before the first write.
 * Once the row exists the submission never fails: an enqueue that fails or takes longer than
 * ENQUEUE_TIMEOUT_MS is left to the reconciler, and the caller is told (`enqueued: false`).
 */
export async function submitEdit(deps: EditDeps, input: SubmitEditInput): Promise<SubmittedEdit> {
  // a synchronous edit's inputs in memory also go to the worker through Redis: it need not read back from S3 what was just stored
  const inline: InlineInput[] | undefined = input.inlineResult && deps.redis ? [] : undefined;
  const job = await prepareEdit(deps, { ...input, ...(inline ? { inline } : {}) });
  let record: JobRecord;
  try {
    [record] = await Promise.all([insertJob(deps.db, job), inline ? handOver(deps, inline) : undefined]);
  } catch (err) {
    // no row, no job: its inputs go too (a crash right here leaves them to the worker's orphan sweep)
    await deps.store.deletePrefix(jobPrefix(job.id)).catch((cleanup: unknown) => deps.logger.warn({ err: cleanup, jobId: job.id }, 'inputs of an unrecorded job not deleted'));
    throw err;
  }
  const enqueue = deps.queue.enqueue(job.provider, { jobId: job.id, apiKeyId: input.apiKeyId, ...(input.inlineResult ? { inline: true } : {}) });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), deps.config.env.ENQUEUE_TIMEOUT_MS);
  });
  try {
    if ((await Promise.race([enqueue, timedOut])) === 'timeout') {
      // the add may still go through when Redis answers (same job id: no duplicate either way)
      enqueue.catch(() => undefined);
      deps.logger.warn({ jobId: job.id }, 'enqueue did not answer in time; the reconciler will enqueue the job');
      return { job: record, enqueued: false };
    }
    return { job: record, enqueued: true };
  } catch (err) {
    // The row is the source of truth: the worker's reconciler enqueues queued jobs Redis does not know.
    deps.logger.warn({ err, jobId: job.id }, 'enqueue failed; the reconciler will enqueue the job');
    return { job: record, enqueued: false };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The first half of accepting an edit: every check (on the real bytes), then the inputs stored
 * under the job's id. Returns the row to insert; the caller records and enqueues it (submitEdit one
 * at a time, a batch's fan-out many in one statement).
 */
export async function prepareEdit(deps: Pick<EditDeps, 'store' | 'routes' | 'config'> & { storedFiles?: StoredFileInputs }, input: PrepareEditInput): Promise<NewJob> {
  const fields = parseEditFields(input.fields);
  const route = resolveModel(deps.routes, fields.model ?? deps.config.env.DEFAULT_MODEL);
  const params = checkEditParams(route.id, route.capabilities, fields);
  const options = parseJobOptions(fields, input.cancelAfter);
  // what the request carried encoded (metadata as a JSON string, "\u0000" inside) meets the input rule once decoded
  const decodedFlaw = findInputFlaw({ ...params, metadata: options.metadata });
  if (decodedFlaw) throw inputFlawError(decodedFlaw);
  // the webhook's host is checked now (400) and again at every delivery (DNS rebinding)
  if (options.webhookUrl) options.webhookUrl = await assertEgressAllowed(options.webhookUrl, { allowPrivate: deps.config.env.WEBHOOK_ALLOW_PRIVATE, param: 'webhook_url' });

  const imageFiles = input.files.filter((f) => isImageField(f.field)).sort(byImageIndex);
  const maskFiles = input.files.filter((f) => f.field === 'mask');
  if (maskFiles.length > 1) throw invalidRequest('send at most one mask', 'mask', 'too_many_masks');
  const maxPixels = deps.config.env.MAX_INPUT_PIXELS;
  const [images, mask] = await Promise.all([Promise.all(imageFiles.map((f) => readFacts(f))), maskFiles[0] ? readFacts(maskFiles[0]) : undefined]);
  checkImages(route.id, route.capabilities, images, mask, maxPixels);
  if (needsTransparencyCheck(route.capabilities, mask !== undefined) && !(await transparent(deps, imageFiles[0]!, images[0]!, maxPixels))) {
    throw noTransparencyError();
  }

  const jobId = input.jobId ?? newId('job');
  // every input at once: the puts wait on S3, not on this process
  const [storedImages, storedMask] = await Promise.all([
    Promise.all(images.map((facts, i) => storeInput(deps, imageFiles[i]!, facts, inputImageKey(jobId, i, extensionFor(facts.format!)), input.inline))),
    mask && maskFiles[0] ? storeInput(deps, maskFiles[0], mask, inputMaskKey(jobId), input.inline) : undefined,
  ]);
  const stored: JobInputs = { images: storedImages };
  if (storedMask) stored.mask = storedMask;

  let deadlineAt = options.cancelAfterMs ? new Date(Date.now() + options.cancelAfterMs) : undefined;
  if (input.deadlineAt && (!deadlineAt || input.deadlineAt < deadlineAt)) deadlineAt = input.deadlineAt;
  return {
    id: jobId,
    apiKeyId: input.apiKeyId,
    model: route.id,
    provider: route.targets[0]!.provider,
    // the route as resolved now, with prices: a later registry change never strands this job
    targets: route.targets.map((t) => ({ provider: t.provider, upstream: t.upstream, price: t.price ?? route.price })),
    params,
    inputs: stored,
    // OpenAI's safety_identifier supersedes the deprecated user
    ...(params.safety_identifier || params.user ? { endUser: params.safety_identifier || params.user } : {}),
    metadata: options.metadata,
    ...(options.webhookUrl ? { webhookUrl: options.webhookUrl, webhookEvents: options.webhookEvents } : {}),
    ...(deadlineAt ? { deadlineAt } : {}),
    ...(input.batch ? { batch: input.batch } : {}),
    ...(input.retention ? { retention: input.retention } : {}),
  };
}

/** `image[2]` sorts after `image[1]`; plain `image` / `image[]` parts keep the order they came in. */
function byImageIndex(a: UploadedFile, b: UploadedFile): number {
  const idx = (f: UploadedFile) => Number(/^image\[(\d+)\]$/.exec(f.field)?.[1] ?? -1);
  return idx(a) - idx(b);
}

async function readFacts(file: EditInputFile): Promise<ImageFacts> {
  if (file.facts) return { ...file.facts, field: file.field, bytes: file.size };
  // bytes in memory: the header read in JS (header-facts.ts); a spooled upload, or anything unusual, asks sharp
  const quick = file.buffer ? headerFacts(file.buffer) : undefined;
  if (quick) return { field: file.field, ...quick, bytes: file.size };
  try {
    // metadata reads the header only: no pixels are decoded, so a decompression bomb costs nothing here
    const meta = await sharp(source(file)).metadata();
    const format: string | undefined = meta.format;
    return { field: file.field, format, width: meta.width ?? 0, height: meta.height ?? 0, bytes: file.size, hasAlpha: meta.hasAlpha ?? false };
  } catch {
    return { field: file.field, format: undefined, width: 0, height: 0, bytes: file.size, hasAlpha: false };
  }
}

type StoreDeps = { store: ObjectStore; storedFiles?: StoredFileInputs };

async function transparent(deps: StoreDeps, file: EditInputFile, facts: ImageFacts, maxPixels: number): Promise<boolean> {
  if (!facts.hasAlpha) return false;
  const stored = file.objectKey && !file.buffer && !file.path ? file.objectKey : undefined;
  if (stored && deps.storedFiles) return deps.storedFiles.hasTransparentPixel(stored, () => hasTransparentPixel(deps, file, maxPixels));
  return hasTransparentPixel(deps, file, maxPixels);
}

/** Decodes the pixels (bounded by maxPixels, already checked on the header) only when there is an alpha channel. */
async function hasTransparentPixel(deps: StoreDeps, file: EditInputFile, maxPixels: number): Promise<boolean> {
  // a stored file is read only here, within the model's byte limit (checked already)
  const src = file.objectKey && !file.buffer && !file.path ? await readStored(deps, file.objectKey, file.field) : source(file);
  let channels: sharp.ChannelStats[];
  try {
    channels = (await sharp(src, { limitInputPixels: maxPixels }).stats()).channels;
  } catch {
    // a valid header over pixel data that does not decode (truncated, corrupt): the client's image, not our failure
    throw undecodableImage(file.field);
  }
  // the alpha channel is the last one: grey+alpha has two channels, RGBA four (CMYK+alpha five)
  const alpha = channels.length === 2 || channels.length >= 4 ? channels.at(-1) : undefined;
  return (alpha?.min ?? 255) === 0;
}

/** 400 for an image whose header reads but whose pixels do not: the message says what to fix, never the decoder's words. */
export function undecodableImage(field: string) {
  return invalidRequest('the image could not be decoded: its pixel data is corrupt or truncated; send a complete PNG, JPEG or WEBP file', field, 'invalid_image');
}

async function storeInput(deps: StoreDeps, file: EditInputFile, facts: ImageFacts, key: string, inline?: InlineInput[]): Promise<StoredImage> {
  const format = facts.format as StoredImage['format'];
  if (file.objectKey) {
    // the job gets its own copy (a batch: one shared by its children): deleting the file later never
    // breaks a queued job, deleting the job never touches the file
    let at = key;
    try {
      if (deps.storedFiles) at = await deps.storedFiles.copy(file.objectKey, key);
      else await deps.store.copy(file.objectKey, key);
    } catch (err) {
      if (err instanceof ObjectNotFoundError) throw invalidRequest(`the file given as ${file.field} was deleted meanwhile`, file.field, 'file_not_found');
      throw err;
    }
    return { key: at, format, bytes: file.size, width: facts.width, height: facts.height, filename: file.originalName };
  }
  const src = source(file);
  // bytes in memory go as they are (measured: a third less CPU per put than the same bytes as a stream,
  // hashing for the signature included); a spooled upload is streamed from its file
  await deps.store.put(key, typeof src === 'string' ? createReadStream(src) : src, { contentType: CONTENT_TYPES[format] ?? 'application/octet-stream', contentLength: file.size });
  if (inline && typeof src !== 'string') inline.push({ key, bytes: src });
  return { key, format, bytes: file.size, width: facts.width, height: facts.height, filename: file.originalName };
}

async function readStored(deps: StoreDeps, key: string, field: string): Promise<Buffer> {
  try {
    return await deps.store.getBuffer(key);
  } catch (err) {
    const e = err as { name?: string };
    if (e?.name === 'NoSuchKey') throw invalidRequest(`the file given as ${field} was deleted meanwhile`, field, 'file_not_found');
    throw err;
  }
}

/** The upload's bytes when kept in memory, else its temporary file. */
function source(file: UploadedFile): Buffer | string {
  const src = file.buffer ?? file.path;
  if (src === undefined) throw new Error(`upload ${file.field} has neither bytes nor a file`);
  return src;
}
