import type { ServiceConfig } from '@image-edits/core';
import { createLocalInpaintProvider } from './local/local-provider';
import { createAzureOpenAIProvider, createOpenAIProvider } from './openai/openai-provider';
import type { EditProvider } from './types';

/** The provider instances a worker can call, keyed by provider id, from configuration. */
export function buildProviders(cfg: ServiceConfig): Map<string, EditProvider> {
  const env = cfg.env;
  const providers = new Map<string, EditProvider>();
  providers.set('local', createLocalInpaintProvider());
  if (env.OPENAI_API_KEY) {
    providers.set('openai', createOpenAIProvider({ apiKey: env.OPENAI_API_KEY, ...(env.OPENAI_BASE_URL ? { baseURL: env.OPENAI_BASE_URL } : {}), timeoutMs: env.PROVIDER_TIMEOUT_MS }));
  }
  if (env.AZURE_OPENAI_ENDPOINT && env.AZURE_OPENAI_API_KEY) {
    providers.set(
      'azure-openai',
      createAzureOpenAIProvider({
        endpoint: env.AZURE_OPENAI_ENDPOINT,
        apiKey: env.AZURE_OPENAI_API_KEY,
        apiVersion: env.OPENAI_API_VERSION,
        timeoutMs: env.PROVIDER_TIMEOUT_MS,
        // deployment names are free-form: tell the adapter which ones serve dall-e-2 (they get response_format)
        dallEDeployments: Object.entries(cfg.azureDeployments).filter(([model]) => model.startsWith('dall-e')).map(([, deployment]) => deployment),
      }),
    );
  }
  return providers;
}
