import type { ProviderId, ServiceConfig } from '@image-edits/core';
import { createLocalInpaintProvider } from './local/local-provider';
import { createAzureOpenAIProvider, createOpenAIProvider } from './openai/openai-provider';
import { createFalProvider } from './fal/fal-provider';
import { createGeminiProvider } from './gemini/gemini-provider';
import { createReplicateProvider } from './replicate/replicate-provider';
import { createStabilityProvider } from './stability/stability-provider';
import type { EditProvider } from './types';

/** The provider instances a worker can call, keyed by provider id: those with credentials configured. */
export function buildProviders(cfg: ServiceConfig): Map<ProviderId, EditProvider> {
  const env = cfg.env;
  const timeoutMs = (p: ProviderId) => cfg.registry.providers[p].timeoutMs;
  const providers = new Map<ProviderId, EditProvider>();
  providers.set('local', createLocalInpaintProvider());
  if (env.OPENAI_API_KEY) {
    providers.set('openai', createOpenAIProvider({ apiKey: env.OPENAI_API_KEY, ...(env.OPENAI_BASE_URL ? { baseURL: env.OPENAI_BASE_URL } : {}), timeoutMs: timeoutMs('openai') }));
  }
  if (env.AZURE_OPENAI_ENDPOINT && env.AZURE_OPENAI_API_KEY) {
    providers.set(
      'azure-openai',
      createAzureOpenAIProvider({
        endpoint: env.AZURE_OPENAI_ENDPOINT,
        apiKey: env.AZURE_OPENAI_API_KEY,
        apiVersion: env.OPENAI_API_VERSION,
        timeoutMs: timeoutMs('azure-openai'),
        // deployment names are free-form: tell the adapter which ones serve dall-e-2 (they get response_format)
        dallEDeployments: Object.entries(cfg.azureDeployments).filter(([model]) => model.startsWith('dall-e')).map(([, deployment]) => deployment),
      }),
    );
  }
  if (env.STABILITY_API_KEY) {
    providers.set('stability', createStabilityProvider({ apiKey: env.STABILITY_API_KEY, ...(env.STABILITY_BASE_URL ? { baseURL: env.STABILITY_BASE_URL } : {}), timeoutMs: timeoutMs('stability') }));
  }
  if (env.GEMINI_API_KEY) {
    providers.set('gemini', createGeminiProvider({ apiKey: env.GEMINI_API_KEY, ...(env.GEMINI_BASE_URL ? { baseURL: env.GEMINI_BASE_URL } : {}), timeoutMs: timeoutMs('gemini') }));
  }
  if (env.FAL_KEY) {
    providers.set('fal', createFalProvider({ apiKey: env.FAL_KEY, ...(env.FAL_BASE_URL ? { baseURL: env.FAL_BASE_URL } : {}), timeoutMs: timeoutMs('fal') }));
  }
  if (env.REPLICATE_API_TOKEN) {
    providers.set(
      'replicate',
      createReplicateProvider({ apiKey: env.REPLICATE_API_TOKEN, ...(env.REPLICATE_BASE_URL ? { baseURL: env.REPLICATE_BASE_URL } : {}), timeoutMs: timeoutMs('replicate') }),
    );
  }
  return providers;
}
