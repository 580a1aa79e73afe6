export * from './client';
export * from './migrate';
export * from './api-keys';
export * from './jobs';
export * from './defaults';
