// Package web is Tally's web console: the page and scripts Vite builds from
// web/src into web/dist (committed, like gen/), embedded so that running
// Tally needs no Node.js. Rebuild with `cd web && npm ci && npm run build`.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed dist
var dist embed.FS

// Handler serves the console: index.html at "/", the hashed assets
// under /assets/ (cached for good), 404 for anything else, and for any
// method but GET and HEAD.
func Handler() http.Handler {
	root, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embedded tree always has dist
	}
	files := http.FileServerFS(root)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			// As before the console: an RPC to a service this instance
			// does not serve is a 404 (gRPC: UNIMPLEMENTED).
			http.NotFound(w, r)
			return
		case r.URL.Path == "/" || r.URL.Path == "/index.html":
			w.Header().Set("Cache-Control", "no-cache")
		case strings.HasPrefix(r.URL.Path, "/assets/"):
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'")
		files.ServeHTTP(w, r)
	})
}
