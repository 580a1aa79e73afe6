export * from './fixtures';
export * from './fake-openai';
export * from './harness';
export { startFakeStability, stabilityError, type FakeStability } from './fake-stability';
export { startFakeFal, falError, type FakeFal } from './fake-fal';
export { startFakeGemini, geminiError, type FakeGemini } from './fake-gemini';
export { startFakeReplicate, replicateProblem, type FakeReplicate } from './fake-replicate';
export { startFaultProxy, type FaultProxy, type FaultMode } from './fault-proxy';
