export { startApi, type RunningApi } from './server';
export { createApp } from './app';
