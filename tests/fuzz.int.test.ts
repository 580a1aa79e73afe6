import { readdirSync } from 'node:fs';
import net from 'node:net';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { makeMask, makeOpaque, makePng, startTestService, type TestService } from '@image-edits/testing';
import fc from 'fast-check';
import sharp from 'sharp';

/**
 * Property-based fuzzing of the running service (issue 12): hostile multipart and JSON bodies,
 * batch lines, ids, queries, headers and images (truncated, corrupt, lying headers, odd channel
 * layouts, bombs). Whatever comes in: never a 5xx, every error in OpenAI's shape with a code, nothing
 * of a refused request left in the upload directory or S3, every batch final, the process ready.
 *
 * FUZZ_RUNS (default 40) is the number of cases of each property; FUZZ_SEED replays a failure
 * (fast-check prints the seed and the shrunk case). `FUZZ_RUNS=500 npx jest tests/fuzz.int.test.ts`
 * runs it long.
 */

// biome-ignore lint/suspicious/noExplicitAny: test-only JSON bodies, checked field by field
type Json = any;

const RUNS = Math.max(1, Number(process.env.FUZZ_RUNS ?? 40));
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const opts = (numRuns: number) => ({ numRuns, ...(SEED === undefined ? {} : { seed: SEED }), endOnFailure: false });

jest.setTimeout(Math.max(110_000, RUNS * 8_000));

let svc: TestService;
/** a valid image file, a mask file and a batch file of the key: what file_ids may name */
let fileIds: string[];
/** the images everything else is made from: several formats and channel layouts */
let pool: Buffer[];
/** every batch created, checked final at the end */
const batches: string[] = [];

beforeAll(async () => {
  svc = await startTestService({ HTTP_HEADERS_TIMEOUT_MS: '1000', HTTP_BODY_IDLE_TIMEOUT_MS: '500', MAX_INPUT_PIXELS: '4000000' });
  const hole = { x: 4, y: 4, width: 8, height: 8 };
  const rgbaHole = await makePng(32, 32, { hole });
  const greyAlpha = await sharp(rgbaHole).toColourspace('b-w').png().toBuffer();
  pool = [
    rgbaHole,
    await makePng(32, 32),
    greyAlpha,
    await sharp(rgbaHole).removeAlpha().toColourspace('b-w').png().toBuffer(),
    await makeOpaque(32, 32),
    await sharp(rgbaHole).png({ palette: true }).toBuffer(),
    await sharp(rgbaHole).toColourspace('rgb16').png().toBuffer(),
    await makeOpaque(32, 32, 'jpeg'),
    await sharp(rgbaHole).webp().toBuffer(),
    await sharp(rgbaHole).gif().toBuffer(),
    await makePng(32, 16, { hole }),
    await makePng(1, 1, { hole: { x: 0, y: 0, width: 1, height: 1 } }),
    await makeMask(32, 32, hole),
  ];
  fileIds = [
    (await upload(rgbaHole, 'photo.png', 'vision')).id,
    (await upload(await makeMask(32, 32, hole), 'mask.png', 'vision')).id,
    (await upload(Buffer.from('{}\n'), 'x.jsonl', 'batch')).id,
  ];
});

afterAll(async () => {
  await svc?.stop();
});

async function upload(bytes: Buffer, name: string, purpose: string): Promise<Json> {
  const form = new FormData();
  form.append('purpose', purpose);
  form.append('file', new Blob([new Uint8Array(bytes)]), name);
  const res = await fetch(`${svc.url}/v1/files`, { method: 'POST', headers: { authorization: `Bearer ${svc.apiKey}` }, body: form });
  expect(res.status).toBe(200);
  return res.json();
}

// ---------------------------------------------------------------------------------------------
// generators

/** Characters that have broken services: NUL, lone surrogates, separators, quotes, escapes, bidi. */
const hostileChar = fc.constantFrom('\u0000', '\ud800', '\udfff', '\uffff', '\ufeff', '\u202e', '\u2028', '\n', '\r', '\t', '"', "'", '\\', '%00', '%', '[', ']', '{', '../', '😀', '\u0085', ';', '=', ',');
const hostileString = fc.oneof(
  // what Postgres refuses, inside otherwise ordinary text
  { weight: 3, arbitrary: fc.tuple(fc.string({ maxLength: 6 }), fc.constantFrom('\u0000', '\ud800', '\udc00', '\ud83d'), fc.string({ maxLength: 6 })).map((p) => p.join('')) },
  { weight: 3, arbitrary: fc.array(fc.oneof(fc.string({ maxLength: 4 }), hostileChar), { maxLength: 8 }).map((a) => a.join('')) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', 'x'.repeat(1100), 'auto', '256x256', 'local-inpaint', 'null', '-1', '1e309', '0x10', 'NaN') },
);
/** Header values fetch can send (no NUL, CR, LF): printable ASCII and latin-1. */
const headerValue = fc
  .array(fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0xa0, max: 0xff })), { maxLength: 40 })
  .map((codes) => String.fromCharCode(...codes).trim());

