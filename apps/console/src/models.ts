import { api, type List, type Model } from './api';

let cache: Promise<Model[]> | undefined;

/** GET /v1/models, once per sign-in. */
export function loadModels(): Promise<Model[]> {
  cache ??= api<List<Model>>('/v1/models').then((l) => l.data);
  cache.catch(() => {
    cache = undefined;
  });
  return cache;
}

export function forgetModels(): void {
  cache = undefined;
}

/** The model the form starts with: the last one used in this tab, else local-inpaint, else the first. */
export function defaultModel(models: Model[], last: string | null): Model | undefined {
  return models.find((m) => m.id === last) ?? models.find((m) => m.id === 'local-inpaint') ?? models[0];
}
