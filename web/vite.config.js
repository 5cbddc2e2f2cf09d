import { defineConfig } from 'vite'

// The bridge serves dist/: files under assets/ get content-hashed names and are cached for a
// year (immutable); index.html is served with no-store. `npm run dev` proxies the bridge.
export default defineConfig({
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: true,
    chunkSizeWarningLimit: 1024
  },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/ws': { target: 'ws://127.0.0.1:8080', ws: true },
      '/hocuspocus': { target: 'ws://127.0.0.1:8080', ws: true }
    }
  }
})