/** A number field as clients get it wrong. */
const numberish = fc.oneof(fc.constantFrom('1', '2', '0', '-1', '11', '1.5', '1e1', '0x2', ' 2', 'two', '9007199254740993', ''), fc.integer({ min: -5, max: 20 }).map(String));

function setPngSize(png: Buffer, width: number, height: number, fixCrc: boolean): Buffer {
  const at = png.indexOf('IHDR');
  if (at < 0) return png;
  const out = Buffer.from(png);
  out.writeUInt32BE(width >>> 0, at + 4);
  out.writeUInt32BE(height >>> 0, at + 8);
  if (fixCrc) out.writeUInt32BE(crc32(out.subarray(at, at + 17)) >>> 0, at + 17);
  return out;
}

/** An image as hostile clients send them. */
const image = fc
  .tuple(
    fc.nat(),
    fc.oneof(
      { weight: 4, arbitrary: fc.constant({ kind: 'as-is' as const }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('pixels' as const), from: fc.nat({ max: 40 }), length: fc.integer({ min: 1, max: 60 }), value: fc.integer({ min: 0, max: 255 }) }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('corrupt' as const), at: fc.array(fc.tuple(fc.double({ min: 0.3, max: 1, noNaN: true }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 30 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('lie' as const), width: fc.oneof(fc.integer({ min: 0, max: 70_000 }), fc.constant(0xffffffff)), height: fc.integer({ min: 0, max: 70_000 }), crc: fc.boolean() }) },
      { weight: 1, arbitrary: fc.constant({ kind: 'bomb' as const }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('junk' as const), bytes: fc.uint8Array({ maxLength: 64 }) }) },
    ),
  )
  .map(([i, m]) => {
    // half of them the one image every model here takes, so what is done to it is what gets tested
    const base = pool[i % 2 === 0 ? 0 : (i >> 1) % pool.length]!;
    switch (m.kind) {
      case 'truncate':
        return base.subarray(0, Math.floor(base.length * m.at));
      case 'pixels': {
        // a valid header over pixel data that does not decode
        const at = base.indexOf('IDAT');
        if (at < 0) return base;
        const out = Buffer.from(base);
        out.fill(m.value, Math.min(out.length, at + 8 + m.from), Math.min(out.length, at + 8 + m.from + m.length));
        return out;
      }
      case 'corrupt': {
        const out = Buffer.from(base);
        for (const [at, v] of m.at) out[Math.min(out.length - 1, Math.floor(out.length * at))] = v;
        return out;
      }
      case 'lie':
        return setPngSize(base, m.width, m.height, m.crc);
      case 'bomb':
        // 60,000² pixels claimed by a valid header over a few bytes of data
        return setPngSize(pool[0]!, 60_000, 60_000, true);
      case 'junk':
        return Buffer.from(m.bytes);
      default:
        return base;
    }
  });

const dataUrl = image.chain((bytes) => fc.constantFrom('image/png', 'image/png', 'image/jpeg', 'image/webp', 'image/gif', 'text/plain').map((type) => `data:${type};base64,${bytes.toString('base64')}`));

/** null mostly, the value once in a while (fc.option's `freq` is the other way round: null once in `freq`). */
const rarely = <T>(arb: fc.Arbitrary<T>) => fc.oneof({ weight: 6, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: arb });

/** A valid value most of the time, a hostile one sometimes: requests must get past the first check to test the rest. */
const mostly = <T>(valid: fc.Arbitrary<T>, hostile: fc.Arbitrary<unknown> = hostileString) => fc.oneof({ weight: 5, arbitrary: valid }, { weight: 1, arbitrary: hostile });

