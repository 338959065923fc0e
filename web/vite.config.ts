import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The console is served by the Keel server at `/`; in development `vite` proxies API calls to it.
export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: true },
  server: { proxy: { '/health': 'http://127.0.0.1:8000', '/ready': 'http://127.0.0.1:8000' } },
});
