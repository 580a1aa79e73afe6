/**
 * The console talks to the public API only, with the key the user pasted (kept in sessionStorage:
 * it goes when the tab closes). Errors come back in OpenAI's shape and are thrown as ApiError.
 */

const KEY_STORAGE = 'image-edits.api-key';

export function storedKey(): string | null {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

export function storeKey(key: string | null): void {
  if (key === null) sessionStorage.removeItem(KEY_STORAGE);
  else sessionStorage.setItem(KEY_STORAGE, key);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly requestId: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The route does not exist on this server (yet): 404 `unknown_url`, or 405. */
  get routeMissing(): boolean {
    return this.status === 405 || (this.status === 404 && (this.code === 'unknown_url' || this.code === null));
  }

  /** One line for an error box. */
  describe(): string {
    const where = this.param ? ` (${this.param})` : '';
    return `${this.message}${where}`;
  }
}

/** The error of a non-2xx answer, from OpenAI's `{error: {message, code, param}}` when it has one. */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  const requestId = res.headers.get('x-request-id');
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: the status says enough
  }
  const e = (body as { error?: { message?: unknown; code?: unknown; param?: unknown } } | null)?.error;
  if (e && typeof e.message === 'string') {
    return new ApiError(res.status, e.message, typeof e.code === 'string' ? e.code : null, typeof e.param === 'string' ? e.param : null, requestId);
  }
  return new ApiError(res.status, `${res.status} ${res.statusText || 'error'}`.trim(), null, null, requestId);
}

export interface RequestOptions {
  method?: string;
  query?: Record<string, string | number | undefined | null>;
  json?: unknown;
  form?: FormData;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** `fetch` of an API path with the key; the answer as it came (for streams and downloads). */
export async function apiFetch(path: string, opts: RequestOptions = {}): Promise<Response> {
  const key = storedKey();
  if (!key) throw new ApiError(401, 'Not signed in', 'no_key');
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  const headers: Record<string, string> = { authorization: `Bearer ${key}`, ...opts.headers };
  let body: BodyInit | undefined;
  if (opts.form) body = opts.form;
  else if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const res = await fetch(url, { method: opts.method ?? (body ? 'POST' : 'GET'), headers, body, signal: opts.signal });
  if (res.status === 401) onUnauthorized?.();
  if (!res.ok) throw await errorFromResponse(res);
  return res;
}

/** `apiFetch` and the JSON body. */
export async function api<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await apiFetch(path, opts);
  return (await res.json()) as T;
}

let onUnauthorized: (() => void) | undefined;
/** Called when the API refuses the key (401): the app signs out. */
export function setUnauthorizedHandler(fn: () => void): void {
  onUnauthorized = fn;
}

export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof DOMException && err.name === 'AbortError') return new ApiError(0, 'Stopped', 'aborted');
  return new ApiError(0, err instanceof Error ? `Network error: ${err.message}` : 'Network error', 'network_error');
}

// ---- shapes of what the API returns (the fields the console reads) ----

export interface ModelCapabilities {
  max_images: number;
  image_formats: string[];
  max_image_bytes: number;
  max_mask_bytes: number;
  max_prompt_chars: number;
  sizes: string[];
  default_size: string;
  response_formats: string[];
  default_response_format: string;
  requires_square: boolean;
  mask: boolean;
  mask_or_transparency_required: boolean;
  search_prompt_required: boolean;
  qualities: string[];
  backgrounds: string[];
  output_formats: string[];
  output_compression: boolean;
  input_fidelities: string[];
  moderations: string[];
  safety_identifier: boolean;
  /** absent on servers from before it was listed */
  stream?: boolean;
}

export interface Model {
  id: string;
  object: 'model';
  owned_by: string;
  providers: string[];
  capabilities: ModelCapabilities;
}

export interface List<T> {
  object: 'list';
  data: T[];
  first_id?: string | null;
  last_id?: string | null;
  has_more?: boolean;
}

export type JobStatus = 'queued' | 'in_progress' | 'succeeded' | 'failed' | 'canceled' | 'expired';
export const JOB_STATUSES: JobStatus[] = ['queued', 'in_progress', 'succeeded', 'failed', 'canceled', 'expired'];
export const isFinal = (s: string) => s === 'succeeded' || s === 'failed' || s === 'canceled' || s === 'expired';

export interface ImageDatum {
  url?: string;
  b64_json?: string;
  revised_prompt?: string;
}

export interface Job {
  id: string;
  object: 'image.edit.job';
  status: JobStatus;
  model: string;
  provider: string;
  created_at: number;
  started_at: number | null;
  completed_at: number | null;
  attempts: number;
  queue_position?: number | null;
  result: { created: number; data: ImageDatum[]; background?: string; output_format?: string; quality?: string; size?: string; usage?: Record<string, unknown> } | null;
  error: { message: string; type?: string; param?: string | null; code?: string | null } | null;
  usage: { images: number; input_tokens: number | null; output_tokens: number | null; total_tokens: number | null; cost_usd: number } | null;
  metadata: Record<string, string>;
}

export interface WebhookDelivery {
  id: string;
  webhook_id: string;
  event: string;
  url: string;
  status: string;
  attempts: { attempt: number; status_code: number | null; latency_ms: number | null; error: string | null; created_at: number | null }[];
  last_status_code: number | null;
  last_error: string | null;
  next_attempt_at: number | null;
  created_at: number | null;
}

export interface FileObject {
  id: string;
  object: 'file';
  bytes: number;
  filename: string;
  purpose: string;
  created_at: number;
}

export interface Batch {
  id: string;
  object: 'batch';
  status: string;
  endpoint: string;
  input_file_id: string;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at?: number | null;
  completed_at?: number | null;
  failed_at?: number | null;
  cancelled_at?: number | null;
  expires_at?: number | null;
  request_counts: { total: number; completed: number; failed: number };
  errors?: { data: { code: string; message: string; line?: number | null; param?: string | null }[] } | null;
  metadata?: Record<string, string> | null;
}

export const isBatchFinal = (s: string) => s === 'completed' || s === 'failed' || s === 'expired' || s === 'cancelled';

/** OpenAI's usage/costs page. */
export interface Page<R> {
  object: 'page';
  data: { object: 'bucket'; start_time: number; end_time: number; results: R[] }[];
  has_more: boolean;
  next_page: string | null;
}

export interface ImageUsageResult {
  object?: string;
  images: number;
  num_model_requests: number;
  model?: string | null;
}

export interface CostResult {
  object?: string;
  amount: { value: number; currency: string };
  line_item?: string | null;
}
