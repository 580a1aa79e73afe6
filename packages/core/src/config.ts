import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { buildRegistry, parseRegistryDocument, type Registry, RegistryError } from './registry';
import { retryDelaysSchema } from './webhooks';

/**
 * The service's configuration, parsed once at startup from an environment object (only the apps'
 * entry points pass `process.env` in). A bad value stops the process with a message naming it.
 */
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);
const optionalString = z.string().trim().optional().transform((v) => (v ? v : undefined));
/** unset (or empty) = undefined: no limit */
const optionalNumber = (opts: { integer: boolean }) =>
  optionalString
    .transform((v) => (v === undefined ? undefined : Number(v)))
    .pipe((opts.integer ? z.number({ message: 'must be a whole number' }).int() : z.number({ message: 'must be a number' })).min(0, 'must be 0 or more (0: no limit)').max(Number.MAX_SAFE_INTEGER, 'is too large').optional());

export const envSchema = z.object({
  PORT: int(8080, 0),
  HOST: z.string().default('0.0.0.0'),
  PUBLIC_URL: optionalString,
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** auto: readable lines on a terminal, JSON lines otherwise (createLogger) */
  LOG_FORMAT: z.enum(['auto', 'json', 'pretty']).default('auto'),
  /** a bearer token GET /metrics requires when set (unset: open, for a scraper on a private network) */
  METRICS_TOKEN: optionalString,
  DATABASE_URL: z.string().url().default('postgresql://postgres@127.0.0.1:5432/image_edits'),
  DATABASE_POOL_SIZE: int(10, 1),
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  QUEUE_PREFIX: z.string().min(1).default('image-edits'),
  AWS_ENDPOINT_URL_S3: optionalString,
  AWS_REGION: z.string().default('us-east-1'),
  AWS_ACCESS_KEY_ID: optionalString,
  AWS_SECRET_ACCESS_KEY: optionalString,
  S3_BUCKET: z.string().min(3).default('image-edits'),
  S3_FORCE_PATH_STYLE: bool.optional(),
  LOCAL_S3_DIR: z.string().default('.data/s3'),
  // fixed, so result URLs handed out before a restart keep working
  LOCAL_S3_PORT: int(9000, 0),
  SIGNED_URL_TTL_SECONDS: int(3600, 1).refine((v) => v <= 7 * 24 * 3600, 'SIGNED_URL_TTL_SECONDS must be at most 604800 (S3 limit)'),
  DEFAULT_MODEL: z.string().default('local-inpaint'),
  SYNC_TIMEOUT_SECONDS: int(240, 1),
  /**
   * Slow clients (slowloris) hold neither sockets nor upload memory for long: the request line and
   * headers must arrive within HTTP_HEADERS_TIMEOUT_MS, the whole request (body included) within
   * HTTP_REQUEST_TIMEOUT_MS (0: no limit), and a body may go silent for at most
   * HTTP_BODY_IDLE_TIMEOUT_MS (0: no limit). None applies once the request has arrived: a sync wait is not cut.
   */
  HTTP_HEADERS_TIMEOUT_MS: int(20_000, 100),
  HTTP_REQUEST_TIMEOUT_MS: int(600_000, 0),
  HTTP_BODY_IDLE_TIMEOUT_MS: int(30_000, 0),
  MAX_INPUT_PIXELS: int(48_000_000, 1),
  UPLOAD_DIR: optionalString,
  /** largest file POST /v1/files accepts (images: also at most what the models accept) */
  MAX_FILE_BYTES: int(512 * 1024 * 1024, 1),
  /** let image_url reach loopback/private/link-local addresses, and plain http (tests, trusted networks only) */
  IMAGE_URL_ALLOW_PRIVATE: bool.default(false),
  IMAGE_URL_TIMEOUT_MS: int(30_000, 100),
  /** a PEM file of CAs trusted for image_url https fetches besides Node's own (private CAs) */
  IMAGE_URL_CA_FILE: optionalString.refine((f) => f === undefined || existsSync(f), 'IMAGE_URL_CA_FILE names a file that does not exist'),
  OPENAI_API_KEY: optionalString,
  OPENAI_BASE_URL: optionalString,
  AZURE_OPENAI_ENDPOINT: optionalString,
  AZURE_OPENAI_API_KEY: optionalString,
  OPENAI_API_VERSION: z.string().default('2025-04-01-preview'),
  /** model=deployment pairs, comma separated: "gpt-image-1=my-gpt-image,dall-e-2=dalle" */
  AZURE_OPENAI_DEPLOYMENTS: z.string().default(''),
  STABILITY_API_KEY: optionalString,
  STABILITY_BASE_URL: optionalString,
  GEMINI_API_KEY: optionalString,
  GEMINI_BASE_URL: optionalString,
  FAL_KEY: optionalString,
  /** replaces https://queue.fal.run (a proxy, or a fake in tests) */
  FAL_BASE_URL: optionalString,
  REPLICATE_API_TOKEN: optionalString,
  REPLICATE_BASE_URL: optionalString,
  /** a registry file (config/models.json's shape) merged over the built-in one */
  MODEL_REGISTRY_FILE: optionalString,
  /** inline registry JSON merged last */
  MODEL_REGISTRY: optionalString,
  PROVIDER_TIMEOUT_MS: int(600_000, 1000),
  /** provider calls one worker runs at once per provider (the registry's default `concurrency`): sized for I/O, bounded by WORKER_MAX_INFLIGHT_BYTES */
  WORKER_CONCURRENCY: int(64, 1),
  /** a worker's budget of image bytes held by running jobs (inputs, their upload copy, outputs): a job that does not fit waits, no attempt spent */
  WORKER_MAX_INFLIGHT_BYTES: int(512 * 1024 * 1024, 1024 * 1024),
  JOB_ATTEMPTS: int(3, 1),
  JOB_BACKOFF_MS: int(2000, 0),
  /** a worker's Prometheus endpoint (GET /metrics on HOST:WORKER_METRICS_PORT; METRICS_TOKEN applies as on the API); 0 = off */
  WORKER_METRICS_PORT: int(9464, 0).refine((v) => v <= 65535, 'WORKER_METRICS_PORT must be a TCP port (0 = off)'),
  WORKER_LOCK_DURATION_MS: int(30_000, 1000),
  WORKER_STALLED_INTERVAL_MS: int(30_000, 500),
  /** how long a SIGTERMed API or worker may take to finish what it holds (open requests, jobs in flight) before it exits anyway */
  SHUTDOWN_TIMEOUT_MS: int(30_000, 0),
  /** jobs one API key may run at once per provider, across all workers, unless its key sets its own (0 = no cap) */
  KEY_MAX_CONCURRENT_JOBS: int(0, 0),
  /** per-key defaults a key's own settings override: requests and images per minute, USD per calendar month (UTC); unset or 0 = unlimited */
  KEY_RPM: optionalNumber({ integer: true }),
  KEY_IPM: optionalNumber({ integer: true }),
  KEY_MONTHLY_BUDGET_USD: optionalNumber({ integer: false }),
  /** how long a final job keeps its inputs and its result in S3 (a key may set its own), and how long the row of an expired or deleted job stays (usage stays for good) */
  INPUT_RETENTION_SECONDS: int(3600, 0),
  RESULT_RETENTION_SECONDS: int(604_800, 0),
  JOB_ROW_RETENTION_DAYS: int(90, 0),
  /**
   * how long a job waits out an outage of our own Postgres, Redis or S3 (retried with capped backoff,
   * no provider attempt spent) before it is failed as `dependency_unavailable`
   */
  DEPENDENCY_OUTAGE_TOLERANCE_MS: int(900_000, 1000),
  /** the longest pause between two tries of a dependency that is down */
  DEPENDENCY_RETRY_MAX_MS: int(10_000, 10),
  /** how long a submission waits for its enqueue before answering 202 and leaving the job to the reconciler */
  ENQUEUE_TIMEOUT_MS: int(2000, 50),
  /** a sync request whose client left (or got a 504) is attached to by an identical submission of the same key within this window */
  RETRY_ATTACH_WINDOW_SECONDS: int(900, 0),
  RECONCILE_INTERVAL_MS: int(60_000, 100),
  RECONCILE_GRACE_MS: int(60_000, 0),
  /** delay before each webhook delivery attempt, first included; Standard Webhooks' schedule by default */
  WEBHOOK_RETRY_DELAYS_MS: retryDelaysSchema,
  /** deliver webhooks to loopback/private/link-local addresses too (tests, trusted networks only) */
  WEBHOOK_ALLOW_PRIVATE: bool.default(false),
  WEBHOOK_TIMEOUT_MS: int(10_000, 100),
  /** how often queued jobs past their Cancel-After deadline are expired */
  DEADLINE_SWEEP_INTERVAL_MS: int(1000, 50),
});