const imageRef = fc.oneof(
  { weight: 3, arbitrary: fc.record({ file_id: mostly(fc.constantFrom(0, 0, 1, 2).map((i) => fileIds[i]!)) }) },
  { weight: 3, arbitrary: fc.record({ image_url: mostly(dataUrl, fc.oneof(fc.constantFrom('http://127.0.0.1:9/x.png', 'https://localhost/x.png', 'https://169.254.169.254/latest/meta-data', 'https://[::1]/x', 'ftp://x/y.png', 'data:image/png;base64,', 'data:,x', 'data:image/png;base64,@@@'), hostileString)) }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
);

const metadata = fc.oneof(fc.dictionary(hostileString, hostileString, { maxKeys: 20 }), fc.jsonValue({ maxDepth: 3 }));

/** The text fields of a valid edit for local-inpaint. */
const validFields = fc.record(
  {
    model: fc.constant('local-inpaint'),
    n: fc.constantFrom('1', '2'),
    size: fc.constantFrom('256x256', '512x512'),
    response_format: fc.constantFrom('url', 'b64_json'),
    output_format: fc.constantFrom('png', 'webp'),
    user: fc.constantFrom('u1', 'someone'),
    cancel_after: fc.constantFrom('5m', '1h'),
    metadata: fc.constant('{"run":"fuzz"}'),
  },
  { requiredKeys: ['model'] },
);

/** One field made hostile: mostly the text that reaches the database, sometimes any known name or an unknown one. */
const fieldMutation = fc.tuple(
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('prompt', 'user', 'metadata', 'model') },
    { weight: 3, arbitrary: fc.constantFrom('n', 'size', 'response_format', 'output_format', 'output_compression', 'background', 'quality', 'stream', 'partial_images', 'webhook_url', 'webhook_events_filter', 'cancel_after', 'input_fidelity', 'search_prompt') },
    { weight: 1, arbitrary: hostileString },
  ),
  fc.oneof(
    { weight: 3, arbitrary: hostileString },
    // JSON in a string (metadata may come so): escapes that decode to what Postgres refuses
    { weight: 1, arbitrary: fc.dictionary(hostileString, hostileString, { maxKeys: 3 }).map((o) => JSON.stringify(o)) },
    { weight: 1, arbitrary: numberish },
    { weight: 1, arbitrary: fc.constantFrom('http://127.0.0.1:9/h', 'https://10.0.0.1/h', 'job.succeeded', 'true', '3', '1024x1024', '99999x99999', '0x0', '1ms', '8d', '{"a":"\\u0000"}') },
  ),
);

/** What a hostile client changes in an otherwise valid JSON edit: one thing at a time, or two. */
const jsonMutation = fc.oneof(
  { weight: 4, arbitrary: fieldMutation.map(([k, v]) => ({ at: [k], v: v as unknown })) },
  { weight: 2, arbitrary: fc.record({ at: fc.constant(['images', 0]), v: imageRef }) },
  { weight: 1, arbitrary: fc.record({ at: fc.constant(['images']), v: fc.oneof(fc.array(imageRef, { maxLength: 20 }), fc.jsonValue({ maxDepth: 2 })) }) },
  { weight: 1, arbitrary: fc.record({ at: fc.constant(['mask']), v: imageRef }) },
  { weight: 2, arbitrary: fc.record({ at: fc.tuple(fc.constant('metadata'), hostileString), v: hostileString }) },
  { weight: 1, arbitrary: fc.record({ at: fc.constant(['metadata']), v: metadata }) },
  // metadata as a JSON string: what it decodes to must pass the same rule
  { weight: 2, arbitrary: fc.record({ at: fc.constant(['metadata']), v: fc.dictionary(hostileString, hostileString, { minKeys: 1, maxKeys: 3 }).map((o) => JSON.stringify(o)) }) },
  { weight: 1, arbitrary: fc.record({ at: fc.tuple(hostileString), v: fc.jsonValue({ maxDepth: 2 }) }) },
);

/** Sets `value` at `path` in a plain JSON object, making the containers on the way. */
function setAt(target: Record<string, unknown>, path: (string | number)[], value: unknown): void {
  let at: Record<string | number, unknown> = target;
  for (const [i, k] of path.entries()) {
    if (i === path.length - 1) at[k] = value;
    else {
      if (typeof at[k] !== 'object' || at[k] === null) at[k] = typeof path[i + 1] === 'number' ? [] : {};
      at = at[k] as Record<string | number, unknown>;
    }
  }
}

/** A JSON edit body: valid, with no, one or two hostile changes; or any JSON at all. */
const jsonEditBody = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .record({
        fields: validFields,
        image: fc.oneof(fc.constantFrom('file', 'data'), image),
        mask: fc.boolean(),
        mutations: fc.oneof({ weight: 1, arbitrary: fc.constant([]) }, { weight: 3, arbitrary: fc.array(jsonMutation, { minLength: 1, maxLength: 2 }) }),
      })
      .map(({ fields, image: how, mask, mutations }) => {
        const ref = how === 'file' ? { file_id: fileIds[0] } : { image_url: `data:image/png;base64,${(how === 'data' ? pool[0]! : how).toString('base64')}` };
        const body: Record<string, unknown> = { ...fields, metadata: { run: 'fuzz' }, prompt: 'a red balloon', images: [ref], ...(mask ? { mask: { file_id: fileIds[1] } } : {}) };
        for (const m of mutations) setAt(body, m.at, m.v);
        return body;
      }),
  },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
);

