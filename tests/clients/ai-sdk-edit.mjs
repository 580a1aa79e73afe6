// Runs one Vercel AI SDK `generateImage` edit, unchanged, in its own process (the AI SDK is ESM only,
// and jest runs the tests as CommonJS). Input: a JSON object on argv[2]; output: one JSON line.
import { readFileSync } from 'node:fs';
import { createOpenAI } from '@ai-sdk/openai';
import { generateImage } from 'ai';

const args = JSON.parse(process.argv[2]);
const openai = createOpenAI({ apiKey: args.apiKey, baseURL: args.baseURL });
try {
  const result = await generateImage({
    model: openai.image(args.model),
    prompt: { text: args.prompt, images: [new Uint8Array(readFileSync(args.image))], ...(args.mask ? { mask: new Uint8Array(readFileSync(args.mask)) } : {}) },
    ...(args.maxRetries !== undefined ? { maxRetries: args.maxRetries } : {}),
    ...(args.timeoutMs ? { abortSignal: AbortSignal.timeout(args.timeoutMs) } : {}),
  });
  console.log(JSON.stringify({ ok: true, images: result.images.map((i) => i.uint8Array.length) }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, name: err?.name, message: String(err?.message ?? err).slice(0, 300), status: err?.statusCode ?? null }));
}
