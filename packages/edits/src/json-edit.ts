import { checkEditParams, imagesListError, invalidRequest, type ModelRoute, parseEditFields, parseImageRef, resolveModel, type ServiceConfig, ServiceError, tooLarge } from '@image-edits/core';
import { type Db, type FileRecord, getFileForKey } from '@image-edits/db';
import { fileKey } from '@image-edits/storage';
import { fetchImage, IMAGE_MEDIA_TYPES, ImageFetchError } from './fetch-image';
import { type EditInputFile, IMAGE_PURPOSES } from './inputs';

type ImageRef = { fileId: string } | { imageUrl: string };

export interface JsonEditDeps {
  config: ServiceConfig;
  db: Db;
  routes: Map<string, ModelRoute>;
  /** where fetched image_urls are written */
  uploadDir: string;
  /** a key's live file by id; by default one query each (a batch's fan-out looks up a chunk's files at once) */
  findFile?: (fileId: string, apiKeyId: string) => Promise<FileRecord | null>;
}

/**
 * The JSON form of POST /v1/images/edits (reference §4): `images: [{file_id} | {image_url}]` and an
 * optional `mask` of the same shape, every other field as multipart sends it. Each reference
 * becomes the input multipart would have produced (`image[i]`, `mask`), so submitEdit validates
 * and stores it the same way:
 * - `file_id`: a live image file of this key; copied into the job by S3, not read here;
 * - `data:` URL: base64 of png/jpeg/webp, decoded in memory (it came in the body anyway);
 * - `https://` URL: fetched through the egress guard to a temporary file.
 * Errors name the reference (`images[1].image_url`, `mask.file_id`). The text fields are checked
 * first: an invalid request fetches nothing.
 */
export async function resolveJsonEdit(
  deps: JsonEditDeps,
  apiKeyId: string,
  body: unknown,
  temps: { add(path: string): void },
  signal: AbortSignal,
): Promise<{ fields: Record<string, unknown>; files: EditInputFile[] }> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalidRequest('the request body must be a JSON object', null, 'invalid_json');
  const { images, mask, ...fields } = body as Record<string, unknown>;
  if ('image' in fields) throw invalidRequest('the JSON form takes images: [{"file_id": ...} | {"image_url": ...}], not image', 'image', 'unknown_parameter');
  const parsed = parseEditFields(fields);
  const route = resolveModel(deps.routes, parsed.model ?? deps.config.env.DEFAULT_MODEL);
  const caps = route.capabilities;
  // the model's parameter rules too (prepareEdit applies them again): a refused field fetches nothing
  checkEditParams(route.id, caps, parsed);

  // the list itself (core's jsonImagesSchema), then the model's limit, then each entry
  const listError = imagesListError(images);
  if (listError || !Array.isArray(images)) throw listError ?? invalidRequest('images must be a list', 'images', 'invalid_value');
  // before fetching anything: the count is known now
  if (images.length > caps.maxImages) {
    throw invalidRequest(`model '${parsed.model ?? deps.config.env.DEFAULT_MODEL}' accepts at most ${caps.maxImages} image${caps.maxImages === 1 ? '' : 's'}; got ${images.length}`, 'images', 'too_many_images');
  }
  const refs = images.map((entry, i) => parseImageRef(entry, `images[${i}]`));
  const maskRef = mask === undefined || mask === null ? undefined : parseImageRef(mask, 'mask');

  const ctx = { deps, apiKeyId, temps, signal };
  // every fetch settles before an error is thrown: none is left writing a file nobody deletes
  const settled = await Promise.allSettled([
    ...refs.map((ref, i) => resolveRef(ctx, ref, `images[${i}]`, `image[${i}]`, caps.maxImageBytes)),
    ...(maskRef ? [resolveRef(ctx, maskRef, 'mask', 'mask', caps.maxMaskBytes)] : []),
  ]);
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return { fields, files: settled.map((r) => (r as PromiseFulfilledResult<EditInputFile>).value) };
}

interface ResolveContext {
  deps: JsonEditDeps;
  apiKeyId: string;
  temps: { add(path: string): void };
  signal: AbortSignal;
}

