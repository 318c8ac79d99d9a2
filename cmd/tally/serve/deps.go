package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tally-oss/tally/internal/auth"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/datadir"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/server"
	"github.com/tally-oss/tally/internal/tracing"
)

// deps are what the parts of a process share, each built once.
type deps struct {
	log     *slog.Logger
	reg     *prometheus.Registry
	brokers []string
	// kafka is how to reach the brokers: nil is plaintext.
	kafka *kafka.Security
	// peerTLS is what commands are forwarded to other instances with: nil
	// forwards over h2c (the API serves without TLS).
	peerTLS *tls.Config
	// embeddedKafka: brokers is this process's own broker.
	embeddedKafka bool
	pool          *pgxpool.Pool // nil unless the projector or the query side runs
	// srv is the one listener: every process serves health and /metrics
	// on it, the API parts their services.
	srv *server.Server

	closers []func() // in the order built

	// auth authenticates API calls; nil: the API is open.
	auth          *auth.Verifier
	maxAdjustment int64
	limit         connect.Interceptor // nil: no rate limit
}

// apiInterceptors are the interceptors every API service runs first:
// authentication, then the rate limit (per token subject, once known).
func (d *deps) apiInterceptors() []connect.Interceptor {
	var out []connect.Interceptor
	if d.auth != nil {
		out = append(out, auth.Interceptor(d.auth))
	}
	if d.limit != nil {
		out = append(out, d.limit)
	}
	return out
}

// metricsGuard lets an admin's or an analyst's bearer token read /metrics.
func (d *deps) metricsGuard(r *http.Request) error {
	p, err := d.auth.VerifyHeader(r.Header)
	if err != nil {
		return fmt.Errorf("/metrics needs the bearer token of an admin or analyst: %w", err)
	}
	if !p.Has(auth.RoleAdmin, auth.RoleAnalyst) {
		return fmt.Errorf("%s (roles %s) may not read /metrics: that needs admin or analyst", p.Subject, p.RoleNames())
	}
	return nil
}

// startAuth builds the token verifier the flags ask for. `tally serve`
// without an --auth-* flag makes its key under the data directory and
// prints tokens to use.
func (d *deps) startAuth(ctx context.Context, f *processFlags) error {
	a := &f.auth
	d.maxAdjustment = a.MaxAdjustment
	if a.RateLimit > 0 {
		d.limit = auth.RateLimit(a.RateLimit, a.RateBurst) // one limiter for both services
	}
	if !a.enabled() {
		if f.command != nil || f.query != nil {
			d.log.Error("INSECURE: --insecure-no-auth: the API checks no token, so anyone who reaches the port may read and change any store's stock")
		}
		return nil
	}
	cfg := auth.Config{KeyFile: a.KeyFile, JWKSFile: a.JWKS, Issuer: a.Issuer, Audience: a.Audience}
	if a.dev() {
		cfg.KeyFile = filepath.Join(f.embedded.DataDir, "auth", "hs256.key")
		key, _, err := auth.LoadOrCreateKey(cfg.KeyFile)
		if err != nil {
			return fmt.Errorf("development auth key: %w", err)
		}
		admin, err := auth.Issue(key, "dev-admin", []auth.Role{auth.RoleAdmin}, nil, 24*time.Hour)
		if err != nil {
			return err
		}
		pos, err := auth.Issue(key, "dev-pos-S1", []auth.Role{auth.RolePOS}, []string{"S1"}, 24*time.Hour)
		if err != nil {
			return err
		}
		tokens := fmt.Sprintf("TALLY_ADMIN_TOKEN=%s\nTALLY_POS_TOKEN=%s\n", admin, pos)
		path := filepath.Join(f.embedded.DataDir, "tokens")
		if err := os.WriteFile(path, []byte(tokens), 0o600); err != nil {
			return fmt.Errorf("development auth key: %w", err)
		}
		// Printed, not logged: the log never carries a token.
		fmt.Fprintf(os.Stderr, "development tokens (24 h; also in %s; mint more with tally token issue --key-file %s):\n%s", path, cfg.KeyFile, tokens)
	}
	v, err := auth.NewVerifier(ctx, cfg)
	if err != nil {
		return err
	}
	d.auth = v
	return nil
}

