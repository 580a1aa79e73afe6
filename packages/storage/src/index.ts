export * from './object-store';
export * from './keys';
export * from './local-s3';
