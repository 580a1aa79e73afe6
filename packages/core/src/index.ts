export * from './errors';
export * from './ids';
export * from './models';
export * from './edit-request';
export * from './job';
export * from './config';
export * from './routes';
