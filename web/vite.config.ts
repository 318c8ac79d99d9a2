import { defineConfig } from "vite";

// The console is served by tally at "/" next to the API; `npm run dev`
// proxies the API to a local `tally serve`.
export default defineConfig({
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: {
    proxy: { "/tally.inventory.v1.": "http://127.0.0.1:8080" },
  },
});
