import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { ConfigError, parseConfig } from './config';
import { buildModelRoutes, uploadLimits } from './routes';

const MB = 1024 * 1024;

describe('model registry', () => {
  it('gives every provider its models, with limits per model', () => {
    const cfg = parseConfig({ OPENAI_API_KEY: 'k', STABILITY_API_KEY: 'k', GEMINI_API_KEY: 'k', FAL_KEY: 'k', REPLICATE_API_TOKEN: 'k' });
    const routes = buildModelRoutes(cfg);
    expect(routes.get('dall-e-2')?.capabilities.maxImageBytes).toBe(4 * MB);
    expect(routes.get('gpt-image-1')?.capabilities.maxImageBytes).toBe(50 * MB);
    expect(routes.get('gpt-image-1-mini')?.capabilities.inputFidelities).toEqual([]);
    expect(routes.get('stable-image-inpaint')?.targets).toEqual([{ provider: 'stability', upstream: 'inpaint' }]);
    expect(routes.get('stable-image-search-and-replace')?.capabilities).toMatchObject({ acceptsMask: false, needsSearchPrompt: true });
    expect(routes.get('gemini-2.5-flash-image')?.targets[0]?.provider).toBe('gemini');
    expect(routes.get('flux-fill-pro')?.targets.map((t) => t.provider)).toEqual(['fal', 'replicate']);
    expect(routes.get('replicate/flux-fill-pro')?.targets).toEqual([{ provider: 'replicate', upstream: 'black-forest-labs/flux-fill-pro' }]);
    expect(uploadLimits(routes)).toEqual({ maxFileBytes: 50 * MB, maxFiles: 17 });
    // only configured providers serve: without FAL_KEY the fallback route is Replicate alone
    const noFal = buildModelRoutes(parseConfig({ REPLICATE_API_TOKEN: 'k' }));
    expect(noFal.get('flux-fill-pro')?.targets.map((t) => t.provider)).toEqual(['replicate']);
    expect(noFal.has('fal/flux-fill-pro')).toBe(false);
  });

  it('takes a file and inline JSON over the built-in registry', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'registry-'));
    const file = path.join(dir, 'models.json');
    writeFileSync(
      file,
      JSON.stringify({
        providers: { openai: { concurrency: 3, rateLimit: { max: 5, durationMs: 1000 } } },
        models: {
          'house-style': { family: 'gpt-image', capabilities: { maxImages: 2 }, targets: [{ provider: 'openai', model: 'gpt-image-1' }], price: { perImage: 0.1 } },
          'dall-e-2': null,
        },
      }),
    );
    const cfg = parseConfig({ OPENAI_API_KEY: 'k', JOB_ATTEMPTS: '4', MODEL_REGISTRY_FILE: file, MODEL_REGISTRY: JSON.stringify({ providers: { openai: { attempts: 2 } } }) });
    const routes = buildModelRoutes(cfg);
    expect(routes.get('house-style')?.capabilities).toMatchObject({ maxImages: 2, maxImageBytes: 50 * MB });
    expect(routes.has('dall-e-2')).toBe(false);
    expect(cfg.registry.providers.openai).toMatchObject({ concurrency: 3, attempts: 2, rateLimit: { max: 5, durationMs: 1000 } });
    expect(cfg.registry.providers.stability.attempts).toBe(4);
  });

  it('refuses a bad registry at startup, naming the field', () => {
    expect(() => parseConfig({ MODEL_REGISTRY: '{"models": {"x": {"family": "gpt-image", "targets": [], "price": {"perImage": 1}}}}' })).toThrow(/models\.x\.targets/);
    expect(() => parseConfig({ MODEL_REGISTRY: '{"models": {"x": {"family": "nope", "targets": [{"provider": "openai", "model": "m"}], "price": {}}}}' })).toThrow(ConfigError);
    expect(() => parseConfig({ MODEL_REGISTRY: '{"providers": {"openai": {"concurency": 2}}}' })).toThrow(/concurency/);
    expect(() => parseConfig({ MODEL_REGISTRY: 'not json' })).toThrow(/MODEL_REGISTRY: not valid JSON/);
    expect(() => parseConfig({ MODEL_REGISTRY_FILE: '/nonexistent/models.json' })).toThrow(/cannot read/);
  });
});