/** JSON text of a body, sometimes with absurd nesting or broken syntax spliced in. */
function jsonText(body: unknown, twist: { deep: number; cut: number | null }): string {
  let text = JSON.stringify(body) ?? 'null';
  if (twist.deep > 0 && text.startsWith('{') && text.length > 2) text = `{"deep":${'['.repeat(twist.deep)}${']'.repeat(twist.deep)},${text.slice(1)}`;
  if (twist.cut !== null) text = text.slice(0, Math.floor(text.length * twist.cut));
  return text;
}
const twist = fc.record({
  deep: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 20, max: 6000 }) }),
  cut: rarely(fc.double({ min: 0, max: 1, noNaN: true })),
});

const headers = fc
  .record(
    {
      prefer: fc.oneof(fc.constantFrom('wait=0', 'wait=1', 'wait=0x10', 'wait=1e3', 'wait=-1', 'wait=', 'respond-async, wait=abc', 'wait=99999999999'), headerValue),
      'idempotency-key': fc.oneof(fc.constantFrom('k1', 'k2', ' ', 'x'.repeat(300)), headerValue),
      'cancel-after': fc.oneof(fc.constantFrom('1ms', '2s', '0', '-1', '8d'), headerValue),
      // never a tiny positive number: that is a client asking for a 504 (sync_wait_timeout), by design
      'x-stainless-timeout': fc.constantFrom('600', 'abc', '-5', '0', 'Infinity'),
    },
    { requiredKeys: [] },
  )
  // mostly asynchronous: the checks are the same, and nobody waits on a job
  .chain((h) => fc.constantFrom<Record<string, string>>(h, { ...h, prefer: 'respond-async' }, { prefer: 'respond-async' }, { prefer: 'respond-async' }, { prefer: 'respond-async' }, {}));

/** A part of a multipart body. */
interface Part {
  name: string;
  filename?: string;
  type?: string;
  bytes: Buffer;
}

