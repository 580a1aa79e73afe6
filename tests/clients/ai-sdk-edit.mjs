// Runs one Vercel AI SDK `generateImage` edit, unchanged, in its own process (the AI SDK is ESM only,
// and jest runs the tests as CommonJS). Input: a JSON object on argv[2]; output: one JSON line.
// Optional: `n`, `size`, `providerOptions` (passed as given), `outDir` (each image written there as
// `<i>.bin`, so the caller can check the bytes).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createOpenAI } from '@ai-sdk/openai';
import { generateImage } from 'ai';

const args = JSON.parse(process.argv[2]);
const openai = createOpenAI({ apiKey: args.apiKey, baseURL: args.baseURL });
try {
  const result = await generateImage({
    model: openai.image(args.model),
    prompt: { text: args.prompt, images: [new Uint8Array(readFileSync(args.image))], ...(args.mask ? { mask: new Uint8Array(readFileSync(args.mask)) } : {}) },
    ...(args.n !== undefined ? { n: args.n } : {}),
    ...(args.size !== undefined ? { size: args.size } : {}),
    ...(args.providerOptions ? { providerOptions: args.providerOptions } : {}),
    ...(args.maxRetries !== undefined ? { maxRetries: args.maxRetries } : {}),
    ...(args.timeoutMs ? { abortSignal: AbortSignal.timeout(args.timeoutMs) } : {}),
  });
  if (args.outDir) for (const [i, img] of result.images.entries()) writeFileSync(path.join(args.outDir, `${i}.bin`), img.uint8Array);
  console.log(JSON.stringify({ ok: true, images: result.images.map((i) => i.uint8Array.length), mediaTypes: result.images.map((i) => i.mediaType), usage: result.usage ?? null, warnings: result.warnings ?? [] }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, name: err?.name, message: String(err?.message ?? err).slice(0, 300), status: err?.statusCode ?? null }));
}
