import { parseArgs } from 'node:util';
import { createApiKey, revokeApiKey } from '../api-keys';
import { createDb } from '../client';
import { DEFAULT_DATABASE_URL } from '../defaults';
import { migrate } from '../migrate';

const USAGE = 'usage: npm run keys -- create --name NAME | revoke --id KEY_ID';

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({ allowPositionals: true, options: { name: { type: 'string' }, id: { type: 'string' } } });
  const command = positionals[0];
  const url = process.env.DATABASE_URL || DEFAULT_DATABASE_URL;
  if (command !== 'create' && command !== 'revoke') {
    console.error(USAGE);
    return 2;
  }
  await migrate(url);
  const db = createDb(url, { poolSize: 1 });
  try {
    if (command === 'create') {
      const name = values.name?.trim();
      if (!name) {
        console.error(`--name is required\n${USAGE}`);
        return 2;
      }
      const key = await createApiKey(db, name);
      console.log(`created API key ${key.id} (${key.name}); it is shown only once:`);
      console.log(key.key);
      return 0;
    }
    if (!values.id) {
      console.error(`--id is required\n${USAGE}`);
      return 2;
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