export type Env = z.infer<typeof envSchema>;

export interface ServiceConfig {
  env: Env;
  s3: { endpoint?: string; region: string; bucket: string; accessKeyId?: string; secretAccessKey?: string; forcePathStyle: boolean };
  azureDeployments: Record<string, string>;
  registry: Registry;
}

/** The built-in registry, shipped with the code. */
export const DEFAULT_REGISTRY_FILE = path.resolve(__dirname, '../../../config/models.json');

export class ConfigError extends Error {}

export function parseConfig(source: Record<string, string | undefined>): ServiceConfig {
  const result = envSchema.safeParse(source);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const env = result.data;
  const azureDeployments: Record<string, string> = {};
  for (const pair of env.AZURE_OPENAI_DEPLOYMENTS.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [model, deployment] = pair.split('=').map((s) => s.trim());
    if (!model || !deployment) throw new ConfigError(`invalid configuration:\n  AZURE_OPENAI_DEPLOYMENTS: '${pair}' is not model=deployment`);
    azureDeployments[model] = deployment;
  }
  if (env.AZURE_OPENAI_ENDPOINT && !env.AZURE_OPENAI_API_KEY) throw new ConfigError('invalid configuration:\n  AZURE_OPENAI_API_KEY is required with AZURE_OPENAI_ENDPOINT');
  if (env.HTTP_REQUEST_TIMEOUT_MS > 0 && env.HTTP_HEADERS_TIMEOUT_MS > env.HTTP_REQUEST_TIMEOUT_MS) {
    throw new ConfigError('invalid configuration:\n  HTTP_HEADERS_TIMEOUT_MS must not be longer than HTTP_REQUEST_TIMEOUT_MS');
  }
  return {
    env,
    azureDeployments,
    registry: loadRegistry(env),
    s3: {
      ...(env.AWS_ENDPOINT_URL_S3 ? { endpoint: env.AWS_ENDPOINT_URL_S3 } : {}),
      region: env.AWS_REGION,
      bucket: env.S3_BUCKET,
      ...(env.AWS_ACCESS_KEY_ID ? { accessKeyId: env.AWS_ACCESS_KEY_ID } : {}),
      ...(env.AWS_SECRET_ACCESS_KEY ? { secretAccessKey: env.AWS_SECRET_ACCESS_KEY } : {}),
      // custom endpoints (MinIO, s3rver) want path-style URLs; AWS itself does not
      forcePathStyle: env.S3_FORCE_PATH_STYLE ?? !!env.AWS_ENDPOINT_URL_S3,
    },
  };
}

