export * from './types';
export { createLocalInpaintProvider } from './local/local-provider';
export { createOpenAIProvider, createAzureOpenAIProvider } from './openai/openai-provider';
export type { OpenAIProviderConfig, AzureOpenAIProviderConfig } from './openai/openai-provider';
export { buildProviders } from './registry';
