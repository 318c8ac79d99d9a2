package pg

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector exports a pgx pool's statistics, read at scrape time.
type poolCollector struct {
	pool                                            *pgxpool.Pool
	acquired, idle, total, max, constructing        *prometheus.Desc
	acquires, acquireSeconds, emptyWaits, cancelled *prometheus.Desc
}

// RegisterPoolMetrics exports pool's statistics on reg as tally_pg_pool_…:
// connections in use, idle, open, being opened and the most allowed, and
// acquires (all, those that waited for a free connection, those cancelled)
// with the time spent acquiring. A pool that waits often is too small for
// its load (--database-url's pool_max_conns).
func RegisterPoolMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("tally_pg_pool_"+name, help, nil, nil)
	}
	reg.MustRegister(&poolCollector{
		pool:           pool,
		acquired:       d("acquired_conns", "Connections in use."),
		idle:           d("idle_conns", "Open connections not in use."),
		total:          d("total_conns", "Open connections, and those being opened."),
		max:            d("max_conns", "The most connections the pool opens (pool_max_conns)."),
		constructing:   d("constructing_conns", "Connections being opened."),
		acquires:       d("acquires_total", "Connections acquired from the pool."),
		acquireSeconds: d("acquire_seconds_total", "Time spent acquiring connections."),
		emptyWaits:     d("empty_acquires_total", "Acquires that waited for a connection because none was idle."),
		cancelled:      d("cancelled_acquires_total", "Acquires given up (context ended) before a connection was free."),
	})
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.constructing, c.acquires, c.acquireSeconds, c.emptyWaits, c.cancelled} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(c.acquired, float64(s.AcquiredConns()))
	gauge(c.idle, float64(s.IdleConns()))
	gauge(c.total, float64(s.TotalConns()))
	gauge(c.max, float64(s.MaxConns()))
	gauge(c.constructing, float64(s.ConstructingConns()))
	counter(c.acquires, float64(s.AcquireCount()))
	counter(c.acquireSeconds, s.AcquireDuration().Seconds())
	counter(c.emptyWaits, float64(s.EmptyAcquireCount()))
	counter(c.cancelled, float64(s.CanceledAcquireCount()))
}
