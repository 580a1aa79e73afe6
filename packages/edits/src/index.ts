export * from './inputs';
export * from './submit-edit';
export * from './json-edit';
export * from './fetch-image';
