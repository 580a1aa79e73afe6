export * from './contract';
export * from './connection';
export * from './image-edits';
export * from './fairness';
export * from './job-events';
export * from './webhooks';
export * from './batches';
export * from './rate-limits';
