import { parseArgs } from 'node:util';
import { createApiKey, revokeApiKey, setKeyConcurrencyLimit } from '../api-keys';
import { createDb } from '../client';
import { DEFAULT_DATABASE_URL } from '../defaults';
import { migrate } from '../migrate';

const USAGE = [
  'usage: npm run keys -- create --name NAME [--max-concurrent N]',
  '       npm run keys -- set --id KEY_ID --max-concurrent N|default',
  '       npm run keys -- revoke --id KEY_ID',
  '--max-concurrent: jobs of the key that may run at once per provider (0 = no cap; default = KEY_MAX_CONCURRENT_JOBS)',
].join('\n');

/** `--max-concurrent`: a whole number, or `default` (null); undefined when absent. */
function parseLimit(value: string | undefined): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'default') return null;
  if (!/^\d+$/.test(value)) throw new Error(`--max-concurrent takes a whole number (0 = no cap) or 'default', not '${value}'`);
  return Number(value);
}

const describeLimit = (limit: number | null) => (limit === null ? 'default concurrency (KEY_MAX_CONCURRENT_JOBS)' : limit === 0 ? 'no concurrency cap' : `at most ${limit} jobs at once per provider`);

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({ allowPositionals: true, options: { name: { type: 'string' }, id: { type: 'string' }, 'max-concurrent': { type: 'string' } } });
  const command = positionals[0];
  const url = process.env.DATABASE_URL || DEFAULT_DATABASE_URL;
  if (command !== 'create' && command !== 'revoke' && command !== 'set') {
    console.error(USAGE);
    return 2;
  }
  const limit = parseLimit(values['max-concurrent']);
  await migrate(url);
  const db = createDb(url, { poolSize: 1 });
  try {
    if (command === 'create') {
      const name = values.name?.trim();
      if (!name) {
        console.error(`--name is required\n${USAGE}`);
        return 2;
      }
      const key = await createApiKey(db, name, { maxConcurrentJobs: limit ?? null });
      console.log(`created API key ${key.id} (${key.name}${limit === undefined ? '' : `, ${describeLimit(limit)}`}); it is shown only once:`);
      console.log(key.key);
      return 0;
    }
    if (!values.id) {
      console.error(`--id is required\n${USAGE}`);
      return 2;
    }
    if (command === 'set') {
      if (limit === undefined) {
        console.error(`--max-concurrent is required\n${USAGE}`);
        return 2;
      }
      const ok = await setKeyConcurrencyLimit(db, values.id, limit);
      console.log(ok ? `${values.id}: ${describeLimit(limit)}` : `no key ${values.id}`);
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
    console.error(`keys: ${err.message}`);
    process.exit(1);
  },
);
