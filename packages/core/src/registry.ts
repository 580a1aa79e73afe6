import { z } from 'zod';
import { FAMILY_CAPABILITIES, MODEL_FAMILIES, type ModelCapabilities, type ModelPrice, PROVIDER_IDS, type ProviderId } from './models';

/**
 * The model registry as configuration: config/models.json, then MODEL_REGISTRY_FILE, then the
 * inline MODEL_REGISTRY JSON, each merged over the one before (a model entry replaces the whole
 * entry of the same id; `null` removes it; provider settings merge field by field). Parsed and
 * validated once at startup: a mistake stops the process with the path of the bad field.
 */
const money = z.number().min(0);
export const priceSchema = z
  .object({
    perImage: money.optional(),
    bySize: z.record(z.string(), money).optional(),
    byQuality: z.record(z.string(), z.record(z.string(), money)).optional(),
    perMegapixel: money.optional(),
    tokens: z.object({ inputText: money, inputImage: money, output: money }).strict().optional(),
  })
  .strict()
  .refine((p) => Object.values(p).some((v) => v !== undefined), 'a price needs at least one of perImage, bySize, byQuality, perMegapixel, tokens');

const formats = z.array(z.enum(['png', 'jpeg', 'webp']));
const capabilitiesSchema = z
  .object({
    maxImages: z.number().int().min(1).max(16),
    imageFormats: formats.min(1),
    maxImageBytes: z.number().int().min(1),
    maxMaskBytes: z.number().int().min(1),
    maxPromptChars: z.number().int().min(1),
    sizes: z.array(z.string()).min(1),
    defaultSize: z.string(),
    requiresSquare: z.boolean(),
    acceptsMask: z.boolean(),
    needsTransparencyWithoutMask: z.boolean(),
    needsSearchPrompt: z.boolean(),
    qualities: z.array(z.string()),
    backgrounds: z.array(z.string()),
    outputFormats: formats.min(1),
    supportsOutputCompression: z.boolean(),
    inputFidelities: z.array(z.string()),
    defaultResponseFormat: z.enum(['url', 'b64_json']),
    moderations: z.array(z.enum(['auto', 'low'])),
    acceptsSafetyIdentifier: z.boolean(),
    streams: z.boolean(),
  })
  .strict()
  .partial();

const targetSchema = z
  .object({
    provider: z.enum(PROVIDER_IDS),
    /** upstream model name; for azure-openai the model whose deployment AZURE_OPENAI_DEPLOYMENTS names */
    model: z.string().min(1),
    /** azure-openai: the deployment, instead of looking it up in AZURE_OPENAI_DEPLOYMENTS */
    deployment: z.string().min(1).optional(),
    price: priceSchema.optional(),
  })
  .strict();

const modelSchema = z
  .object({
    family: z.enum(MODEL_FAMILIES),
    capabilities: capabilitiesSchema.optional(),
    targets: z.array(targetSchema).min(1),
    price: priceSchema,
  })
  .strict();

const providerSettingsSchema = z
  .object({
    /** jobs one worker process runs at once for this provider */
    concurrency: z.number().int().min(1).max(1000),
    /** tries per target before the job fails or moves to the next target */
    attempts: z.number().int().min(1).max(50),
    /** base of the exponential backoff between tries */
    backoffMs: z.number().int().min(0),
    /** BullMQ limiter, shared by every worker: at most `max` calls per `durationMs` */
    rateLimit: z.object({ max: z.number().int().min(1), durationMs: z.number().int().min(1) }).strict().nullable(),
    /** how many 429 answers one job may wait out on one target before the target counts as spent */
    maxRateLimitWaits: z.number().int().min(0).max(1000),
    timeoutMs: z.number().int().min(1000),
  })
  .strict()
  .partial();

export const registryDocumentSchema = z
  .object({
    $comment: z.string().optional(),
    providers: z.partialRecord(z.enum(PROVIDER_IDS), providerSettingsSchema).optional(),
    models: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'model ids are letters, digits and . _ : - (no /: provider/model ids are made for you)'), modelSchema.nullable()).optional(),
  })
  .strict();

export type RegistryDocument = z.infer<typeof registryDocumentSchema>;
export interface ProviderSettings {
  concurrency: number;
  attempts: number;
  backoffMs: number;
  rateLimit: { max: number; durationMs: number } | null;
  maxRateLimitWaits: number;
  timeoutMs: number;
}

export interface RegistryModel {
  id: string;
  capabilities: ModelCapabilities;
  targets: Array<{ provider: ProviderId; model: string; deployment?: string | undefined; price?: ModelPrice | undefined }>;
  price: ModelPrice;
}

export interface Registry {
  models: Map<string, RegistryModel>;
  providers: Record<ProviderId, ProviderSettings>;
}

export class RegistryError extends Error {}

/** Parses one registry document; `source` names it in error messages. */
export function parseRegistryDocument(raw: unknown, source: string): RegistryDocument {
  const result = registryDocumentSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${source}: ${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new RegistryError(`invalid model registry:\n${lines.join('\n')}`);
  }
  return result.data;
}

/** Merges documents in order and fills provider settings from the defaults. */
export function buildRegistry(documents: RegistryDocument[], defaults: ProviderSettings): Registry {
  const models = new Map<string, RegistryModel>();
  const providerOverrides: Partial<Record<ProviderId, z.infer<typeof providerSettingsSchema>>> = {};
  for (const doc of documents) {
    for (const [id, entry] of Object.entries(doc.models ?? {})) {
      if (entry === null) {
        models.delete(id);
        continue;
      }
      const capabilities: ModelCapabilities = { ...FAMILY_CAPABILITIES[entry.family], ...stripUndefined(entry.capabilities ?? {}) };
      if (!capabilities.sizes.includes(capabilities.defaultSize)) {
        throw new RegistryError(`invalid model registry:\n  models.${id}.capabilities.defaultSize '${capabilities.defaultSize}' is not one of its sizes`);
      }
      models.set(id, { id, capabilities, targets: entry.targets, price: entry.price });
    }
    for (const [provider, settings] of Object.entries(doc.providers ?? {}) as Array<[ProviderId, z.infer<typeof providerSettingsSchema>]>) {
      providerOverrides[provider] = { ...providerOverrides[provider], ...stripUndefined(settings) };
    }
  }
  const providers = {} as Record<ProviderId, ProviderSettings>;
  for (const id of PROVIDER_IDS) providers[id] = { ...defaults, ...stripUndefined(providerOverrides[id] ?? {}) } as ProviderSettings;
  return { models, providers };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
