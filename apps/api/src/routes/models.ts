import { Router } from 'express';
import { type ModelCapabilities, type ModelRoute, resolveModel } from '@image-edits/core';
import type { ApiDeps } from '../deps';

/** GET /v1/models in OpenAI's list shape, with what each model accepts. */
export function modelsRouter(deps: ApiDeps): Router {
  const router = Router();
  const created = Math.floor(Date.now() / 1000);
  const view = (r: ModelRoute) => ({
    id: r.id,
    object: 'model',
    created,
    owned_by: r.targets[0]!.provider,
    providers: r.targets.map((t) => t.provider),
    capabilities: capabilitiesView(r.capabilities),
    pricing: r.targets[0]!.price ?? r.price,
  });
  // `provider/model` ids work too but are not listed: `providers` names what each model can pin
  router.get('/v1/models', (_req, res) => {
    res.json({ object: 'list', data: [...deps.routes.values()].filter((r) => !r.aliasOf).map(view) });
  });
  router.get('/v1/models/*id', (req, res) => {
    const id = ([] as string[]).concat((req.params as { id: string | string[] }).id).join('/');
    res.json(view(resolveModel(deps.routes, id)));
  });
  return router;
}

/** What a client needs to build a valid request, in the API's snake_case. */
function capabilitiesView(c: ModelCapabilities): Record<string, unknown> {
  return {
    max_images: c.maxImages,
    image_formats: c.imageFormats,
    max_image_bytes: c.maxImageBytes,
    max_mask_bytes: c.maxMaskBytes,
    max_prompt_chars: c.maxPromptChars,
    sizes: c.sizes,
    // `auto`: the output keeps the (first) input's size, or the model picks one
    default_size: c.defaultSize,
    response_formats: ['url', 'b64_json'],
    default_response_format: c.defaultResponseFormat,
    requires_square: c.requiresSquare,
    mask: c.acceptsMask,
    mask_or_transparency_required: c.needsTransparencyWithoutMask,
    search_prompt_required: c.needsSearchPrompt,
    qualities: c.qualities,
    backgrounds: c.backgrounds,
    output_formats: c.outputFormats,
    output_compression: c.supportsOutputCompression,
    input_fidelities: c.inputFidelities,
    moderations: c.moderations,
    safety_identifier: c.acceptsSafetyIdentifier,
    // `stream: true` is taken (with `partial_images` where the provider streams them)
    stream: c.streams,
  };
}
