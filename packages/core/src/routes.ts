import { ConfigError, type ServiceConfig } from './config';
import { notFound } from './errors';
import type { ModelRoute, ProviderId, RouteTarget } from './models';

/** Providers with credentials in the environment; `local` needs none. */
export function configuredProviders(cfg: ServiceConfig): Set<ProviderId> {
  const env = cfg.env;
  const on = new Set<ProviderId>(['local']);
  if (env.OPENAI_API_KEY) on.add('openai');
  if (env.AZURE_OPENAI_ENDPOINT && env.AZURE_OPENAI_API_KEY) on.add('azure-openai');
  if (env.STABILITY_API_KEY) on.add('stability');
  if (env.GEMINI_API_KEY) on.add('gemini');
  if (env.FAL_KEY) on.add('fal');
  if (env.REPLICATE_API_TOKEN) on.add('replicate');
  return on;
}

/**
 * Which public model ids are served, and by whom: every registry model with at least one target
 * whose provider is configured (Azure targets also need a deployment). A model's targets keep the
 * registry's order, which is the fallback order. `provider/model` ids (Eden AI's form) pin one
 * provider: `azure-openai/gpt-image-1` runs only on Azure.
 */
export function buildModelRoutes(cfg: ServiceConfig): Map<string, ModelRoute> {
  const enabled = configuredProviders(cfg);
  for (const model of Object.keys(cfg.azureDeployments)) {
    const entry = cfg.registry.models.get(model);
    if (!entry?.targets.some((t) => t.provider === 'azure-openai')) {
      throw new ConfigError(`invalid configuration:\n  AZURE_OPENAI_DEPLOYMENTS: model '${model}' has no azure-openai target in the model registry; known: ${azureModels(cfg).join(', ')}`);
    }
  }
  const routes = new Map<string, ModelRoute>();
  const aliases = new Map<string, ModelRoute>();
  for (const entry of cfg.registry.models.values()) {
    const targets: RouteTarget[] = [];
    for (const t of entry.targets) {
      if (!enabled.has(t.provider)) continue;
      const upstream = t.provider === 'azure-openai' ? (t.deployment ?? cfg.azureDeployments[t.model]) : t.model;
      if (!upstream) continue;
      targets.push({ provider: t.provider, upstream, ...(t.price ? { price: t.price } : {}) });
    }
    if (targets.length === 0) continue;
    routes.set(entry.id, { id: entry.id, targets, capabilities: entry.capabilities, price: entry.price });
    for (const t of targets) {
      const alias = `${t.provider}/${entry.id}`;
      if (!aliases.has(alias)) aliases.set(alias, { id: alias, aliasOf: entry.id, targets: [t], capabilities: entry.capabilities, price: entry.price });
    }
  }
  for (const [id, route] of aliases) if (!routes.has(id)) routes.set(id, route);
  return routes;
}

function azureModels(cfg: ServiceConfig): string[] {
  return [...cfg.registry.models.values()].filter((m) => m.targets.some((t) => t.provider === 'azure-openai')).map((m) => m.id);
}

export function resolveModel(routes: Map<string, ModelRoute>, model: string): ModelRoute {
  const route = routes.get(model);
  if (!route) {
    throw notFound(`The model '${model}' does not exist or is not configured here; GET /v1/models lists the available models`, 'model', 'model_not_found');
  }
  return route;
}

/** The largest upload any configured model accepts, and the most files: limits for the multipart parser. */
export function uploadLimits(routes: Map<string, ModelRoute>): { maxFileBytes: number; maxFiles: number } {
  let maxFileBytes = 0;
  let maxFiles = 0;
  for (const r of routes.values()) {
    maxFileBytes = Math.max(maxFileBytes, r.capabilities.maxImageBytes, r.capabilities.maxMaskBytes);
    maxFiles = Math.max(maxFiles, r.capabilities.maxImages + 1);
  }
  return { maxFileBytes, maxFiles };
}
