package pg_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-oss/tally/internal/pg"
)

// The pool's statistics are read at each scrape: a connection held shows
// as acquired, and the acquire is counted.
func TestPoolMetricsFollowThePool(t *testing.T) {
	c := mustStart(t, t.TempDir())
	url, err := c.CreateDatabase(t.Context(), "pooled")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 3
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := prometheus.NewRegistry()
	pg.RegisterPoolMetrics(reg, pool)
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	conn.Release()
	want := map[string]float64{"tally_pg_pool_acquired_conns": 1, "tally_pg_pool_max_conns": 3, "tally_pg_pool_acquires_total": 1, "tally_pg_pool_empty_acquires_total": 1}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], v, got)
		}
	}
	if got := gather(t, reg); got["tally_pg_pool_acquired_conns"] != 0 || got["tally_pg_pool_idle_conns"] != 1 {
		t.Errorf("after the release: %v, want 0 acquired and 1 idle", got)
	}
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		out[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return out
}
