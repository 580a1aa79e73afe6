import { describe, expect, it } from '@jest/globals';
import { parseConfig } from './config';
import { editCost } from './pricing';

const price = (model: string) => parseConfig({}).registry.models.get(model)!.price;
const square = { width: 1024, height: 1024 };
const wide = { width: 1536, height: 1024 };

describe('edit cost', () => {
  it('prices GPT image edits by quality and the size produced; auto and unset are never 0', () => {
    const gpt = price('gpt-image-1');
    expect(editCost(gpt, { quality: 'low', outputs: [square] })).toBe(0.011);
    expect(editCost(gpt, { quality: 'medium', outputs: [wide, wide] })).toBe(0.126);
    // unset or auto quality: priced as the dearest listed, by the size that came back
    expect(editCost(gpt, { outputs: [wide] })).toBe(0.25);
    expect(editCost(gpt, { quality: 'auto', outputs: [square] })).toBe(0.167);
  });

  it('uses the reported tokens when there are some', () => {
    const gpt = price('gpt-image-1');
    const usage = { inputTokens: 1200, textTokens: 200, imageTokens: 1000, outputTokens: 4160 };
    // 200 × $5 + 1000 × $10 + 4160 × $40 per million
    expect(editCost(gpt, { quality: 'high', outputs: [square], usage })).toBe(0.1774);
  });

  it('prices dall-e-2 by size, per-image and per-megapixel models by their outputs', () => {
    expect(editCost(price('dall-e-2'), { outputs: [{ width: 256, height: 256 }, square] })).toBe(0.036);
    expect(editCost(price('stable-image-inpaint'), { outputs: [square, square, square] })).toBe(0.09);
    expect(editCost(price('local-inpaint'), { outputs: [square] })).toBe(0);
    const fal = parseConfig({}).registry.models.get('flux-fill-pro')!.targets[0]!.price!;
    // 1536×1024 is 1.57 MP: two started megapixels
    expect(editCost(fal, { outputs: [wide] })).toBe(0.1);
  });
});
