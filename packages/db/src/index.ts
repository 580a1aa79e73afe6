export * from './client';
export * from './migrate';
export * from './api-keys';
export * from './jobs';
export * from './idempotency';
export * from './webhooks';
export * from './files';
export * from './defaults';
