export * from './contract';
export * from './connection';
export * from './image-edits';
export * from './job-events';
export * from './webhooks';
