/**
 * The provider boundary. Adapters translate this to their upstream's wire format; no SDK type
 * crosses it. Images travel as bytes: the worker reads them from S3 for every attempt, so a retry
 * always re-sends the full upload.
 */
export type ImageFormat = 'png' | 'jpeg' | 'webp';

export interface InputImage {
  data: Buffer;
  /** real format, as detected from the bytes */
  format: ImageFormat;
  filename: string;
  width: number;
  height: number;
}

export interface ProviderEditRequest {
  /** the upstream model name (or Azure deployment's model) */
  model: string;
  prompt: string;
  /** the first image is the canvas */
  images: InputImage[];
  mask?: InputImage;
  n: number;
  /** as the client asked (e.g. "1024x1024", "auto"); undefined: the provider's default */
  size?: string;
  quality?: string;
  background?: string;
  outputFormat?: ImageFormat;
  outputCompression?: number;
  inputFidelity?: string;
  user?: string;
  /** GPT image models: moderation strictness ('auto' | 'low') */
  moderation?: string;
  /** GPT image models: the end user's stable id for OpenAI's abuse monitoring */
  safetyIdentifier?: string;
  /** Stability search-and-replace: what to find (the prompt says what to put there) */
  searchPrompt?: string;
  /** the client streams: partial images wanted (0 to 3), for providers that stream them (see ProviderCallOptions.onPartial) */
  partialImages?: number;
}

export interface OutputImage {
  data: Buffer;
  /** `data` as the provider sent it, when that was canonical base64 (see canonicalBase64): handed to a waiting client as is */
  base64?: string;
  format: ImageFormat;
  /** the provider's own revised prompt, when it gives one */
  revisedPrompt?: string;
}

export interface ProviderUsage {
  inputTokens?: number;
  outputTokens?: number;
  totalTokens?: number;
  /** input_tokens_details */
  imageTokens?: number;
  textTokens?: number;
  /** output_tokens_details as the provider reports them (e.g. image_tokens, text_tokens) */
  outputTokensDetails?: Record<string, number>;
}

export interface ProviderEditResult {
  images: OutputImage[];
  usage?: ProviderUsage;
}

export interface ProviderCallOptions {
  signal?: AbortSignal;
  /** the provider's request ids that an earlier attempt of this job recorded: resumed (polled for their result) instead of submitted again */
  resume?: string[];
  /** called, and awaited, with every request id of this call so far as soon as a new one exists and before waiting on it; the worker records them on the job. If it throws, the adapter lets the error propagate (without cancelling the upstream request). */
  onSubmitted?: (ids: string[]) => Promise<void>;
  /** a partial image as the provider streams it (request.partialImages > 0); never awaited by the adapter's stream */
  onPartial?: (partial: PartialImage) => void;
}

export interface PartialImage {
  /** 0-based, in the order the provider sent them */
  index: number;
  data: Buffer;
  format: ImageFormat;
}

export interface EditProvider {
  /** stable provider id: "local", "openai", "azure-openai", ... */
  readonly id: string;
  /** adapters whose upstream cannot be resumed (all but fal and replicate) use only `signal` */
  edit(request: ProviderEditRequest, options?: ProviderCallOptions): Promise<ProviderEditResult>;
}

/**
 * A failure reported by (or on the way to) a provider. `retryable` decides whether the worker tries
 * again; `code` ends up in the job's OpenAI-shaped error.
 */
export class ProviderError extends Error {
  readonly provider: string;
  readonly status: number | null;
  readonly code: string;
  readonly retryable: boolean;
  readonly retryAfterMs: number | null;
  /** the request parameter the upstream named as the cause (OpenAI's `error.param`), kept for the client */
  readonly param: string | null;

  constructor(
    provider: string,
    message: string,
    opts: { status?: number | null; code: string; retryable: boolean; retryAfterMs?: number | null; param?: string | null },
  ) {
    super(message);
    this.name = 'ProviderError';
    this.provider = provider;
    this.status = opts.status ?? null;
    this.code = opts.code;
    this.retryable = opts.retryable;
    this.retryAfterMs = opts.retryAfterMs ?? null;
    this.param = opts.param ?? null;
  }
}
