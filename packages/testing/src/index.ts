export * from './fixtures';
export * from './fake-openai';
export * from './harness';
