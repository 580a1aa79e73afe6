// One runner for every workspace. `unit` tests need nothing running; `int` tests talk to the real
// Postgres, Redis and an S3-compatible server started by the harness in packages/testing.
const transform = { '^.+\\.ts$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } }] };
const common = {
  testEnvironment: 'node',
  transform,
  moduleFileExtensions: ['ts', 'js', 'json'],
  // the generated Prisma client imports its own .ts files with .js specifiers (ESM style)
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
};
module.exports = {
  // integration tests start services and wait for jobs; per-project testTimeout is ignored by jest
  testTimeout: 60000,
  // each test file in a fresh worker process (npm test runs one at a time): what a file leaves running
  // (a service's timers, a child process, a fan-out still going) cannot slow the files after it
  workerIdleMemoryLimit: '1MB',
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/{apps,packages}/*/src/**/*.test.ts'], testPathIgnorePatterns: ['\\.int\\.test\\.ts$', '/node_modules/'] },
    { ...common, displayName: 'int', testMatch: ['<rootDir>/{apps,packages}/*/src/**/*.int.test.ts', '<rootDir>/tests/**/*.int.test.ts'] },
  ],
};
