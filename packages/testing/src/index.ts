export * from './fixtures';
export * from './fake-openai';
