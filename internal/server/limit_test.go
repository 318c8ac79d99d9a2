package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tally-oss/tally/internal/server"
)

// TestEveryRouteReadsAtMostTheLimit: a route that is not an RPC (here one
// that reads its whole body) cannot be made to read more than the limit.
func TestEveryRouteReadsAtMostTheLimit(t *testing.T) {
	const limit = 64 << 10
	s, err := server.Listen("127.0.0.1:0", nil, slog.New(slog.DiscardHandler), server.WithMaxRequestBytes(limit))
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("", "/upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			http.Error(w, "too large: "+strconv.FormatInt(mb.Limit, 10), http.StatusRequestEntityTooLarge)
			return
		}
		_, _ = io.WriteString(w, strconv.Itoa(len(b)))
	}))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, c := range []struct {
		size int
		want int
	}{{limit, http.StatusOK}, {16 * limit, http.StatusRequestEntityTooLarge}} {
		resp, err := http.Post("http://"+s.Addr()+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, c.size)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%d bytes: %d %s, want %d", c.size, resp.StatusCode, body, c.want)
		}
	}
}
