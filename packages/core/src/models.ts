/**
 * What each model family accepts (reference.md §1, §3). The registry (config/models.json) names a
 * family per model and may override any field; validation in the API reads the result, so limits
 * are right per model: 4 MB PNG for dall-e-2, 50 MB png/jpeg/webp for GPT image models.
 */
export const MODEL_FAMILIES = ['dall-e-2', 'gpt-image', 'local', 'stability', 'gemini', 'flux'] as const;
export type ModelFamily = (typeof MODEL_FAMILIES)[number];
export type ImageFormat = 'png' | 'jpeg' | 'webp';

export interface ModelCapabilities {
  family: ModelFamily;
  maxImages: number;
  imageFormats: ImageFormat[];
  maxImageBytes: number;
  maxMaskBytes: number;
  maxPromptChars: number;
  sizes: string[];
  defaultSize: string;
  /** the input image must be square */
  requiresSquare: boolean;
  /** a mask may be sent (false: sending one is a 400, never silently dropped) */
  acceptsMask: boolean;
  /** without a mask, the image itself must have transparent pixels */
  needsTransparencyWithoutMask: boolean;
  /** Stability search-and-replace: `search_prompt` is required */
  needsSearchPrompt: boolean;
  qualities: string[];
  backgrounds: string[];
  outputFormats: ImageFormat[];
  supportsOutputCompression: boolean;
  inputFidelities: string[];
  /** `stream: true` is taken (partial images where the provider streams them; else the completed event alone) */
  streams: boolean;
  /** what `response_format` is when the request sends none (OpenAI: `url` for dall-e-2, `b64_json` for GPT image models) */
  defaultResponseFormat: ResponseFormat;
  /** values of `moderation` the model takes and passes upstream (empty: sending it is a 400) */
  moderations: string[];
  /** `safety_identifier` is passed upstream (false: sending it is a 400) */
  acceptsSafetyIdentifier: boolean;
}

export type ResponseFormat = 'url' | 'b64_json';

const MB = 1024 * 1024;
/** Providers that keep the input's size get their output resized to these (the adapter does it). */
const RESIZABLE_SIZES = ['auto', '256x256', '512x512', '1024x1024', '1536x1024', '1024x1536'];

const DALL_E_2: ModelCapabilities = {
  family: 'dall-e-2',
  maxImages: 1,
  imageFormats: ['png'],
  maxImageBytes: 4 * MB,
  maxMaskBytes: 4 * MB,
  maxPromptChars: 1000,
  sizes: ['256x256', '512x512', '1024x1024'],
  defaultSize: '1024x1024',
  requiresSquare: true,
  acceptsMask: true,
  needsTransparencyWithoutMask: true,
  needsSearchPrompt: false,
  qualities: ['standard'],
  backgrounds: [],
  outputFormats: ['png'],
  supportsOutputCompression: false,
  inputFidelities: [],
  streams: false,
  defaultResponseFormat: 'url',
  moderations: [],
  acceptsSafetyIdentifier: false,
};

const GPT_IMAGE: ModelCapabilities = {
  family: 'gpt-image',
  maxImages: 16,
  imageFormats: ['png', 'jpeg', 'webp'],
  maxImageBytes: 50 * MB,
  maxMaskBytes: 4 * MB,
  maxPromptChars: 32000,
  sizes: ['1024x1024', '1536x1024', '1024x1536', 'auto'],
  defaultSize: 'auto',
  requiresSquare: false,
  acceptsMask: true,
  needsTransparencyWithoutMask: false,
  needsSearchPrompt: false,
  qualities: ['low', 'medium', 'high', 'auto'],
  backgrounds: ['transparent', 'opaque', 'auto'],
  outputFormats: ['png', 'jpeg', 'webp'],
  supportsOutputCompression: true,
  inputFidelities: ['high', 'low'],
  streams: true,
  // GPT image models answer base64 upstream, and some clients (the AI SDK) read only that
  defaultResponseFormat: 'b64_json',
  moderations: ['auto', 'low'],
  acceptsSafetyIdentifier: true,
};

/**
 * The built-in offline model takes dall-e-2's inputs and honours the output options it can. It
 * answers `b64_json` by default, as GPT image models do (so every client works with no keys), and
 * keeps the input's size unless asked for another (`auto`, its default).
 */
const LOCAL_INPAINT: ModelCapabilities = {
  ...DALL_E_2,
  family: 'local',
  sizes: ['auto', '256x256', '512x512', '1024x1024'],
  defaultSize: 'auto',
  defaultResponseFormat: 'b64_json',
  qualities: ['standard', 'auto'],
  backgrounds: ['transparent', 'opaque', 'auto'],
  outputFormats: ['png', 'jpeg', 'webp'],
  supportsOutputCompression: true,
  streams: true,
};

