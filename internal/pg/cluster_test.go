package pg_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/testenv"
)

// startCluster is StartCluster on dir, failing the test if it has not
// returned after a minute: several tests here check that it returns
// rather than hangs. A cluster it starts is stopped when the test ends.
func startCluster(t testing.TB, ctx context.Context, dir string) (*pg.Cluster, error) {
	t.Helper()
	type result struct {
		c   *pg.Cluster
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := pg.StartCluster(ctx, pg.ClusterConfig{Dir: dir, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.c != nil {
			t.Cleanup(r.c.Stop)
		}
		return r.c, r.err
	case <-time.After(time.Minute):
		t.Fatal("StartCluster has not returned after a minute")
		return nil, nil
	}
}

func mustStart(t testing.TB, dir string) *pg.Cluster {
	t.Helper()
	c, err := startCluster(t, t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ping(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// pidFile is the server's postmaster.pid: there from its start until it
// has shut down.
func pidFile(dir string) string { return filepath.Join(dir, "data", "postmaster.pid") }

func TestClusterStartsStopsAndKeepsItsData(t *testing.T) {
	dir := t.TempDir()
	c := mustStart(t, dir)
	url, err := c.CreateDatabase(t.Context(), "kept")
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if _, err := os.Stat(pidFile(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("postmaster.pid after Stop: %v; want the server shut down", err)
	}
	c.Stop() // a second Stop returns at once

	c = mustStart(t, dir)
	if err := ping(t.Context(), c.URL("kept")); err != nil {
		t.Fatalf("database created before the restart (%s): %v", url, err)
	}
}

func TestSecondClusterOnTheSameDirectoryFailsWithPostgresError(t *testing.T) {
	dir := t.TempDir()
	first := mustStart(t, dir)

	_, err := startCluster(t, t.Context(), dir)
	if err == nil {
		t.Fatal("a second cluster on the same directory started")
	}
	t.Logf("second cluster: %v", err)
	// PostgreSQL's own words, from its log.
	for _, want := range []string{`lock file "postmaster.pid" already exists`, "Is another postmaster"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := ping(t.Context(), first.URL("postgres")); err != nil {
		t.Fatalf("first cluster after the second failed: %v", err)
	}
}

// cancelWhen cancels ctx once path exists.
func cancelWhen(ctx context.Context, cancel context.CancelFunc, path string) {
	for {
		if _, err := os.Stat(path); err == nil {
			cancel()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestCancelDuringInitdbLeavesNoDataDirectory(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// initdb makes its directory first, then fills it for a second or so.
	go cancelWhen(ctx, cancel, filepath.Join(dir, "data.initdb"))
	_, err := startCluster(t, ctx, dir)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("StartCluster with ctx cancelled during initdb: %v, want context.Canceled", err)
	}
	// Half a data directory would pass for a cluster at the next start.
	for _, d := range []string{"data", "data.initdb"} {
		if _, err := os.Stat(filepath.Join(dir, d)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after a cancelled initdb: %v; want none", d, err)
		}
	}
	mustStart(t, dir)
}

func TestCancelDuringStartStopsTheServer(t *testing.T) {
	dir := t.TempDir()
	mustStart(t, dir).Stop()
	// Start-up lasts until ctx ends.
	testenv.NeverReady(t, dir)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Once the server runs, StartCluster is waiting for it.
	go cancelWhen(ctx, cancel, pidFile(dir))
	_, err := startCluster(t, ctx, dir)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("StartCluster with ctx cancelled during start: %v, want context.Canceled", err)
	}
	if _, err := os.Stat(pidFile(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("postmaster.pid after a cancelled start: %v; want the server shut down", err)
	}
}

// A start that may wait for a previous server (the orphan of a killed
// predecessor, shutting down) starts once that one has exited.
func TestStartWaitsForThePreviousServerToExit(t *testing.T) {
	dir := t.TempDir()
	first := mustStart(t, dir)
	go func() {
		time.Sleep(500 * time.Millisecond)
		first.Stop()
	}()
	second, err := pg.StartCluster(t.Context(), pg.ClusterConfig{Dir: dir, WaitForPrevious: time.Minute, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatalf("start after the previous server exits: %v", err)
	}
	defer second.Stop()
	if err := ping(t.Context(), second.URL("postgres")); err != nil {
		t.Fatal(err)
	}
}

func TestClusterSettingsOverrideTallysOwn(t *testing.T) {
	c, err := pg.StartCluster(t.Context(), pg.ClusterConfig{Dir: t.TempDir(), Settings: map[string]string{
		"max_connections": "50", // Tally's own is 200
		"work_mem":        "7MB",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	conn, err := pgx.Connect(t.Context(), c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	for name, want := range map[string]string{"max_connections": "50", "work_mem": "7MB"} {
		var got string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
}
