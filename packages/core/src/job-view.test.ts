import { describe, expect, it } from '@jest/globals';
import { editResponse, type JobView, jobObject, tokenUsage } from './job-view';

const store = {
  presignGet: async (key: string) => `https://s3.example/${key}`,
  getBuffer: async () => Buffer.from('png-bytes'),
};

const job = (over: Partial<JobView> = {}): JobView => ({
  id: 'job_1',
  status: 'succeeded',
  model: 'gpt-image-1',
  provider: 'openai',
  params: { response_format: 'b64_json' },
  outputs: [{ key: 'jobs/job_1/output/0.png', format: 'png', bytes: 9, width: 1024, height: 1024 }],
  error: null,
  metadata: {},
  attempts: 1,
  createdAt: new Date(1_700_000_000_000),
  startedAt: new Date(1_700_000_001_000),
  completedAt: new Date(1_700_000_002_000),
  usage: null,
  ...over,
});

describe('tokenUsage: the provider\'s usage in OpenAI\'s shape', () => {
  it('is complete: input details, totals, output details when reported', () => {
    expect(tokenUsage({ inputTokens: 400, imageTokens: 323, textTokens: 77, outputTokens: 1056, totalTokens: 1456, outputTokensDetails: { image_tokens: 1000, text_tokens: 56 } })).toEqual({
      input_tokens: 400,
      input_tokens_details: { image_tokens: 323, text_tokens: 77 },
      output_tokens: 1056,
      total_tokens: 1456,
      output_tokens_details: { image_tokens: 1000, text_tokens: 56 },
    });
  });
  it('keeps only what was reported, and nothing when no tokens were', () => {
    expect(tokenUsage({ inputTokens: 10, outputTokens: 20 })).toEqual({ input_tokens: 10, output_tokens: 20, total_tokens: 30 });
    expect(tokenUsage({ inputTokens: 10, textTokens: 4, outputTokens: 0 })?.input_tokens_details).toEqual({ image_tokens: 6, text_tokens: 4 });
    expect(tokenUsage(undefined)).toBeUndefined();
    expect(tokenUsage({})).toBeUndefined();
  });
});

describe('usage in the views', () => {
  const details = tokenUsage({ inputTokens: 400, imageTokens: 323, textTokens: 77, outputTokens: 1056, totalTokens: 1456 })!;
  const usage = { images: 1, inputTokens: 400, outputTokens: 1056, costUsd: 0.05, details };

  it('the OpenAI response carries the provider\'s usage as it was kept', async () => {
    const body = await editResponse(job({ usage }), store, 60);
    expect(body.usage).toEqual(details);
    expect(body.data).toEqual([{ b64_json: Buffer.from('png-bytes').toString('base64') }]);
  });
  it('the job object adds images and cost to it', async () => {
    const body = await jobObject(job({ usage }), store, 60);
    expect(body.usage).toEqual({ images: 1, input_tokens: 400, input_tokens_details: { image_tokens: 323, text_tokens: 77 }, output_tokens: 1056, total_tokens: 1456, cost_usd: 0.05 });
  });
  it('a job without tokens (local) shows nulls; a row from before details shows its totals', async () => {
    expect((await jobObject(job({ model: 'local-inpaint', usage: { images: 2, inputTokens: null, outputTokens: null, costUsd: 0, details: null } }), store, 60)).usage).toEqual({
      images: 2,
      input_tokens: null,
      input_tokens_details: null,
      output_tokens: null,
      total_tokens: null,
      cost_usd: 0,
    });
    expect((await editResponse(job({ usage: { images: 1, inputTokens: 5, outputTokens: 7, costUsd: 0 } }), store, 60)).usage).toEqual({ input_tokens: 5, output_tokens: 7, total_tokens: 12 });
  });
});
