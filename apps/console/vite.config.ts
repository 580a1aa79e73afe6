import { defineConfig } from 'vite';

// The console is plain TypeScript + DOM: no plugins. `vite build` writes dist/, which the API serves
// at /; `vite` (dev) proxies the API's paths to a running `npm start`.
const api = process.env.CONSOLE_API_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  base: '/',
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', sourcemap: true, assetsInlineLimit: 0 },
  server: { proxy: { '/v1': api, '/healthz': api, '/readyz': api } },
});