async function resolveRef(ctx: ResolveContext, ref: ImageRef, param: string, field: string, maxBytes: number): Promise<EditInputFile> {
  if ('fileId' in ref) {
    const p = `${param}.file_id`;
    const file = ctx.deps.findFile ? await ctx.deps.findFile(ref.fileId, ctx.apiKeyId) : await getFileForKey(ctx.deps.db, ref.fileId, ctx.apiKeyId);
    if (!file) throw invalidRequest(`No such File object: ${ref.fileId}`, p, 'file_not_found');
    if (!IMAGE_PURPOSES.includes(file.purpose) || !file.image) {
      throw invalidRequest(`file ${ref.fileId} has purpose '${file.purpose}'; an image must be uploaded with purpose 'vision' or 'user_data'`, p, 'invalid_file_purpose');
    }
    return { field, originalName: file.filename, size: file.bytes, objectKey: fileKey(file.id), facts: file.image };
  }
  const p = `${param}.image_url`;
  if (/^data:/i.test(ref.imageUrl)) return { field, ...decodeDataUrl(ref.imageUrl, p, maxBytes) };
  try {
    const env = ctx.deps.config.env;
    const fetched = await fetchImage(ref.imageUrl, { allowPrivate: env.IMAGE_URL_ALLOW_PRIVATE, maxBytes, timeoutMs: env.IMAGE_URL_TIMEOUT_MS,
      dir: ctx.deps.uploadDir,
      signal: ctx.signal,
      ...(env.IMAGE_URL_CA_FILE ? { caFile: env.IMAGE_URL_CA_FILE } : {}),
    });
    ctx.temps.add(fetched.path);
    return { field, originalName: fetched.filename, size: fetched.bytes, path: fetched.path };
  } catch (err) {
    throw err instanceof ImageFetchError ? imageUrlError(err, p) : err;
  }
}

function imageUrlError(err: ImageFetchError, param: string): ServiceError {
  switch (err.reason) {
    case 'forbidden':
      return invalidRequest(`${param} is not allowed: ${err.message}`, param, 'image_url_forbidden');
    case 'unreachable':
      return invalidRequest(`${param} could not be fetched: ${err.message}`, param, 'image_url_unreachable');
    case 'too_large':
      return tooLarge(`${param}: ${err.message}`, param);
    case 'content_type':
      return invalidRequest(`${param}: ${err.message}`, param, 'invalid_image_content_type');
    default:
      return invalidRequest(`${param} must be an https:// or data: URL: ${err.message}`, param, 'invalid_value');
  }
}

/** `data:image/png;base64,...`: the size is checked before decoding. */
function decodeDataUrl(url: string, param: string, maxBytes: number): { originalName: string; size: number; buffer: Buffer } {
  const comma = url.indexOf(',');
  const header = comma < 0 ? '' : url.slice(5, comma).toLowerCase();
  const [mediaType = '', ...attrs] = header.split(';').map((s) => s.trim());
  if (comma < 0 || !attrs.includes('base64')) throw invalidRequest(`${param} must be a base64 data URL: data:image/png;base64,...`, param, 'invalid_value');
  const format = IMAGE_MEDIA_TYPES[mediaType];
  if (!format) throw invalidRequest(`${param} has media type '${mediaType || 'none'}'; expected image/png, image/jpeg or image/webp`, param, 'invalid_image_content_type');
  const encoded = url.length - comma - 1;
  if (Math.floor((encoded * 3) / 4) - 2 > maxBytes) throw tooLarge(`${param}: the image is larger than ${maxBytes} bytes, the most accepted`, param);
  const buffer = Buffer.from(url.slice(comma + 1), 'base64');
  if (buffer.length > maxBytes) throw tooLarge(`${param}: the image is ${buffer.length} bytes; at most ${maxBytes} are accepted`, param);
  if (buffer.length === 0) throw invalidRequest(`${param} holds no bytes`, param, 'invalid_value');
  return { originalName: `image.${format === 'jpeg' ? 'jpg' : format}`, size: buffer.length, buffer };
}

/**
 * submitEdit names the inputs as multipart does (`image[0]`, `image`); the JSON form's client
 * sent `images`, so its errors say `images[0]`, `images` (and `.file_id` for a file deleted meanwhile).
 */
export function jsonFormError(err: unknown): unknown {
  if (!(err instanceof ServiceError) || !err.param) return err;
  const m = /^(?:image(\[\d+\])?|mask)$/.exec(err.param);
  if (!m) return err;
  const param = `${err.param === 'mask' ? 'mask' : `images${m[1] ?? ''}`}${err.code === 'file_not_found' ? '.file_id' : ''}`;
  return new ServiceError(err.status, err.type, err.message, { param, code: err.code });
}
