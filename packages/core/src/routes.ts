import { ConfigError, type ServiceConfig } from './config';
import { notFound } from './errors';
import { KNOWN_MODELS, type ModelRoute } from './models';

const OPENAI_MODELS = ['dall-e-2', 'gpt-image-1', 'gpt-image-1-mini', 'gpt-image-1.5'];

/**
 * Which public model ids are served, and by whom, given the configured providers. `local-inpaint`
 * is always there; OpenAI models appear with OPENAI_API_KEY; Azure models per configured deployment.
 * `provider/model` ids (Eden AI's form) pick a provider explicitly; a plain id goes to the first
 * configured provider in the order openai, azure-openai.
 */
export function buildModelRoutes(cfg: ServiceConfig): Map<string, ModelRoute> {
  const routes = new Map<string, ModelRoute>();
  const add = (route: ModelRoute) => {
    if (!routes.has(route.id)) routes.set(route.id, route);
  };
  add({ id: 'local-inpaint', provider: 'local', upstream: 'local-inpaint', capabilities: KNOWN_MODELS['local-inpaint']! });
  if (cfg.env.OPENAI_API_KEY) {
    for (const m of OPENAI_MODELS) {
      const caps = KNOWN_MODELS[m]!;
      add({ id: m, provider: 'openai', upstream: m, capabilities: caps });
      add({ id: `openai/${m}`, provider: 'openai', upstream: m, capabilities: caps });
    }
  }
  if (cfg.env.AZURE_OPENAI_ENDPOINT) {
    for (const [model, deployment] of Object.entries(cfg.azureDeployments)) {
      const caps = KNOWN_MODELS[model];
      if (!caps) throw new ConfigError(`invalid configuration:\n  AZURE_OPENAI_DEPLOYMENTS: unknown model '${model}'; known: ${Object.keys(KNOWN_MODELS).join(', ')}`);
      add({ id: model, provider: 'azure-openai', upstream: deployment, capabilities: caps });
      add({ id: `azure-openai/${model}`, provider: 'azure-openai', upstream: deployment, capabilities: caps });
    }
  }
  return routes;
}

export function resolveModel(routes: Map<string, ModelRoute>, model: string): ModelRoute {
  const route = routes.get(model);
  if (!route) {
    throw notFound(`The model '${model}' does not exist or is not configured here; GET /v1/models lists the available models`, 'model', 'model_not_found');
  }
  return route;
}
