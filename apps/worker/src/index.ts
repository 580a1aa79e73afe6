export { startWorker, type RunningWorker } from './worker';
export { announceMissedEvents, reconcileOnce } from './reconcile';
