import { describe, expect, it } from '@jest/globals';
import { ConfigError, parseConfig } from './config';
import { buildModelRoutes, resolveModel } from './routes';
import { ServiceError } from './errors';

describe('configuration', () => {
  it('has working defaults with no variables at all', () => {
    const cfg = parseConfig({});
    expect(cfg.env.PORT).toBe(8080);
    expect(cfg.env.SIGNED_URL_TTL_SECONDS).toBe(3600);
    expect(cfg.s3.bucket).toBe('image-edits');
    expect([...buildModelRoutes(cfg).keys()]).toEqual(['local-inpaint', 'local/local-inpaint']);
  });
  it('names the variable that is wrong', () => {
    expect(() => parseConfig({ PORT: 'eighty' })).toThrow(/PORT/);
    expect(() => parseConfig({ AZURE_OPENAI_DEPLOYMENTS: 'gpt-image-1' })).toThrow(ConfigError);
    expect(() => parseConfig({ IMAGE_URL_CA_FILE: '/nonexistent/ca.pem' })).toThrow(/IMAGE_URL_CA_FILE/);
    expect(() => parseConfig({ HTTP_HEADERS_TIMEOUT_MS: '5000', HTTP_REQUEST_TIMEOUT_MS: '1000' })).toThrow(/HTTP_HEADERS_TIMEOUT_MS/);
  });
  it('bounds slow clients by default, never a request that has arrived', () => {
    const { env } = parseConfig({});
    expect([env.HTTP_HEADERS_TIMEOUT_MS, env.HTTP_REQUEST_TIMEOUT_MS, env.HTTP_BODY_IDLE_TIMEOUT_MS]).toEqual([20_000, 600_000, 30_000]);
    expect(env.METRICS_TOKEN).toBeUndefined();
  });
  it('routes OpenAI models with a key and Azure models per deployment, with provider/model ids', () => {
    const cfg = parseConfig({ OPENAI_API_KEY: 'sk-x', AZURE_OPENAI_ENDPOINT: 'https://r.openai.azure.com', AZURE_OPENAI_API_KEY: 'k', AZURE_OPENAI_DEPLOYMENTS: 'gpt-image-1=img1' });
    const routes = buildModelRoutes(cfg);
    // the registry's order is the fallback order: OpenAI first, then the Azure deployment
    expect(routes.get('gpt-image-1')?.targets).toEqual([
      { provider: 'openai', upstream: 'gpt-image-1' },
      { provider: 'azure-openai', upstream: 'img1' },
    ]);
    expect(routes.get('azure-openai/gpt-image-1')?.targets).toEqual([{ provider: 'azure-openai', upstream: 'img1' }]);
    expect(routes.get('openai/dall-e-2')?.targets).toEqual([{ provider: 'openai', upstream: 'dall-e-2' }]);
    // dall-e-2 has no Azure deployment: OpenAI only
    expect(routes.get('dall-e-2')?.targets).toHaveLength(1);
    const azureOnly = buildModelRoutes(parseConfig({ AZURE_OPENAI_ENDPOINT: 'https://r.openai.azure.com', AZURE_OPENAI_API_KEY: 'k', AZURE_OPENAI_DEPLOYMENTS: 'dall-e-2=d2' }));
    expect(azureOnly.get('dall-e-2')?.targets).toEqual([{ provider: 'azure-openai', upstream: 'd2' }]);
    expect(azureOnly.has('gpt-image-1')).toBe(false);
  });
  it('answers an unknown model with 404 naming the param', () => {
    const routes = buildModelRoutes(parseConfig({}));
    try {
      resolveModel(routes, 'dall-e-3');
      throw new Error('expected rejection');
    } catch (err) {
      expect(err).toBeInstanceOf(ServiceError);
      expect((err as ServiceError).status).toBe(404);
      expect((err as ServiceError).param).toBe('model');
    }
  });
});