function loadRegistry(env: Env): Registry {
  const readJson = (file: string, name: string): unknown => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`invalid configuration:\n  ${name}: cannot read ${file}: ${(err as Error).message}`);
    }
    return parseJson(text, `${name} (${file})`);
  };
  const parseJson = (text: string, name: string): unknown => {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`invalid configuration:\n  ${name}: not valid JSON: ${(err as Error).message}`);
    }
  };
  try {
    const docs = [parseRegistryDocument(readJson(DEFAULT_REGISTRY_FILE, 'built-in registry'), 'config/models.json')];
    if (env.MODEL_REGISTRY_FILE) docs.push(parseRegistryDocument(readJson(env.MODEL_REGISTRY_FILE, 'MODEL_REGISTRY_FILE'), env.MODEL_REGISTRY_FILE));
    if (env.MODEL_REGISTRY) docs.push(parseRegistryDocument(parseJson(env.MODEL_REGISTRY, 'MODEL_REGISTRY'), 'MODEL_REGISTRY'));
    return buildRegistry(docs, {
      concurrency: env.WORKER_CONCURRENCY,
      attempts: env.JOB_ATTEMPTS,
      backoffMs: env.JOB_BACKOFF_MS,
      rateLimit: null,
      maxRateLimitWaits: 10,
      timeoutMs: env.PROVIDER_TIMEOUT_MS,
    });
  } catch (err) {
    if (err instanceof RegistryError) throw new ConfigError(err.message);
    throw err;
  }
}