/** A multipart body written by hand from a valid edit: hostile fields, names, filenames (filename*), part headers, images; truncation, boundaries. */
const multipart = fc
  .record({
    fields: validFields,
    image: fc.oneof({ weight: 1, arbitrary: fc.constant(0).map(() => pool[0]!) }, { weight: 1, arbitrary: image }),
    mask: fc.oneof({ weight: 2, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: mostly(fc.constant(0).map(() => pool[pool.length - 1]!), image) }),
    mutations: fc.array(
      fc.oneof(
        { weight: 3, arbitrary: fieldMutation.map(([k, v]) => ({ kind: 'field' as const, k, v })) },
        { weight: 2, arbitrary: fc.tuple(hostileString, hostileString).map(([k, v]) => ({ kind: 'field' as const, k: `metadata[${k}]`, v })) },
        { weight: 2, arbitrary: fc.dictionary(hostileString, hostileString, { minKeys: 1, maxKeys: 3 }).map((o) => ({ kind: 'field' as const, k: 'metadata', v: JSON.stringify(o) })) },
        fc.record({ kind: fc.constant('filename' as const), filename: fc.oneof(hostileString.map((n) => `filename="${n}"`), hostileString.map((n) => `filename*=UTF-8''${encodeBytes(n)}`), fc.constant('')) }),
        fc.record({ kind: fc.constant('file' as const), name: fc.oneof(fc.constantFrom('image', 'image[]', 'image[1]', 'image[0]', 'mask', 'file'), hostileString), bytes: image }),
        fc.record({ kind: fc.constant('type' as const), type: fc.constantFrom('application/octet-stream', 'text/html', '') }),
        fc.record({ kind: fc.constant('boundary' as const), boundary: fc.constantFrom('', 'x'.repeat(80), '"quoted"') }),
        fc.record({ kind: fc.constant('cut' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
      ),
      { maxLength: 2 },
    ),
    // a field named twice is refused before anything else: a mutation mostly replaces the valid value
    replace: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  })
  .map(({ fields, image: img, mask, mutations, replace }) => {
    let boundary = 'b0undary';
    let cut: number | undefined;
    const parts: Part[] = [...Object.entries({ prompt: 'a red balloon', ...fields }).map(([name, v]) => ({ name, bytes: Buffer.from(v) }))];
    const file: Part = { name: 'image', filename: 'filename="a.png"', type: 'image/png', bytes: img };
    parts.push(file);
    if (mask) parts.push({ name: 'mask', filename: 'filename="m.png"', type: 'image/png', bytes: mask });
    for (const m of mutations) {
      if (m.kind === 'field') {
        const same = replace ? parts.find((p) => p.name === m.k && !p.filename) : undefined;
        if (same) same.bytes = Buffer.from(m.v);
        else parts.push({ name: m.k, bytes: Buffer.from(m.v) });
      }
      if (m.kind === 'filename') file.filename = m.filename;
      if (m.kind === 'file') parts.push({ name: m.name, filename: 'filename="b.png"', type: 'image/png', bytes: m.bytes });
      if (m.kind === 'type') file.type = m.type;
      if (m.kind === 'boundary') boundary = m.boundary;
      if (m.kind === 'cut') cut = m.at;
    }
    const b = boundary.replace(/^"|"$/g, '');
    const chunks: Buffer[] = [];
    for (const p of parts) {
      chunks.push(Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${p.name}"${p.filename ? `; ${p.filename}` : ''}\r\n${p.type ? `Content-Type: ${p.type}\r\n` : ''}\r\n`), p.bytes, Buffer.from('\r\n'));
    }
    chunks.push(Buffer.from(`--${b}--\r\n`));
    let body = Buffer.concat(chunks);
    if (cut !== undefined) body = body.subarray(0, Math.floor(body.length * cut));
    return { body, type: `multipart/form-data; boundary=${boundary}` };
  });

/** Every byte percent-encoded (so lone surrogates, as their UTF-8 replacement, and NULs travel in a URL). */
function encodeBytes(s: string): string {
  return [...Buffer.from(s, 'utf8')].map((x) => `%${x.toString(16).padStart(2, '0')}`).join('');
}

const idSegment = fc.oneof(
  hostileString.map(encodeBytes),
  fc.constantFrom('%00', 'job_%00', '%E0%A4%A', '%ff', '%', '%%', 'job_', 'file-', 'batch_', '..%2F..', 'job_0123456789abcdefghij'),
);

const pathTemplate = fc.constantFrom(
  ['GET', '/v1/jobs/{a}'],
  ['GET', '/v1/jobs/{a}?wait=1'],
  ['POST', '/v1/jobs/{a}/cancel'],
  ['DELETE', '/v1/jobs/{a}'],
  ['GET', '/v1/jobs/{a}/webhook_deliveries'],
  ['POST', '/v1/jobs/{a}/webhook_deliveries/{b}/retry'],
  ['GET', '/v1/jobs/{a}/events'],
  ['GET', '/v1/files/{a}'],
  ['GET', '/v1/files/{a}/content'],
  ['DELETE', '/v1/files/{a}'],
  ['GET', '/v1/batches/{a}'],
  ['POST', '/v1/batches/{a}/cancel'],
  ['GET', '/v1/webhook_endpoints/{a}'],
  ['DELETE', '/v1/webhook_endpoints/{a}'],
  ['GET', '/v1/models/{a}'],
);

const listQuery = fc.record({
  path: fc.constantFrom('/v1/jobs', '/v1/files', '/v1/batches', '/v1/webhook_endpoints', '/v1/models', '/v1/organization/usage/images', '/v1/organization/costs'),
  params: fc.array(
    fc.tuple(
      fc.oneof(fc.constantFrom('limit', 'after', 'status', 'created_after', 'created_before', 'purpose', 'order', 'a[b]', 'limit', 'start_time', 'end_time', 'bucket_width', 'page', 'group_by'), hostileString),
      fc.oneof(fc.constantFrom('1', '0', '101', '99999999999999', '9007199254740991', '-1', '1e3', 'desc', 'queued', 'job_zzz', 'file-zzz', '1d', '1h', 'model'), hostileString),
    ),
    { maxLength: 4 },
  ),
});

/** A batch input line: well-formed with a (mostly valid) edit body, hostile in its custom_id, or structurally broken. */
const batchLine = (i: number) =>
  fc.oneof(
    { weight: 6, arbitrary: fc.record({ body: jsonEditBody, id: mostly(fc.constant(`line-${i}`)) }).map(({ body, id }) => JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/images/edits', body })) },
    { weight: 1, arbitrary: fc.oneof(hostileString, fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v))) },
  );

// ---------------------------------------------------------------------------------------------
// the checks every answer must pass

interface Answer {
  status: number;
  body: Json;
  text: string;
}

async function send(method: string, path: string, init: { body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await fetch(`${svc.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${svc.apiKey}`, ...init.headers },
    ...(init.body !== undefined ? { body: init.body } : {}),
    redirect: 'manual',
  });
  const text = await res.text();
  let body: Json = null;
  try {
    body = JSON.parse(text);
  } catch {}
  const answer = { status: res.status, body, text };
  checkAnswer(answer, `${method} ${path}`);
  return answer;
}

/** What the answers were, per route and status/code: FUZZ_STATS=1 prints it (is the fuzz reaching past the first check?). */
const stats = new Map<string, number>();

/** Never a 5xx; an error always in OpenAI's shape with a code; a job's answer names its id. */
function checkAnswer(a: Answer, what: string): void {
  const route = what.replace(/\/(job_|file-|batch_|we_)?[^/?\s]*(?=\/|$|\?)/g, (m, _p, i) => (i > 12 ? '/:id' : m)).split('?')[0];
  const kind = `${route.replace(/\s+/g, ' ').slice(0, 60)} ${a.status} ${a.body?.error?.code ?? ''} ${a.body?.error?.param ?? ''}`;
  stats.set(kind, (stats.get(kind) ?? 0) + 1);
  if (a.status >= 500) throw new Error(`${what}: ${a.status} ${a.text.slice(0, 500)}`);
  if (a.status >= 400) {
    const e = a.body?.error;
    const shaped = e && typeof e.message === 'string' && e.message.length > 0 && typeof e.type === 'string' && (e.param === null || typeof e.param === 'string') && typeof e.code === 'string' && e.code.length > 0;
    if (!shaped) throw new Error(`${what}: ${a.status} is not OpenAI's error shape with a code: ${a.text.slice(0, 500)}`);
    if (/\n\s+at |node_modules|\.ts:\d+/.test(a.text)) throw new Error(`${what}: the answer leaks a stack trace: ${a.text.slice(0, 500)}`);
  }
}

/** The upload directory holds nothing once a request has been answered (a temporary file may take a moment to go). */
async function uploadsGone(): Promise<void> {
  const dir = svc.testEnv.env.UPLOAD_DIR!;
  for (let i = 0; i < 40; i++) {
    if (readdirSync(dir).length === 0) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`left in the upload directory: ${readdirSync(dir).join(', ')}`);
}

/** Every object in S3 belongs to a row (a job, a file, a batch): a refused request left nothing. */
async function noObjectWithoutRow(): Promise<void> {
  const keys: string[] = [];
  for (const prefix of ['jobs/', 'files/', 'batches/']) {
    let startAfter: string | undefined;
    for (;;) {
      const page = await svc.api.deps.store.listKeys(prefix, startAfter ? { startAfter } : {});
      keys.push(...page.keys);
      if (!page.truncated || page.keys.length === 0) break;
      startAfter = page.keys.at(-1);
    }
  }
  const ids = (prefix: string) => [...new Set(keys.filter((k) => k.startsWith(prefix)).map((k) => k.split('/')[1]!))];
  const [jobs, files, batchRows] = await Promise.all([
    svc.db.job.findMany({ where: { id: { in: ids('jobs/') } }, select: { id: true } }),
    svc.db.file.findMany({ where: { id: { in: ids('files/') } }, select: { id: true } }),
    svc.db.batch.findMany({ where: { id: { in: ids('batches/') } }, select: { id: true } }),
  ]);
  const known = new Set([...jobs, ...files, ...batchRows].map((r) => r.id));
  const orphans = keys.filter((k) => !known.has(k.split('/')[1]!));
  if (orphans.length) throw new Error(`objects without a row (a refused request's leftovers): ${orphans.slice(0, 10).join(', ')}`);
}

/** A raw HTTP exchange: the status line and body of the first answer, or null when the server closed without one. */
async function raw(data: Buffer, waitMs = 4000): Promise<Answer | null> {
  const socket = net.connect(Number(new URL(svc.url).port), '127.0.0.1');
  let buf = Buffer.alloc(0);
  socket.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
  });
  socket.on('error', () => undefined);
  socket.write(data);
  const complete = () => {
    const at = buf.indexOf('\r\n\r\n');
    if (at < 0) return false;
    const length = /content-length:\s*(\d+)/i.exec(buf.subarray(0, at).toString('latin1'));
    return length ? buf.length >= at + 4 + Number(length[1]) : false;
  };
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, waitMs);
    const check = () => {
      if (complete()) {
        clearTimeout(timer);
        resolve();
      }
    };
    socket.on('data', check);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  socket.destroy();
  const text = buf.toString('latin1');
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  if (!m) return null;
  const bodyText = text.slice(text.indexOf('\r\n\r\n') + 4);
  let body: Json = null;
  try {
    body = JSON.parse(Buffer.from(bodyText, 'latin1').toString('utf8'));
  } catch {}
  return { status: Number(m[1]), body, text };
}

