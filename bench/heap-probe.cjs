// Preloaded into a process the bench measures (`node --expose-gc --require ./bench/heap-probe.cjs ...`):
// once a second, a full garbage collection, then the live heap and RSS sent to the bench over IPC. A
// forced collection makes heapUsed the memory the process still holds, not garbage waiting for the
// collector; it costs the process a few milliseconds a second.
const every = Number(process.env.HEAP_PROBE_MS || 1000);
const timer = setInterval(() => {
  if (typeof global.gc === 'function') global.gc();
  const m = process.memoryUsage();
  if (process.send && process.connected) process.send({ heapProbe: { heapUsed: m.heapUsed, rss: m.rss, at: Date.now() } });
}, every);
timer.unref();