/** Stability's Stable Image edit: one image, mask (or its alpha) where to edit, output keeps the input size. */
const STABILITY: ModelCapabilities = {
  family: 'stability',
  maxImages: 1,
  imageFormats: ['png', 'jpeg', 'webp'],
  // Stability refuses requests over 10 MiB; the mask it gets is our small grayscale conversion
  maxImageBytes: 9 * MB,
  maxMaskBytes: 4 * MB,
  maxPromptChars: 10000,
  sizes: RESIZABLE_SIZES,
  defaultSize: 'auto',
  requiresSquare: false,
  acceptsMask: true,
  needsTransparencyWithoutMask: true,
  needsSearchPrompt: false,
  qualities: ['auto'],
  backgrounds: ['auto'],
  outputFormats: ['png', 'jpeg', 'webp'],
  supportsOutputCompression: false,
  inputFidelities: [],
  defaultResponseFormat: 'url',
  moderations: [],
  acceptsSafetyIdentifier: false,
  streams: false,
};

/**
 * Gemini image models: reference images inline, no mask parameter (the adapter sends a highlighted
 * copy of the canvas with an instruction), output re-encoded to the asked format.
 */
const GEMINI: ModelCapabilities = {
  family: 'gemini',
  maxImages: 3,
  imageFormats: ['png', 'jpeg', 'webp'],
  maxImageBytes: 20 * MB,
  maxMaskBytes: 4 * MB,
  maxPromptChars: 32000,
  sizes: RESIZABLE_SIZES,
  defaultSize: 'auto',
  requiresSquare: false,
  acceptsMask: true,
  needsTransparencyWithoutMask: false,
  needsSearchPrompt: false,
  qualities: ['auto'],
  backgrounds: ['auto', 'opaque'],
  outputFormats: ['png', 'jpeg', 'webp'],
  supportsOutputCompression: true,
  inputFidelities: [],
  defaultResponseFormat: 'url',
  moderations: [],
  acceptsSafetyIdentifier: false,
  streams: false,
};

/** FLUX Fill (fal, Replicate): one image, a mask (or its alpha) is required, jpeg or png out. */
const FLUX: ModelCapabilities = {
  family: 'flux',
  maxImages: 1,
  imageFormats: ['png', 'jpeg', 'webp'],
  // sent inline as data URIs (Replicate's inline limit is 10 MB for image and mask together)
  maxImageBytes: 9 * MB,
  maxMaskBytes: 4 * MB,
  maxPromptChars: 10000,
  sizes: RESIZABLE_SIZES,
  defaultSize: 'auto',
  requiresSquare: false,
  acceptsMask: true,
  needsTransparencyWithoutMask: true,
  needsSearchPrompt: false,
  qualities: ['auto'],
  backgrounds: ['auto'],
  outputFormats: ['png', 'jpeg'],
  supportsOutputCompression: false,
  inputFidelities: [],
  defaultResponseFormat: 'url',
  moderations: [],
  acceptsSafetyIdentifier: false,
  streams: false,
};

/** The capabilities each family starts from; a registry entry may override any field. */
export const FAMILY_CAPABILITIES: Record<ModelFamily, ModelCapabilities> = {
  'dall-e-2': DALL_E_2,
  'gpt-image': GPT_IMAGE,
  local: LOCAL_INPAINT,
  stability: STABILITY,
  gemini: GEMINI,
  flux: FLUX,
};

export const PROVIDER_IDS = ['local', 'openai', 'azure-openai', 'stability', 'gemini', 'fal', 'replicate'] as const;
export type ProviderId = (typeof PROVIDER_IDS)[number];

/** USD prices of a model (config/models.json); see pricing.ts for how a job's cost is computed. */
export interface ModelPrice {
  /** flat price per output image */
  perImage?: number | undefined;
  /** per output image by its size ("1024x1024") */
  bySize?: Record<string, number> | undefined;
  /** per output image by quality, then size */
  byQuality?: Record<string, Record<string, number>> | undefined;
  /** per started megapixel of each output image */
  perMegapixel?: number | undefined;
  /** per million tokens, used when the provider reports token usage */
  tokens?: { inputText: number; inputImage: number; output: number } | undefined;
}

/** One place a model can run: which provider, and its upstream model (or Azure deployment). */
export interface RouteTarget {
  provider: ProviderId;
  upstream: string;
  /** what this target costs, when it differs from the model's price */
  price?: ModelPrice | undefined;
}

export interface ModelRoute {
  /** public id clients send as `model` */
  id: string;
  /** set on `provider/model` ids: the model they pin to one provider */
  aliasOf?: string | undefined;
  /** tried in order: the next one takes over when one's retries are spent on retryable errors */
  targets: RouteTarget[];
  capabilities: ModelCapabilities;
  price: ModelPrice;
}
