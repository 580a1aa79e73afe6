#!/usr/bin/env node
// Builds the console into apps/console/dist unless that build is newer than every source file:
// `npm start` (prestart) and the console's end-to-end test run it, so a fresh clone serves the
// console and an unchanged one does not rebuild. Without Vite (a production install without dev
// dependencies) it says so and leaves the API to answer that the console is not built.
// `--force` rebuilds whatever the times say.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const built = path.join(root, 'dist', 'index.html');

/** The newest modification time under the console's sources. */
function newest(p) {
  if (!existsSync(p)) return 0;
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let max = st.mtimeMs;
  for (const name of readdirSync(p)) max = Math.max(max, newest(path.join(p, name)));
  return max;
}

const sources = ['index.html', 'vite.config.ts', 'package.json', 'src', 'public'].map((p) => newest(path.join(root, p)));
const stale = process.argv.includes('--force') || !existsSync(built) || statSync(built).mtimeMs < Math.max(...sources);
if (!stale) process.exit(0);

let vite;
try {
  vite = await import('vite');
} catch {
  console.warn('console: Vite is not installed (npm install without --omit=dev), so the console is not built; the API answers / with a note.');
  process.exit(0);
}
console.log('console: building apps/console/dist …');
await vite.build({ root, logLevel: 'warn', configFile: path.join(root, 'vite.config.ts') });
console.log('console: built');
