import { parseArgs } from 'node:util';
import { createApiKey, type KeySettingsPatch, revokeApiKey, setKeySettings } from '../api-keys';
import { createDb } from '../client';
import { DEFAULT_DATABASE_URL } from '../defaults';
import { migrate } from '../migrate';

const USAGE = [
  'usage: npm run keys -- create --name NAME [--admin] [LIMITS]',
  '       npm run keys -- set --id KEY_ID [--admin | --no-admin] [LIMITS]',
  '       npm run keys -- revoke --id KEY_ID',
  '',
  'LIMITS (each a number, or `default` for the deployment-wide setting in brackets):',
  '  --rpm N                        requests per minute (POST /v1/images/edits, POST /v1/batches); 0 = no limit [KEY_RPM]',
  '  --ipm N                        images per minute (the n of each edit; batch children are paced by it); 0 = no limit [KEY_IPM]',
  '  --monthly-budget-usd X         USD per calendar month (UTC), checked at submission; 0 = no budget [KEY_MONTHLY_BUDGET_USD]',
  '  --max-concurrent N             jobs of the key that may run at once per provider; 0 = no cap [KEY_MAX_CONCURRENT_JOBS]',
  '  --input-retention-seconds N    how long a finished job keeps its input images [INPUT_RETENTION_SECONDS]',
  '  --result-retention-seconds N   how long a finished job keeps its result (expires_at) [RESULT_RETENTION_SECONDS]',
  '--admin: the key reads every key\'s usage and costs (GET /v1/organization/usage/images, /v1/organization/costs).',
  'Changes reach the API and the workers within 5 s; a retention applies to jobs submitted from then on.',
].join('\n');

class UsageError extends Error {}

/** A whole number, or `default` (null); undefined when absent. */
function wholeOrDefault(flag: string, value: string | undefined): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'default') return null;
  if (!/^\d{1,10}$/.test(value) || Number(value) > 2_147_483_647) throw new UsageError(`--${flag} takes a whole number or 'default', not '${value}'`);
  return Number(value);
}

/** An amount of USD (up to cents), or `default` (null); undefined when absent. */
function usdOrDefault(flag: string, value: string | undefined): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'default') return null;
  if (!/^\d{1,10}(\.\d{1,2})?$/.test(value)) throw new UsageError(`--${flag} takes an amount of USD such as 25 or 99.50, or 'default', not '${value}'`);
  return Number(value);
}

function describe(p: KeySettingsPatch): string {
  const show = (v: number | null, unit: string, none: string, env: string) => (v === null ? `default (${env})` : v === 0 ? none : `${v} ${unit}`);
  const parts: string[] = [];
  if (p.admin !== undefined) parts.push(p.admin ? 'admin' : 'not admin');
  if (p.requestsPerMinute !== undefined) parts.push(`rpm: ${show(p.requestsPerMinute, 'requests/min', 'no limit', 'KEY_RPM')}`);
  if (p.imagesPerMinute !== undefined) parts.push(`ipm: ${show(p.imagesPerMinute, 'images/min', 'no limit', 'KEY_IPM')}`);
  if (p.monthlyBudgetUsd !== undefined) parts.push(`monthly budget: ${p.monthlyBudgetUsd === null ? 'default (KEY_MONTHLY_BUDGET_USD)' : p.monthlyBudgetUsd === 0 ? 'none' : `$${p.monthlyBudgetUsd.toFixed(2)}`}`);
  if (p.maxConcurrentJobs !== undefined) parts.push(`concurrency: ${show(p.maxConcurrentJobs, 'jobs at once per provider', 'no cap', 'KEY_MAX_CONCURRENT_JOBS')}`);
  if (p.inputRetentionSeconds !== undefined) parts.push(`inputs kept: ${p.inputRetentionSeconds === null ? 'default (INPUT_RETENTION_SECONDS)' : `${p.inputRetentionSeconds} s`}`);
  if (p.resultRetentionSeconds !== undefined) parts.push(`results kept: ${p.resultRetentionSeconds === null ? 'default (RESULT_RETENTION_SECONDS)' : `${p.resultRetentionSeconds} s`}`);
  return parts.join(', ');
}

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      id: { type: 'string' },
      admin: { type: 'boolean' },
      'no-admin': { type: 'boolean' },
      rpm: { type: 'string' },
      ipm: { type: 'string' },
      'monthly-budget-usd': { type: 'string' },
      'max-concurrent': { type: 'string' },
      'input-retention-seconds': { type: 'string' },
      'result-retention-seconds': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const command = positionals[0];
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const url = process.env.DATABASE_URL || DEFAULT_DATABASE_URL;
  if (command !== 'create' && command !== 'revoke' && command !== 'set') {
    console.error(USAGE);
    return 2;
  }
  if (values.admin && values['no-admin']) throw new UsageError('--admin and --no-admin contradict each other');
  const patch: KeySettingsPatch = {};
  const put = <K extends keyof KeySettingsPatch>(k: K, v: KeySettingsPatch[K] | undefined) => {
    if (v !== undefined) patch[k] = v;
  };
  put('admin', values.admin ? true : values['no-admin'] ? false : undefined);
  put('requestsPerMinute', wholeOrDefault('rpm', values.rpm));
  put('imagesPerMinute', wholeOrDefault('ipm', values.ipm));
  put('monthlyBudgetUsd', usdOrDefault('monthly-budget-usd', values['monthly-budget-usd']));
  put('maxConcurrentJobs', wholeOrDefault('max-concurrent', values['max-concurrent']));
  put('inputRetentionSeconds', wholeOrDefault('input-retention-seconds', values['input-retention-seconds']));
  put('resultRetentionSeconds', wholeOrDefault('result-retention-seconds', values['result-retention-seconds']));
  await migrate(url);
  const db = createDb(url, { poolSize: 1 });
  try {
    if (command === 'create') {
      if (values['no-admin']) throw new UsageError('--no-admin is for set; a new key is not admin unless --admin');
      const name = values.name?.trim();
      if (!name) throw new UsageError('--name is required');
      const key = await createApiKey(db, name, patch);
      const settings = describe(patch);
      console.log(`created API key ${key.id} (${key.name}${settings ? `, ${settings}` : ''}); it is shown only once:`);
      console.log(key.key);
      return 0;
    }
    if (!values.id) throw new UsageError('--id is required');
    if (command === 'set') {
      if (Object.keys(patch).length === 0) throw new UsageError('set needs at least one setting to change');
      const ok = await setKeySettings(db, values.id, patch);
      console.log(ok ? `${values.id}: ${describe(patch)}` : `no key ${values.id}`);
      return ok ? 0 : 1;
    }
    const ok = await revokeApiKey(db, values.id);
    console.log(ok ? `revoked ${values.id}` : `no active key ${values.id}`);
    return ok ? 0 : 1;
  } finally {
    await db.$disconnect();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n${USAGE}`);
      process.exit(2);
    }
    console.error(`keys: ${err.message}`);
    process.exit(1);
  },
);