// close releases the deps in the reverse of the order they were built.
func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// newDeps builds the deps f asks for. On error, whatever it built is
// closed again.
func newDeps(ctx context.Context, f *processFlags) (_ *deps, err error) {
	d := &deps{log: f.common.logger(), reg: prometheus.NewRegistry(), brokers: config.List(f.common.KafkaBrokers)}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	stopTracing, err := tracing.Setup(ctx, f.common.OTLPEndpoint, f.common.OTLPSample, "tally", d.log)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(ctx); err != nil {
			d.log.Warn("flushing traces", "error", err)
		}
	})
	if d.kafka, err = f.common.KafkaSecurity.Kafka(); err != nil {
		return nil, err
	}
	if d.kafka == nil {
		d.kafka = &kafka.Security{}
	}
	d.kafka.Hooks = append(d.kafka.Hooks, kafka.NewClientMetrics(d.reg).Hook())
	embeddedKafka := f.embedded != nil && len(d.brokers) == 0
	embeddedPG := f.embedded != nil && f.database != nil && f.database.URL == ""
	if embeddedKafka || embeddedPG {
		// Before either starts: two brokers on one log directory, or a
		// second postgres on a running cluster's, would not end well.
		lock, err := datadir.Acquire(f.embedded.DataDir, f.common.Addr)
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, func() { _ = lock.Release() })
	}
	if embeddedKafka {
		d.embeddedKafka = true
		if d.brokers, err = d.startKafka(f.embedded); err != nil {
			return nil, err
		}
	}
	if f.database != nil {
		dsn := f.database.URL
		if embeddedPG {
			if dsn, err = d.startPostgres(ctx, f.embedded.DataDir); err != nil {
				return nil, err
			}
		}
		if d.pool, err = d.openReadModel(ctx, dsn); err != nil {
			return nil, err
		}
	}
	serverTLS, err := f.common.TLS.server()
	if err != nil {
		return nil, err
	}
	if d.peerTLS, err = f.common.TLS.peer(); err != nil {
		return nil, err
	}
	if err := d.startAuth(ctx, f); err != nil {
		return nil, err
	}
	opts := []server.Option{server.WithTLS(serverTLS), server.WithMaxRequestBytes(int64(f.common.MaxRequestBytes))}
	if f.common.OTLPEndpoint != "" {
		opts = append(opts, server.WithInterceptors(tracing.Interceptor()))
	}
	if f.auth.ProtectMetrics {
		if d.auth == nil {
			return nil, errors.New("--protect-metrics needs authentication (not --insecure-no-auth)")
		}
		opts = append(opts, server.WithMetricsGuard(d.metricsGuard))
	}
	if d.srv, err = server.Listen(f.common.Addr, d.reg, d.log, opts...); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.srv.Close)
	return d, nil
}

// startKafka runs the embedded broker and returns its addresses.
func (d *deps) startKafka(e *embeddedFlags) ([]string, error) {
	port, err := kafka.ParsePort(e.KafkaListen)
	if err != nil {
		return nil, fmt.Errorf("--kafka-listen: %w", err)
	}
	var opts []broker.Opt
	if !e.KafkaSync {
		opts = append(opts, broker.NoSyncWrites())
	}
	k, err := broker.Start(filepath.Join(e.DataDir, "kafka"), port, d.log, opts...)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, k.Close)
	return k.Addrs(), nil
}

// startPostgres runs the embedded cluster under dataDir/pg and returns the
// connection string of its tally database.
func (d *deps) startPostgres(ctx context.Context, dataDir string) (string, error) {
	cluster, err := pg.StartCluster(ctx, pg.ClusterConfig{Dir: filepath.Join(dataDir, "pg"), Durable: true, Logger: d.log, WaitForPrevious: time.Minute})
	if err != nil {
		return "", err
	}
	d.closers = append(d.closers, cluster.Stop)
	dsn, err := cluster.CreateDatabase(ctx, "tally")
	if err != nil {
		return "", err
	}
	// So `psql "$(cat data/pg/DATABASE_URL)"` finds it.
	if err := os.WriteFile(filepath.Join(dataDir, "pg", "DATABASE_URL"), []byte(dsn+"\n"), 0o644); err != nil {
		return "", err
	}
	d.log.Info("read model database", "url", dsn)
	return dsn, nil
}

// openPool makes a pool on the read model's database, with a 5 s connect
// timeout unless the URL's connect_timeout says otherwise.
func openPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		// An unreachable server (not one refusing) must not hold a query
		// until its caller gives up; connect_timeout in the URL overrides.
		pcfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	return pgxpool.NewWithConfig(ctx, pcfg)
}

// openReadModel connects to the read model and brings its schema up to
// date.
func (d *deps) openReadModel(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pool, err := openPool(ctx, dsn)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, pool.Close)
	pg.RegisterPoolMetrics(d.reg, pool)
	if err := readmodel.Migrate(ctx, pool, d.log); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return pool, nil
}
