package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Main is a TestMain that starts the environment into *env, runs the tests
// and stops it.
func Main(m *testing.M, env **Env) {
	e, err := Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "test environment:", err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	e.Stop()
	os.Exit(code)
}

// NeverReady turns the stopped cluster under dir (pg.ClusterConfig.Dir)
// into a standby with nowhere to get WAL from and hot_standby off: its
// server starts and never accepts a connection, so a start waits until its
// context ends.
func NeverReady(tb testing.TB, dir string) {
	tb.Helper()
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	conf, err := os.OpenFile(filepath.Join(data, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer conf.Close()
	if _, err := conf.WriteString("hot_standby = off\n"); err != nil {
		tb.Fatal(err)
	}
}
