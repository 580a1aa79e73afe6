// Runs `prisma generate` without Prisma's native schema engine: generate never executes the engine,
// but the CLI insists on finding one, so a stub is pointed at when no real engine is configured.
const { execFileSync } = require('node:child_process');
const path = require('node:path');
const env = { ...process.env };
env.PRISMA_SCHEMA_ENGINE_BINARY ??= path.join(__dirname, 'prisma-engine-stub.sh');
env.PRISMA_HIDE_UPDATE_MESSAGE = '1';
execFileSync(process.execPath, [require.resolve('prisma/build/index.js'), 'generate', '--schema', 'prisma/schema.prisma'], {
  cwd: path.join(__dirname, '..'),
  env,
  stdio: 'inherit',
});