// ---------------------------------------------------------------------------------------------

describe('fuzz: hostile input is a clear 4xx, never a 5xx, a leak or a stuck batch', () => {
  it('multipart edits', async () => {
    await fc.assert(
      fc.asyncProperty(multipart, headers, async (form, h) => {
        await send('POST', '/v1/images/edits', { body: form.body, headers: { ...h, 'content-type': form.type } });
        await uploadsGone();
      }),
      opts(RUNS),
    );
    await noObjectWithoutRow();
  });

  it('JSON edits', async () => {
    await fc.assert(
      fc.asyncProperty(jsonEditBody, twist, headers, async (body, t, h) => {
        await send('POST', '/v1/images/edits', { body: jsonText(body, t), headers: { ...h, 'content-type': 'application/json' } });
        await uploadsGone();
      }),
      opts(RUNS),
    );
    await noObjectWithoutRow();
  });

  it('files: hostile images, names and purposes', async () => {
    const file = fc.record({
      purpose: mostly(fc.constantFrom('vision', 'vision', 'user_data', 'batch')),
      name: mostly(fc.constant('filename="a.png"'), fc.oneof(hostileString.map((n) => `filename="${n}"`), hostileString.map((n) => `filename*=UTF-8''${encodeBytes(n)}`))),
      bytes: image,
      expires: rarely(fc.tuple(mostly(fc.constant('created_at')), numberish)),
    });
    await fc.assert(
      fc.asyncProperty(file, async (f) => {
        const b = 'b0undary';
        const fields: [string, string][] = [['purpose', f.purpose], ...(f.expires ? ([['expires_after[anchor]', f.expires[0]], ['expires_after[seconds]', f.expires[1]]] as [string, string][]) : [])];
        const body = Buffer.concat([
          ...fields.map(([k, v]) => Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`)),
          Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="file"; ${f.name}\r\nContent-Type: image/png\r\n\r\n`),
          f.bytes,
          Buffer.from(`\r\n--${b}--\r\n`),
        ]);
        await send('POST', '/v1/files', { body, headers: { 'content-type': `multipart/form-data; boundary=${b}` } });
        await uploadsGone();
      }),
      opts(RUNS),
    );
    await noObjectWithoutRow();
  });

  it('JSON bodies of batches and webhook endpoints', async () => {
    const body = fc.record({
      path: fc.constantFrom('/v1/batches', '/v1/webhook_endpoints'),
      body: fc.oneof(
        fc.record(
          {
            input_file_id: fc.oneof(fc.constantFrom(...['0', '2']).map((i) => fileIds[Number(i)]!), hostileString),
            endpoint: fc.oneof(fc.constant('/v1/images/edits'), hostileString),
            completion_window: fc.oneof(fc.constant('24h'), hostileString),
            metadata,
            url: fc.oneof(fc.constantFrom('https://example.invalid/h', 'http://127.0.0.1/h', 'https://[fe80::1]/'), hostileString),
            events: fc.oneof(fc.array(hostileString, { maxLength: 3 }), fc.jsonValue({ maxDepth: 2 })),
            description: hostileString,
          },
          { requiredKeys: [] },
        ),
        fc.jsonValue({ maxDepth: 4 }),
      ),
      twist,
      key: rarely(headerValue),
    });
    await fc.assert(
      fc.asyncProperty(body, async (b) => {
        const a = await send('POST', b.path, { body: jsonText(b.body, b.twist), headers: { 'content-type': 'application/json', ...(b.key !== null ? { 'idempotency-key': b.key } : {}) } });
        if (b.path === '/v1/batches' && a.status === 200 && typeof a.body?.id === 'string') batches.push(a.body.id);
      }),
      opts(RUNS),
    );
  });

  it('ids in paths and list queries', async () => {
    await fc.assert(
      fc.asyncProperty(pathTemplate, idSegment, idSegment, async ([method, template], a, b) => {
        await send(method, template.replace('{a}', a).replace('{b}', b));
      }),
      opts(RUNS * 2),
    );
    await fc.assert(
      fc.asyncProperty(listQuery, async (q) => {
        const query = q.params.map(([k, v]) => `${encodeBytes(k)}=${encodeBytes(v)}`).join('&');
        await send('GET', `${q.path}${query ? `?${query}` : ''}`);
      }),
      opts(RUNS),
    );
  });

  it('headers and raw HTTP: body encodings, charsets, lying lengths, oversized and malformed headers', async () => {
    const request = fc.record({
      contentType: fc.oneof(fc.constantFrom('application/json', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'multipart/form-data', 'multipart/form-data; boundary=', 'text/plain', 'application/x-www-form-urlencoded'), headerValue),
      encoding: fc.option(fc.constantFrom('gzip', 'deflate', 'br', 'compress', 'identity', 'gzip, gzip')),
      body: fc.oneof(fc.constant('{"prompt":"x"}'), hostileString),
      path: fc.constantFrom('/v1/images/edits', '/v1/batches', '/v1/files', '/v1/webhook_endpoints'),
    });
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        await send('POST', r.path, { body: r.body, headers: { 'content-type': r.contentType, ...(r.encoding ? { 'content-encoding': r.encoding } : {}) } });
      }),
      opts(RUNS),
    );
    const rawRequest = fc.oneof(
      // the body promised by Content-Length never comes in full (cut by the body-idle timeout)
      fc.nat({ max: 50 }).map((n) => `POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${svc.apiKey}\r\nContent-Type: application/json\r\nContent-Length: ${n + 100}\r\n\r\n${'{'.repeat(n)}`),
      fc.integer({ min: 17_000, max: 40_000 }).map((n) => `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(n)}\r\n\r\n`),
      headerValue.map((v) => `GET /v1/models HTTP/1.1\r\nHost: x\r\n${v}\r\nConnection: close\r\n\r\n`),
      fc.constantFrom('GARBAGE\r\n\r\n', 'GET /v1/models HTTP/9.9\r\n\r\n', 'GET  HTTP/1.1\r\n\r\n', 'POST /v1/batches HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 'GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n'),
    );
    await fc.assert(
      fc.asyncProperty(rawRequest, async (text) => {
        const a = await raw(Buffer.from(text, 'latin1'));
        if (a) checkAnswer(a, `raw ${text.slice(0, 40)}`);
      }),
      opts(Math.max(3, Math.ceil(RUNS / 3))),
    );
  });

  it('batches of hostile lines all reach a final state', async () => {
    const lines = fc.integer({ min: 1, max: 6 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => batchLine(i))));
    await fc.assert(
      fc.asyncProperty(lines, async (ls) => {
        const b = 'b0undary';
        const body = Buffer.concat([
          Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--${b}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n`),
          Buffer.from(ls.join('\n')),
          Buffer.from(`\r\n--${b}--\r\n`),
        ]);
        const file = await send('POST', '/v1/files', { body, headers: { 'content-type': `multipart/form-data; boundary=${b}` } });
        if (file.status !== 200) return;
        const created = await send('POST', '/v1/batches', {
          body: JSON.stringify({ input_file_id: file.body.id, endpoint: '/v1/images/edits', completion_window: '24h' }),
          headers: { 'content-type': 'application/json' },
        });
        expect(created.status).toBe(200);
        batches.push(created.body.id);
        await untilFinal(created.body.id, 45_000);
      }),
      opts(Math.max(2, Math.ceil(RUNS / 6))),
    );
  });

  afterAll(async () => {
    // every batch ends (the hostile ones included), nothing leaked, the process is ready
    for (const id of batches) await untilFinal(id, 45_000);
    await noObjectWithoutRow();
    const ready = await fetch(`${svc.url}/readyz`);
    expect(ready.status).toBe(200);
    if (process.env.FUZZ_STATS) console.log([...stats].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${String(n).padStart(5)} ${k}`).join('\n'));
  });
});

async function untilFinal(batchId: string, timeoutMs: number): Promise<Json> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const a = await send('GET', `/v1/batches/${batchId}`);
    if (['completed', 'failed', 'cancelled', 'expired'].includes(a.body.status)) {
      const counts = a.body.request_counts;
      const kind = `batch ${a.body.status}${counts.completed ? ', some requests ran' : ''}${counts.failed ? ', some refused or failed' : ''}`;
      stats.set(kind, (stats.get(kind) ?? 0) + 1);
      // its result files are readable
      for (const id of [a.body.output_file_id, a.body.error_file_id]) if (id) await send('GET', `/v1/files/${id}/content`);
      return a.body;
    }
    if (Date.now() > end) throw new Error(`batch ${batchId} stuck ${a.body.status} ${JSON.stringify(a.body.request_counts)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
