import { z } from 'zod';

/**
 * An OpenAPI 3.1 document generated from zod schemas (draft 2020-12, the dialect of OpenAPI 3.1):
 * the API's route table (apps/api/src/openapi.ts) names, per operation, the schemas its route
 * validates the request with and the schemas of its answers; nothing here is written by hand.
 * Named schemas become `components.schemas` (requests read as a client sends them, answers as the
 * service renders them) and are referenced wherever they appear.
 */

type Json = Record<string, unknown>;
type ZodObjectLike = z.ZodType;

export interface MediaSpec {
  schema: z.ZodType;
  /** text/event-stream: the data of each event, by event name (`x-events`) */
  events?: Record<string, z.ZodType>;
}

export interface ResponseSpec {
  description: string;
  content?: Record<string, z.ZodType | MediaSpec>;
  headers?: Record<string, { description: string; schema?: z.ZodType }>;
}

export interface OperationSpec {
  method: 'get' | 'post' | 'delete';
  /** OpenAPI's form: /v1/jobs/{id} */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: string;
  /** `bearer`: the API key (the default); `none`; or the name of another security scheme, optional */
  security?: 'bearer' | 'none' | { optional: string };
  params?: ZodObjectLike;
  query?: ZodObjectLike;
  headers?: ZodObjectLike;
  body?: { required: boolean; content: Record<string, z.ZodType>; description?: string };
  responses: Record<number, ResponseSpec>;
}

export interface DocumentSpec {
  info: { title: string; version: string; description: string };
  tags: { name: string; description: string }[];
  securitySchemes: Record<string, Json>;
  requestComponents: Record<string, z.ZodType>;
  responseComponents: Record<string, z.ZodType>;
  operations: OperationSpec[];
}

const COMPONENT_URI = (id: string) => `#/components/schemas/${id}`;
const INLINE = '__inline';

/** The OpenAPI 3.1 document of `spec`. */
export function openApiDocument(spec: DocumentSpec): Json {
  const input = converter(spec.requestComponents, 'input');
  const output = converter(spec.responseComponents, 'output');
  const paths: Record<string, Record<string, Json>> = {};
  for (const op of spec.operations) {
    const item = paths[op.path] ?? {};
    paths[op.path] = item;
    if (item[op.method]) throw new Error(`two operations for ${op.method.toUpperCase()} ${op.path}`);
    item[op.method] = operation(op, input, output);
  }
  return {
    openapi: '3.1.0',
    info: spec.info,
    jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base',
    tags: spec.tags,
    security: [{ apiKey: [] }],
    paths,
    components: { schemas: { ...input.components, ...output.components }, securitySchemes: spec.securitySchemes },
  };
}

interface Converter {
  components: Record<string, Json>;
  /** a schema inline, its named parts as references */
  inline(schema: z.ZodType): Json;
}

/** Named schemas as components, and any schema inline with references to them, in one direction (`io`). */
function converter(named: Record<string, z.ZodType>, io: 'input' | 'output'): Converter {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(named)) registry.add(schema, { id });
  const common = { target: 'draft-2020-12', io, unrepresentable: 'any', uri: COMPONENT_URI } as const;
  const all = z.toJSONSchema(registry, common).schemas as Record<string, Json>;
  if (all.__shared) throw new Error('a schema is shared between components without a name: name it');
  const components = Object.fromEntries(Object.entries(all).map(([id, s]) => [id, clean(s)]));
  return {
    components,
    inline(schema) {
      const id = registry.get(schema)?.id;
      if (id) return { $ref: COMPONENT_URI(id) };
      // zod converts a schema against a registry of others only when it is registered itself: for the call
      const defs: Record<string, Json> = {};
      registry.add(schema, { id: INLINE });
      try {
        const out = z.toJSONSchema(schema, { ...common, external: { registry, uri: COMPONENT_URI, defs } } as Parameters<typeof z.toJSONSchema>[1]) as Json;
        if (Object.keys(defs).length > 0) throw new Error('a schema is shared without a name: name it');
        return clean(out);
      } finally {
        registry.remove(schema);
      }
    },
  };
}

/** Without the per-schema `$schema` and `$id`: the document's dialect applies. */
function clean(s: Json): Json {
  const { $schema: _schema, $id: _id, ...rest } = s;
  return rest;
}

function operation(op: OperationSpec, input: Converter, output: Converter): Json {
  const parameters = [...parametersOf(op.params, 'path', input), ...parametersOf(op.query, 'query', input), ...parametersOf(op.headers, 'header', input)];
  const out: Json = { operationId: op.operationId, summary: op.summary, tags: [op.tag] };
  if (op.description) out.description = op.description;
  if (op.security === 'none') out.security = [];
  else if (typeof op.security === 'object') out.security = [{ [op.security.optional]: [] }, {}];
  if (parameters.length) out.parameters = parameters;
  if (op.body) {
    out.requestBody = {
      required: op.body.required,
      ...(op.body.description ? { description: op.body.description } : {}),
      content: Object.fromEntries(Object.entries(op.body.content).map(([type, schema]) => [type, { schema: input.inline(schema) }])),
    };
  }
  out.responses = Object.fromEntries(
    Object.entries(op.responses).map(([status, r]) => {
      const response: Json = { description: r.description };
      if (r.headers) {
        response.headers = Object.fromEntries(
          Object.entries(r.headers).map(([name, h]) => [name, { description: h.description, schema: h.schema ? output.inline(h.schema) : { type: 'string' } }]),
        );
      }
      if (r.content) {
        response.content = Object.fromEntries(
          Object.entries(r.content).map(([type, media]) => {
            const m: MediaSpec = media instanceof z.ZodType ? { schema: media } : media;
            const body: Json = { schema: output.inline(m.schema) };
            if (m.events) body['x-events'] = Object.fromEntries(Object.entries(m.events).map(([name, s]) => [name, output.inline(s)]));
            return [type, body];
          }),
        );
      }
      return [status, response];
    }),
  );
  return out;
}

/** One parameter per property of an object schema (read as the client sends it). */
function parametersOf(schema: ZodObjectLike | undefined, where: 'path' | 'query' | 'header', input: Converter): Json[] {
  if (!schema) return [];
  const json = input.inline(schema);
  const props = (json.properties ?? {}) as Record<string, Json>;
  const required = new Set((json.required ?? []) as string[]);
  return Object.entries(props).map(([name, s]) => {
    const { description, ...rest } = s;
    const p: Json = { name, in: where, required: where === 'path' || required.has(name), schema: rest };
    if (description) p.description = description;
    // lists: repeated (`x=a&x=b`); the schema's description says what else is taken
    if (where === 'query' && rest.type === 'array') Object.assign(p, { style: 'form', explode: true });
    return p;
  });
}
