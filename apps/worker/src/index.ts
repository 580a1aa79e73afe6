export { startWorker, type RunningWorker } from './worker';
export { reconcileOnce } from './reconcile';
