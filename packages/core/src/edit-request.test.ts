import { describe, expect, it } from '@jest/globals';
import { checkEditParams, checkImages, type ImageFacts, parseEditFields, parseJobOptions } from './edit-request';
import { ServiceError } from './errors';
import { FAMILY_CAPABILITIES } from './models';

const dalle = FAMILY_CAPABILITIES['dall-e-2'];
const gpt = FAMILY_CAPABILITIES['gpt-image'];
const mini = { ...FAMILY_CAPABILITIES['gpt-image'], inputFidelities: [] };

function rejection(fn: () => unknown): { status: number; param: string | null; code: string | null; message: string } {
  try {
    fn();
  } catch (err) {
    if (err instanceof ServiceError) return { status: err.status, param: err.param, code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected a rejection');
}

const png = (over: Partial<ImageFacts> = {}): ImageFacts => ({ field: 'image', format: 'png', width: 512, height: 512, bytes: 1000, hasAlpha: true, ...over });

describe('parseEditFields', () => {
  it('requires a prompt', () => {
    expect(rejection(() => parseEditFields({}))).toMatchObject({ status: 400, param: 'prompt', message: 'prompt is required' });
    expect(rejection(() => parseEditFields({ prompt: '   ' }))).toMatchObject({ status: 400, param: 'prompt' });
  });
  it('coerces multipart strings and checks ranges', () => {
    expect(parseEditFields({ prompt: 'p', n: '3', output_compression: '50' })).toMatchObject({ n: 3, output_compression: 50 });
    expect(rejection(() => parseEditFields({ prompt: 'p', n: '11' }))).toMatchObject({ status: 400, param: 'n' });
    expect(rejection(() => parseEditFields({ prompt: 'p', n: '0' }))).toMatchObject({ param: 'n' });
    expect(rejection(() => parseEditFields({ prompt: 'p', n: 'two' }))).toMatchObject({ param: 'n' });
    expect(rejection(() => parseEditFields({ prompt: 'p', output_compression: '101' }))).toMatchObject({ param: 'output_compression' });
  });
  it('rejects unknown enum values and repeated text fields', () => {
    expect(rejection(() => parseEditFields({ prompt: 'p', response_format: 'jpeg' }))).toMatchObject({ param: 'response_format' });
    expect(rejection(() => parseEditFields({ prompt: 'p', background: 'green' }))).toMatchObject({ param: 'background' });
    expect(rejection(() => parseEditFields({ prompt: ['a', 'b'] }))).toMatchObject({ param: 'prompt' });
  });
  it('refuses a field it does not know, naming it, as OpenAI does (nothing silently dropped)', () => {
    expect(rejection(() => parseEditFields({ prompt: 'p', colour: 'red' }))).toMatchObject({ status: 400, param: 'colour', code: 'unknown_parameter', message: "Unknown parameter: 'colour'." });
    // multipart `foo[bar]=x` arrives as foo: {bar: 'x'}
    expect(rejection(() => parseEditFields({ prompt: 'p', extra: { a: 'b' } }))).toMatchObject({ param: 'extra', code: 'unknown_parameter' });
    expect(rejection(() => parseEditFields({ prompt: 'p', image: 'https://example.com/a.png' }))).toMatchObject({ param: 'image', code: 'invalid_value' });
  });
  it('knows OpenAI\'s fields and this service\'s own', () => {
    const known = {
      prompt: 'p', model: 'm', n: '1', size: 'auto', response_format: 'url', user: 'u', background: 'auto', quality: 'auto', output_format: 'png', input_fidelity: 'low',
      moderation: 'low', safety_identifier: 'hash', stream: 'false', partial_images: '0', search_prompt: 's', metadata: { a: 'b' }, webhook_url: 'https://example.com/h',
      webhook_events_filter: ['job.succeeded'], cancel_after: '5m', complexity: 'low', frame_count: '3', frame_duration_ms: '100', svg: { model: 'x' }, markup: { file_id: 'f' },
    };
    expect(() => parseEditFields(known)).not.toThrow();
  });
});

describe('checkEditParams per model', () => {
  const f = (over: Record<string, unknown>) => parseEditFields({ prompt: 'a hat', ...over });
  it('applies defaults', () => {
    expect(checkEditParams('dall-e-2', dalle, f({}))).toEqual({ prompt: 'a hat', n: 1, response_format: 'url' });
  });
  it('answers as OpenAI does by default: b64_json for GPT image models and local-inpaint, url for dall-e-2; either when asked', () => {
    expect(checkEditParams('gpt-image-1', gpt, f({})).response_format).toBe('b64_json');
    expect(checkEditParams('local-inpaint', FAMILY_CAPABILITIES.local, f({})).response_format).toBe('b64_json');
    expect(checkEditParams('dall-e-2', dalle, f({})).response_format).toBe('url');
    expect(checkEditParams('gpt-image-1', gpt, f({ response_format: 'url' })).response_format).toBe('url');
    expect(checkEditParams('dall-e-2', dalle, f({ response_format: 'b64_json' })).response_format).toBe('b64_json');
  });
  it('local-inpaint takes size auto (the input\'s size), its default', () => {
    expect(FAMILY_CAPABILITIES.local.defaultSize).toBe('auto');
    expect(checkEditParams('local-inpaint', FAMILY_CAPABILITIES.local, f({ size: 'auto' })).size).toBe('auto');
  });
  it('passes moderation and safety_identifier for GPT image models and refuses them elsewhere', () => {
    expect(checkEditParams('gpt-image-1', gpt, f({ moderation: 'low', safety_identifier: 'user-hash' }))).toMatchObject({ moderation: 'low', safety_identifier: 'user-hash' });
    expect(rejection(() => parseEditFields({ prompt: 'p', moderation: 'none' }))).toMatchObject({ param: 'moderation', code: 'invalid_value' });
    for (const [param, value] of [['moderation', 'auto'], ['safety_identifier', 'x']] as const) {
      for (const [model, caps] of [['dall-e-2', dalle], ['local-inpaint', FAMILY_CAPABILITIES.local], ['stable-image-inpaint', FAMILY_CAPABILITIES.stability]] as const) {
        expect(rejection(() => checkEditParams(model, caps, f({ [param]: value })))).toMatchObject({ status: 400, param, code: 'unsupported_parameter' });
      }
    }
  });
  it('refuses OpenAI parameters no model here takes, per model, naming them', () => {
    for (const [param, value] of [['complexity', 'high'], ['frame_count', '4'], ['frame_duration_ms', '100'], ['svg', { model: 'x' }], ['markup', { file_id: 'f' }], ['output_format', 'gif'], ['output_format', 'svg'], ['quality', 'xhigh']] as const) {
      const r = rejection(() => checkEditParams('gpt-image-1', gpt, f({ [param]: value })));
      expect(r).toMatchObject({ status: 400, param, code: 'unsupported_parameter' });
      expect(r.message).toContain("'gpt-image-1'");
    }
  });
  it('limits prompt length per model', () => {
    expect(rejection(() => checkEditParams('dall-e-2', dalle, f({ prompt: 'x'.repeat(1001) })))).toMatchObject({ status: 400, param: 'prompt' });
    expect(checkEditParams('gpt-image-1', gpt, f({ prompt: 'x'.repeat(1001) })).prompt).toHaveLength(1001);
    expect(rejection(() => checkEditParams('gpt-image-1', gpt, f({ prompt: 'x'.repeat(32001) })))).toMatchObject({ param: 'prompt' });
  });
  it('checks sizes per model', () => {
    expect(rejection(() => checkEditParams('dall-e-2', dalle, f({ size: '1536x1024' })))).toMatchObject({ param: 'size', code: 'unsupported_parameter' });
    expect(rejection(() => checkEditParams('gpt-image-1', gpt, f({ size: '256x256' })))).toMatchObject({ param: 'size' });
    expect(checkEditParams('gpt-image-1', gpt, f({ size: 'auto' })).size).toBe('auto');
  });
  it('rejects GPT image parameters for dall-e-2 instead of dropping them', () => {
    for (const [param, value] of [['background', 'transparent'], ['quality', 'high'], ['output_format', 'webp'], ['input_fidelity', 'high']] as const) {
      const r = rejection(() => checkEditParams('dall-e-2', dalle, f({ [param]: value })));
      expect(r).toMatchObject({ status: 400, param });
      expect(r.message).toContain("'dall-e-2'");
    }
  });
  it('rejects input_fidelity for gpt-image-1-mini but accepts it for gpt-image-1', () => {
    expect(rejection(() => checkEditParams('gpt-image-1-mini', mini, f({ input_fidelity: 'high' })))).toMatchObject({ param: 'input_fidelity' });
    expect(checkEditParams('gpt-image-1', gpt, f({ input_fidelity: 'high' })).input_fidelity).toBe('high');
  });
  it('needs jpeg or webp for output_compression and png or webp for transparency', () => {
    expect(rejection(() => checkEditParams('gpt-image-1', gpt, f({ output_compression: '50' })))).toMatchObject({ param: 'output_compression' });
    expect(checkEditParams('gpt-image-1', gpt, f({ output_compression: '50', output_format: 'jpeg' })).output_compression).toBe(50);
    expect(rejection(() => checkEditParams('gpt-image-1', gpt, f({ background: 'transparent', output_format: 'jpeg' })))).toMatchObject({ param: 'background' });
  });
  it('streams where the model streams at OpenAI, and refuses it clearly elsewhere', () => {
    expect(checkEditParams('gpt-image-1', gpt, f({ stream: 'true', partial_images: '2' }))).toMatchObject({ stream: true, partial_images: 2 });
    expect(checkEditParams('gpt-image-1', gpt, f({ stream: true }))).toMatchObject({ stream: true, partial_images: 0 });
    expect(rejection(() => checkEditParams('dall-e-2', dalle, f({ stream: 'true' })))).toMatchObject({ param: 'stream', code: 'unsupported_parameter' });
    expect(rejection(() => checkEditParams('gpt-image-1', gpt, f({ partial_images: '1' })))).toMatchObject({ param: 'partial_images' });
  });
});

describe('checkImages', () => {
  it('needs at least one image and at most the model maximum', () => {
    expect(rejection(() => checkImages('dall-e-2', dalle, [], undefined))).toMatchObject({ status: 400, param: 'image' });
    expect(rejection(() => checkImages('dall-e-2', dalle, [png(), png()], undefined))).toMatchObject({ param: 'image' });
    expect(() => checkImages('gpt-image-1', gpt, Array.from({ length: 16 }, () => png({ field: 'image[]' })), undefined)).not.toThrow();
    expect(rejection(() => checkImages('gpt-image-1', gpt, Array.from({ length: 17 }, () => png({ field: 'image[]' })), undefined))).toMatchObject({ param: 'image' });
  });
  it('checks the real format, not the file name', () => {
    expect(rejection(() => checkImages('dall-e-2', dalle, [png({ format: undefined })], undefined))).toMatchObject({ param: 'image', code: 'invalid_image_format' });
    expect(rejection(() => checkImages('dall-e-2', dalle, [png({ format: 'jpeg' })], undefined))).toMatchObject({ param: 'image' });
    expect(() => checkImages('gpt-image-1', gpt, [png({ format: 'jpeg' }), png({ format: 'webp', field: 'image' })], undefined)).not.toThrow();
    expect(rejection(() => checkImages('gpt-image-1', gpt, [png({ format: 'gif' })], undefined))).toMatchObject({ param: 'image' });
  });
  it('limits bytes per model with 413', () => {
    expect(rejection(() => checkImages('dall-e-2', dalle, [png({ bytes: 4 * 1024 * 1024 + 1 })], undefined))).toMatchObject({ status: 413, param: 'image' });
    expect(() => checkImages('gpt-image-1', gpt, [png({ bytes: 20 * 1024 * 1024 })], undefined)).not.toThrow();
  });
  it('needs square images for dall-e-2 only, and caps pixels', () => {
    expect(rejection(() => checkImages('dall-e-2', dalle, [png({ width: 512, height: 256 })], undefined))).toMatchObject({ param: 'image', code: 'invalid_image_dimensions' });
    expect(() => checkImages('gpt-image-1', gpt, [png({ width: 1536, height: 1024 })], undefined)).not.toThrow();
    expect(rejection(() => checkImages('gpt-image-1', gpt, [png({ width: 10000, height: 10000 })], undefined))).toMatchObject({ param: 'image', code: 'image_too_many_pixels' });
  });
  it('checks the mask: PNG, same size as the first image, with alpha', () => {
    const mask = (over: Partial<ImageFacts> = {}) => png({ field: 'mask', ...over });
    expect(() => checkImages('dall-e-2', dalle, [png()], mask())).not.toThrow();
    expect(rejection(() => checkImages('dall-e-2', dalle, [png()], mask({ width: 256, height: 256 })))).toMatchObject({ param: 'mask', code: 'invalid_mask_dimensions' });
    expect(rejection(() => checkImages('dall-e-2', dalle, [png()], mask({ format: 'jpeg' })))).toMatchObject({ param: 'mask' });
    expect(rejection(() => checkImages('dall-e-2', dalle, [png()], mask({ hasAlpha: false })))).toMatchObject({ param: 'mask' });
    expect(rejection(() => checkImages('dall-e-2', dalle, [png()], mask({ bytes: 5 * 1024 * 1024 })))).toMatchObject({ status: 413, param: 'mask' });
  });
});

describe('job options of a submission', () => {
  const fields = (extra: Record<string, unknown>) => parseEditFields({ prompt: 'p', ...extra });
  it('takes metadata as fields or JSON, within OpenAI limits', () => {
    expect(parseJobOptions(fields({ metadata: { order: '42' } })).metadata).toEqual({ order: '42' });
    expect(parseJobOptions(fields({ metadata: '{"a":"b"}' })).metadata).toEqual({ a: 'b' });
    const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
    expect(() => parseJobOptions(fields({ metadata: many }))).toThrow(/at most 16/);
    expect(() => parseJobOptions(fields({ metadata: { a: 1 } }))).toThrow(/must be a string/);
    expect(() => parseJobOptions(fields({ metadata: 'not json' }))).toThrow(/JSON object/);
  });
  it('takes a webhook with an event filter', () => {
    expect(parseJobOptions(fields({ webhook_url: 'https://example.com/hook', webhook_events_filter: 'job.started, job.succeeded' }))).toMatchObject({
      webhookUrl: 'https://example.com/hook',
      webhookEvents: ['job.started', 'job.succeeded'],
    });
    expect(() => parseJobOptions(fields({ webhook_url: 'ftp://example.com' }))).toThrow(/http/);
    expect(() => parseJobOptions(fields({ webhook_url: 'https://e.com', webhook_events_filter: ['job.done'] }))).toThrow(/unknown event 'job.done'/);
  });
  it('reads Cancel-After durations; the header wins over the field', () => {
    expect(parseJobOptions(fields({ cancel_after: '5m' })).cancelAfterMs).toBe(300_000);
    expect(parseJobOptions(fields({ cancel_after: '5m' }), '90s').cancelAfterMs).toBe(90_000);
    expect(parseJobOptions(fields({}), '2').cancelAfterMs).toBe(2000);
    expect(() => parseJobOptions(fields({}), 'soon')).toThrow(/Cancel-After/);
    expect(() => parseJobOptions(fields({ cancel_after: '30d' }))).toThrow(/cancel_after/);
  });
});
