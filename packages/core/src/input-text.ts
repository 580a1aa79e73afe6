import { invalidRequest, type ServiceError } from './errors';

/**
 * One rule for client input before it can reach Postgres: text may not hold U+0000 (text and jsonb
 * refuse it, 22021/22P05) nor a lone UTF-16 surrogate (not encodable as UTF-8; jsonb refuses its
 * escape), and structures may not nest deeper than MAX_INPUT_DEPTH (recursive code further on, such
 * as an Idempotency-Key's digest, must never meet a 5,000-level body). The API checks every body,
 * query, path and upload filename with it before a route runs; a batch checks each line with it.
 */

/** Deeper than any request of this API needs (an edit's JSON form is 3 levels), far below a stack overflow. */
export const MAX_INPUT_DEPTH = 32;

export type InputFlawKind = 'nul' | 'lone_surrogate' | 'too_deep';

export interface InputFlaw {
  kind: InputFlawKind;
  /** where: keys and indexes from the root; for a flawed key, the path of the object holding it */
  path: (string | number)[];
  /** the flaw is in a key (a field name), not in a value */
  inKey: boolean;
}

// U+0000, a high surrogate not followed by a low one, or a low one not preceded by a high one
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what this looks for
const UNSAFE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: the same, every match
const UNSAFE_ALL = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** What is wrong with one string, if anything. */
export function textFlaw(s: string): 'nul' | 'lone_surrogate' | null {
  const m = UNSAFE.exec(s);
  if (!m) return null;
  return m[0] === '\u0000' ? 'nul' : 'lone_surrogate';
}

/**
 * The first flaw in a value (strings, keys, arrays, plain objects; anything else is fine), walked
 * without recursion so that no nesting can overflow the stack. Null when the value is fine.
 */
export function findInputFlaw(value: unknown, maxDepth = MAX_INPUT_DEPTH): InputFlaw | null {
  const stack: { v: unknown; path: (string | number)[] }[] = [{ v: value, path: [] }];
  while (stack.length > 0) {
    const { v, path } = stack.pop()!;
    if (typeof v === 'string') {
      const kind = textFlaw(v);
      if (kind) return { kind, path, inKey: false };
      continue;
    }
    if (typeof v !== 'object' || v === null || v instanceof Date || Buffer.isBuffer(v)) continue;
    if (path.length >= maxDepth) return { kind: 'too_deep', path, inKey: false };
    const entries: [string | number, unknown][] = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v);
    // pushed in reverse so the first field is looked at first: the error names the earliest flaw
    for (let i = entries.length - 1; i >= 0; i--) {
      const [k, x] = entries[i]!;
      if (typeof k === 'string') {
        const kind = textFlaw(k);
        if (kind) return { kind, path, inKey: true };
      }
      stack.push({ v: x, path: [...path, k] });
    }
  }
  return null;
}

/** `images[0].file_id`, `metadata.color`: a path as this API names parameters; flawed keys are shown escaped. */
export function paramName(path: (string | number)[]): string | null {
  let out = '';
  for (const k of path) out += typeof k === 'number' ? `[${k}]` : `${out ? '.' : ''}${printable(k)}`;
  return out || null;
}

const WHAT: Record<InputFlawKind, string> = {
  nul: 'a NUL character (U+0000)',
  lone_surrogate: 'an unpaired UTF-16 surrogate (not valid Unicode)',
  too_deep: 'nesting',
};

/**
 * The 400 of a flaw: `invalid_value` naming the field (`root` names where the value came from, for
 * a flaw at its top: the query parameter, the upload). The message never repeats the text itself.
 */
export function inputFlawError(flaw: InputFlaw, root: (string | number)[] = []): ServiceError {
  const path = [...root, ...flaw.path];
  const param = paramName(path);
  if (flaw.kind === 'too_deep') {
    return invalidRequest(`${param ?? 'the request body'} is nested more than ${MAX_INPUT_DEPTH} levels deep; no parameter of this API is`, param, 'invalid_value');
  }
  const where = flaw.inKey ? (param ? `a key of ${param}` : 'a field name') : (param ?? 'the request');
  return invalidRequest(`${where} contains ${WHAT[flaw.kind]}, which is not accepted in text; remove it`, param, 'invalid_value');
}

/** The text with each NUL and unpaired surrogate replaced by U+FFFD: what can always be stored, or shown. */
export function storableText(s: string): string {
  return UNSAFE.test(s) ? s.replace(UNSAFE_ALL, '\ufffd') : s;
}

/** Text as a message may quote it: NUL and unpaired surrogates escaped (`\u0000`), so a stored message stays storable. */
export function printable(s: string): string {
  return UNSAFE.test(s) ? s.replace(UNSAFE_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) : s;
}

/**
 * A copy of a JSON-like value whose every string and key is storable (see storableText), for our
 * own documents (an answer kept for an Idempotency-Key replay) that may quote a client's text.
 * Bounded by MAX_INPUT_DEPTH: deeper parts are cut (they never come from this API's own answers).
 */
export function storableJson<T>(value: T): T {
  const walk = (v: unknown, depth: number): unknown => {
    if (typeof v === 'string') return storableText(v);
    if (typeof v !== 'object' || v === null || v instanceof Date) return v;
    if (depth >= MAX_INPUT_DEPTH) return null;
    if (Array.isArray(v)) return v.map((x) => walk(x, depth + 1));
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [storableText(k), walk(x, depth + 1)]));
  };
  return walk(value, 0) as T;
}
