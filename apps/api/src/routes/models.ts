import { Router } from 'express';
import type { ApiDeps } from '../deps';

/** GET /v1/models in OpenAI's list shape, with what each model accepts. */
export function modelsRouter(deps: ApiDeps): Router {
  const router = Router();
  const created = Math.floor(Date.now() / 1000);
  router.get('/v1/models', (_req, res) => {
    const data = [...deps.routes.values()].map((r) => ({
      id: r.id,
      object: 'model',
      created,
      owned_by: r.provider,
      capabilities: {
        max_images: r.capabilities.maxImages,
        image_formats: r.capabilities.imageFormats,
        max_image_bytes: r.capabilities.maxImageBytes,
        max_prompt_chars: r.capabilities.maxPromptChars,
        sizes: r.capabilities.sizes,
        mask: true,
      },
    }));
    res.json({ object: 'list', data });
  });
  return router;
}
