import { z } from 'zod';
import { invalidRequest, type ServiceError } from './errors';

/**
 * The zod side of the API's request checks: helpers that build the schemas of query parameters,
 * path ids and bodies (declared once in api-schemas.ts, which the OpenAPI document is generated
 * from), and `parseInput`, which turns a schema's first issue into the 400 clients get: OpenAI's
 * error with a `param` naming the field and a `code`:
 *
 * - a custom issue's `params.code` (and `params.param`) when the schema gives one;
 * - `unknown_parameter` for a field the schema does not know (a strict object);
 * - `missing_required_parameter` for an absent required one;
 * - `invalid_value` otherwise.
 *
 * Messages are the schemas' own (each says what to fix).
 */

/** 9999-12-31T23:59:59Z: the largest time Postgres (and a JS Date) compares with. */
export const MAX_UNIX_SECONDS = 253_402_300_799;

export interface InputErrorOptions {
  /** the first issue as some other error (a malformed path id is the resource's 404) */
  orElse?: (issue: z.core.$ZodIssue) => ServiceError;
}

/** A value checked by `schema`, or the ServiceError its first issue means (see above). */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, opts: InputErrorOptions = {}): z.output<S> {
  // with each issue's input: an absent field (missing_required_parameter) is told from a wrong one
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  // a field the endpoint does not know is named first, whatever else is wrong
  const issue = r.error.issues.find((i) => i.code === 'unrecognized_keys') ?? r.error.issues[0]!;
  if (opts.orElse) throw opts.orElse(issue);
  throw inputError(issue);
}

/** The 400 one issue means. */
export function inputError(issue: z.core.$ZodIssue): ServiceError {
  const params = (issue.code === 'custom' ? issue.params : undefined) as { code?: string; param?: string | null } | undefined;
  if (issue.code === 'unrecognized_keys') return invalidRequest(issue.message, issue.keys[0] ?? null, 'unknown_parameter');
  const param = params?.param !== undefined ? params.param : issueParam(issue.path);
  const missing = issue.code === 'invalid_type' && issue.input === undefined;
  return invalidRequest(issue.message, param, params?.code ?? (missing ? 'missing_required_parameter' : 'invalid_value'));
}

/** `images[1].file_id` from ['images', 1, 'file_id']; null for the whole input. */
export function issueParam(path: readonly PropertyKey[]): string | null {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out || null;
}

/** A custom issue with the code (and param) of its 400. */
export function customIssue(message: string, input: unknown, code = 'invalid_value', param?: string | null): z.core.$ZodRawIssue {
  return { code: 'custom', message, input, params: param === undefined ? { code } : { code, param } };
}

/**
 * An integer query parameter: the text of a whole number (as `Number` reads it) from `min` to `max`;
 * documented as the integer it stands for. Anything else (another number, a word, a repeated
 * parameter) is a 400 with `message`. `emptyIsAbsent`: `?name=` counts as not given.
 */
export function queryInt(name: string, min: number, max: number, opts: { emptyIsAbsent?: boolean; message?: string } = {}) {
  const message = opts.message ?? `${name} must be an integer from ${min} to ${max}`;
  const empty = opts.emptyIsAbsent ?? true;
  return z.preprocess(
    (v) => (v === '' && empty ? undefined : typeof v === 'string' ? Number(v) : v),
    z.number({ error: message }).int({ error: message }).min(min, { error: message }).max(max, { error: message }).optional(),
  );
}

/**
 * A query parameter given at most once: a repeated one is a 400 `${name} must be given once`
 * (Express hands it over as a list).
 */
export function querySingle<T extends z.ZodType>(name: string, inner: T) {
  return z.preprocess((v, ctx) => {
    if (Array.isArray(v)) {
      ctx.issues.push(customIssue(`${name} must be given once`, v));
      return z.NEVER;
    }
    return v;
  }, inner);
}

/**
 * A list query parameter: repeated (`x=a&x=b`), with brackets (`x[]=a`, merged in by `mergeBracketLists`)
 * or comma separated; trimmed, at most 100 items of at most 200 characters, duplicates dropped.
 * `item` checks each one (`message` names the item); the document lists `values` when given.
 */
export function queryList(name: string, item?: { ok: (v: string) => boolean; message: (v: string) => string; values?: readonly string[] }) {
  const items = item?.values ? z.enum(item.values as [string, ...string[]]) : z.string();
  return z
    .preprocess(
      (v, ctx) => {
        if (v === undefined) return undefined;
        const values = Array.isArray(v) ? v : [v];
        const out: string[] = [];
        for (const x of values) {
          if (typeof x !== 'string') {
            ctx.issues.push(customIssue(`${name} must be a list of strings`, v));
            return z.NEVER;
          }
          for (const part of x.split(',')) {
            const one = part.trim();
            if (!one || one.length > 200) {
              ctx.issues.push(customIssue(`${name} has an empty or overlong item`, v));
              return z.NEVER;
            }
            out.push(one);
          }
        }
        if (out.length > 100) {
          ctx.issues.push(customIssue(`${name} takes at most 100 items`, v));
          return z.NEVER;
        }
        const bad = item ? out.find((x) => !item.ok(x)) : undefined;
        if (bad !== undefined && item) {
          ctx.issues.push(customIssue(item.message(bad), v));
          return z.NEVER;
        }
        return [...new Set(out)];
      },
      z.array(items).optional(),
    )
    .meta({ description: `repeat the parameter (${name}=a&${name}=b), use ${name}[]=a, or separate with commas` });
}

/**
 * Express's query as the list parameters expect it: `name[]` merged into `name` for each list
 * parameter; `other[]` of a known single parameter ignored (as it always was); anything else is
 * left for the strict schema to name as unknown.
 */
export function mergeBracketLists(query: Record<string, unknown>, known: readonly string[], lists: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(query)) {
    const base = k.endsWith('[]') ? k.slice(0, -2) : k;
    if (base === k || !known.includes(base)) {
      if (base === k && lists.includes(k)) out[k] = [...asList(out[k]), ...asList(v)];
      else out[k] = v;
    } else if (lists.includes(base)) out[base] = [...asList(out[base]), ...asList(v)];
  }
  return out;
}

const asList = (v: unknown): unknown[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
