/**
 * What each model family accepts (reference.md §1). Validation in the API reads these, so limits
 * are right per model: 4 MB PNG for dall-e-2, 50 MB png/jpeg/webp for GPT image models.
 */
export type ModelFamily = 'dall-e-2' | 'gpt-image' | 'local';
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
  /** without a mask, the image itself must have transparent pixels */
  needsTransparencyWithoutMask: boolean;
  qualities: string[];
  backgrounds: string[];
  outputFormats: ImageFormat[];
  supportsOutputCompression: boolean;
  inputFidelities: string[];
}

const MB = 1024 * 1024;

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
  needsTransparencyWithoutMask: true,
  qualities: ['standard'],
  backgrounds: [],
  outputFormats: ['png'],
  supportsOutputCompression: false,
  inputFidelities: [],
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
  needsTransparencyWithoutMask: false,
  qualities: ['low', 'medium', 'high', 'auto'],
  backgrounds: ['transparent', 'opaque', 'auto'],
  outputFormats: ['png', 'jpeg', 'webp'],
  supportsOutputCompression: true,
  inputFidelities: ['high', 'low'],
};

/** The built-in offline model takes dall-e-2's inputs and honours the output options it can. */
const LOCAL_INPAINT: ModelCapabilities = {
  ...DALL_E_2,
  family: 'local',
  qualities: ['standard', 'auto'],
  backgrounds: ['transparent', 'opaque', 'auto'],
  outputFormats: ['png', 'jpeg', 'webp'],
  supportsOutputCompression: true,
};

/** Upstream model names this service knows, with what they accept. */
export const KNOWN_MODELS: Record<string, ModelCapabilities> = {
  'local-inpaint': LOCAL_INPAINT,
  'dall-e-2': DALL_E_2,
  'gpt-image-1': GPT_IMAGE,
  'gpt-image-1-mini': { ...GPT_IMAGE, inputFidelities: [] },
  'gpt-image-1.5': GPT_IMAGE,
};

export type ProviderId = 'local' | 'openai' | 'azure-openai';

export interface ModelRoute {
  /** public id clients send as `model` */
  id: string;
  provider: ProviderId;
  /** model name (OpenAI) or deployment name (Azure) upstream */
  upstream: string;
  capabilities: ModelCapabilities;
}
