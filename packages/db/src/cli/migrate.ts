import { migrate } from '../migrate';
import { DEFAULT_DATABASE_URL } from '../defaults';

const url = process.env.DATABASE_URL || DEFAULT_DATABASE_URL;
migrate(url)
  .then((r) => {
    const where = `${r.database}${r.createdDatabase ? ' (created)' : ''}`;
    console.log(r.applied.length ? `applied ${r.applied.length} migration(s) to ${where}: ${r.applied.join(', ')}` : `${where} is up to date`);
  })
  .catch((err: Error) => {
    console.error(`db:migrate failed: ${err.message}`);
    process.exit(1);
  });
