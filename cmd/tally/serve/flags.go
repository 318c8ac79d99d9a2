package serve

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/tally-oss/tally/command"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafkaflag"
	"github.com/tally-oss/tally/internal/server"
	"github.com/tally-oss/tally/query"
)

// processFlags are one subcommand's flags: the common ones, and those of
// each part it runs (nil when it does not run that part). embedded is nil
// unless the subcommand may start Kafka and Postgres itself (`tally serve`).
type processFlags struct {
	common    commonFlags
	embedded  *embeddedFlags
	database  *databaseFlags // set when projector or query is
	command   *commandFlags
	projector *projectorFlags
	query     *queryFlags
	auth      authFlags // when the process serves an API
}

func (p *processFlags) register(fs *flag.FlagSet) {
	api := p.command != nil || p.query != nil
	p.common.register(fs, api, p.embedded != nil)
	p.common.TLS.register(fs, p.command != nil)
	if api {
		p.auth.register(fs, p.embedded != nil)
	}
	if p.embedded != nil {
		p.embedded.register(fs)
	}
	if p.database != nil {
		p.database.register(fs, p.embedded != nil)
	}
	if p.command != nil {
		p.command.register(fs)
	}
	if p.projector != nil {
		p.projector.register(fs)
	}
	if p.query != nil {
		p.query.register(fs)
	}
}

// validate reports every problem with the flags.
func (p *processFlags) validate() error {
	errs := []error{p.common.validate(p.embedded != nil), p.auth.validate()}
	if p.database != nil {
		errs = append(errs, p.database.validate(p.embedded != nil))
	}
	if p.command != nil {
		errs = append(errs, p.command.validate())
	}
	if p.projector != nil {
		errs = append(errs, p.projector.validate())
	}
	if p.query != nil {
		errs = append(errs, p.query.validate())
	}
	return errors.Join(errs...)
}

// commonFlags are every process's: its listener and its TLS, Kafka and how
// to reach it, logging, shutdown.
type commonFlags struct {
	Addr          string
	TLS           tlsFlags
	KafkaBrokers  string
	KafkaSecurity kafkaflag.Security
	Grace         time.Duration
	logFlags
	// MaxRequestBytes bounds every request to the listener.
	MaxRequestBytes int
	// OTLPEndpoint, when set, exports traces there; OTLPSample is the
	// fraction of the traces started here that are kept.
	OTLPEndpoint string
	OTLPSample   float64
}

// The bounds of --max-request-bytes: at least what the largest valid
// command takes (under 8 KiB: ids, reason and 4 KiB of metadata) with room
// to spare, and no more than a client can sensibly send in one RPC.
const (
	maxRequestBytesFloor   = 64 << 10
	maxRequestBytesCeiling = 1 << 30
)

// register: api says the process serves an API (command or query), not
// only health and /metrics; embedded that it can run its own broker.
func (c *commonFlags) register(fs *flag.FlagSet, api, embedded bool) {
	if api {
		config.String(fs, &c.Addr, "addr", "127.0.0.1:8080", "host:port serving Connect, gRPC, gRPC-Web, health, reflection and /metrics")
	} else {
		config.String(fs, &c.Addr, "addr", "127.0.0.1:8081", "host:port serving gRPC health and /metrics")
	}
	brokersUsage := "comma-separated Kafka seed brokers (required)"
	if embedded {
		brokersUsage = "comma-separated Kafka seed brokers; empty runs an embedded broker"
	}
	config.String(fs, &c.KafkaBrokers, "kafka-brokers", "", brokersUsage)
	c.KafkaSecurity.Register(fs)
	config.Duration(fs, &c.Grace, "shutdown-grace", 15*time.Second, "how long shutdown waits for in-flight calls and transactions")
	config.String(fs, &c.OTLPEndpoint, "otlp-endpoint", "", "export OpenTelemetry traces over OTLP/HTTP to this URL (such as http://collector:4318): a span per RPC, per command in its partition writer and per event in the projector, one trace across Kafka; empty: tracing off")
	config.Float64(fs, &c.OTLPSample, "otlp-sample", 0.01, "fraction (0 to 1) of the traces started here to keep; a caller's sampled traceparent is always followed")
	c.logFlags.register(fs)
	config.Int(fs, &c.MaxRequestBytes, "max-request-bytes", server.DefaultMaxRequestBytes,
		"largest request body and RPC message (after decompression) read, in bytes; larger ones are answered RESOURCE_EXHAUSTED")
}

func (c *commonFlags) validate(embedded bool) error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("--addr is required"))
	}
	if !embedded && c.KafkaBrokers == "" {
		errs = append(errs, errors.New("--kafka-brokers is required"))
	}
	errs = append(errs, c.logFlags.validate(), c.TLS.validate(), c.KafkaSecurity.Validate(embedded && c.KafkaBrokers == ""))
	if c.MaxRequestBytes < maxRequestBytesFloor || c.MaxRequestBytes > maxRequestBytesCeiling {
		errs = append(errs, fmt.Errorf("--max-request-bytes must be %d to %d, got %d", maxRequestBytesFloor, maxRequestBytesCeiling, c.MaxRequestBytes))
	}
	return errors.Join(errs...)
}

// logFlags are --log-level and --log-format.
type logFlags struct {
	LogLevel, LogFormat string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	config.String(fs, &l.LogLevel, "log-level", "info", "debug, info, warn or error")
	config.String(fs, &l.LogFormat, "log-format", "text", "text (key=value lines) or json (one object per line, for log collectors)")
}

func (l *logFlags) validate() error {
	var errs []error
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	if l.LogFormat != "text" && l.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format must be text or json, got %q", l.LogFormat))
	}
	return errors.Join(errs...)
}

// logger logs to stderr from the level up (info if it is not one), as
// JSON objects or text lines.
func (l *logFlags) logger() *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(l.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if l.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// embeddedFlags configure the Kafka broker and Postgres cluster `tally
// serve` starts when it is given none.
type embeddedFlags struct {
	DataDir     string
	KafkaListen string
	KafkaSync   bool
}

func (e *embeddedFlags) register(fs *flag.FlagSet) {
	config.String(fs, &e.DataDir, "data-dir", "./data", "where the embedded services keep their data (data/kafka, data/pg); one process at a time (data/LOCK)")
	config.String(fs, &e.KafkaListen, "kafka-listen", "127.0.0.1:9092", "address of the embedded Kafka broker, for any Kafka client to read the topic")
	config.Bool(fs, &e.KafkaSync, "kafka-sync-writes", true, "the embedded broker fsyncs every batch before acknowledging it, so an accepted command survives a power cut; false keeps it only through a process crash")
}

// databaseFlags locate the read model, which the projector writes and the
// query side reads.
type databaseFlags struct {
	URL string
}

func (d *databaseFlags) register(fs *flag.FlagSet, embedded bool) {
	usage := "PostgreSQL connection string of the read model (required; env DATABASE_URL also works)"
	if embedded {
		usage = "PostgreSQL connection string of the read model; empty starts a cluster under --data-dir/pg (env DATABASE_URL also works)"
	}
	config.String(fs, &d.URL, "database-url", os.Getenv("DATABASE_URL"), usage)
}

func (d *databaseFlags) validate(embedded bool) error {
	if !embedded && d.URL == "" {
		return errors.New("--database-url (or DATABASE_URL) is required")
	}
	return nil
}

// commandFlags configure the write side.
type commandFlags struct {
	Partitions     int
	Advertise      string
	SessionTimeout time.Duration
	DedupeWindow   time.Duration
	SnapshotEvery  int
	SnapshotEach   time.Duration
}

func (c *commandFlags) register(fs *flag.FlagSet) {
	config.Int(fs, &c.Partitions, "partitions", 6, "partitions of the events topic when it is created")
	config.String(fs, &c.Advertise, "advertise", "", "host:port other command instances forward this instance's partitions' commands to; unique per instance (default --addr)")
	config.Duration(fs, &c.SessionTimeout, "group-session-timeout", 0, "how long the writers' group waits for a silent instance (killed, paused) before moving its partitions: the bound of a takeover. 0: 2s on the embedded broker, 6s otherwise (the least a Kafka broker accepts by default, group.min.session.timeout.ms; lower that to go lower). The group's rebalance timeout is max(10s, 5 × this): an instance killed during a rebalance holds its partitions until then")
	config.Duration(fs, &c.DedupeWindow, "dedupe-window", command.DefaultDedupeWindow, "how long each partition remembers the command ids it accepted, so a retry is answered replayed (about 70 bytes of memory per command); a retry older than this whose occurred_at is older too is refused as too old to verify")
	config.Int(fs, &c.SnapshotEvery, "snapshot-every", 100_000, "committed events after which a partition writer writes a snapshot increment (its changed SKUs and new command ids) to tally.inventory.snapshots, so a takeover folds only the log after it; -1 turns snapshots off (every start folds the whole log)")
	config.Duration(fs, &c.SnapshotEach, "snapshot-interval", time.Minute, "the longest a partition writer goes without a snapshot increment while events are committed")
}

func (c *commandFlags) validate() error {
	var errs []error
	if c.Partitions < 1 || c.Partitions > 10000 {
		errs = append(errs, fmt.Errorf("--partitions must be 1 to 10000, got %d", c.Partitions))
	}
	if c.SnapshotEvery == 0 || c.SnapshotEvery < -1 {
		errs = append(errs, fmt.Errorf("--snapshot-every must be a positive number of events or -1 (off), got %d", c.SnapshotEvery))
	}
	if c.SnapshotEach < time.Second {
		errs = append(errs, fmt.Errorf("--snapshot-interval must be at least 1s, got %v", c.SnapshotEach))
	}
	if c.DedupeWindow < time.Minute {
		errs = append(errs, fmt.Errorf("--dedupe-window must be at least 1m, got %v", c.DedupeWindow))
	}
	if c.SessionTimeout != 0 && (c.SessionTimeout < time.Second || c.SessionTimeout > 5*time.Minute) {
		errs = append(errs, fmt.Errorf("--group-session-timeout must be 1s to 5m, got %v", c.SessionTimeout))
	}
	return errors.Join(errs...)
}

// sessionTimeout is --group-session-timeout, its default chosen by broker.
func (c *commandFlags) sessionTimeout(embedded bool) time.Duration {
	switch {
	case c.SessionTimeout != 0:
		return c.SessionTimeout
	case embedded:
		return 2 * time.Second
	}
	return 6 * time.Second
}

// projectorFlags configure the projections: Postgres always, BigQuery when
// a project is given.
type projectorFlags struct {
	HistoryRetention time.Duration
	CompactAfter     time.Duration
	BigQuery         BigQueryFlags
}

// minHistoryRetention is the shortest --history-retention: the ledger drops
// whole months, and low-stock watchers read a week of sales from it.
const minHistoryRetention = 31 * 24 * time.Hour

func (p *projectorFlags) register(fs *flag.FlagSet) {
	config.Duration(fs, &p.HistoryRetention, "history-retention", 400*24*time.Hour, "how long the read model's ledger keeps an event (by recorded_at): whole months older are dropped hourly, and history reads before them answer OUT_OF_RANGE (BigQuery keeps every event). 400 days by default; at least 744h (31 days); 0 keeps every event")
	config.Duration(fs, &p.CompactAfter, "ledger-compact-after", 24*time.Hour, "how long after a month ends the ledger's rows of it are compacted: one compressed row per (sku, store) and month, 85-105 bytes per event instead of ~300 at 25-100 events per (sku, store) a month, read the same way (DESIGN.md \"Ledger compaction\"); 0 never compacts")
	p.BigQuery.flags(fs, true)
}

func (p *projectorFlags) validate() error {
	var err error
	if p.HistoryRetention < 0 || (p.HistoryRetention > 0 && p.HistoryRetention < minHistoryRetention) {
		err = fmt.Errorf("--history-retention must be 0 (keep every event) or at least %v, got %v", minHistoryRetention, p.HistoryRetention)
	}
	if p.CompactAfter < 0 {
		err = errors.Join(err, fmt.Errorf("--ledger-compact-after must be 0 (never compact) or more, got %v", p.CompactAfter))
	}
	return errors.Join(err, p.BigQuery.validate(false), p.BigQuery.validateLive())
}

// queryFlags configure the read side.
type queryFlags struct {
	WatchBuffer int
	CacheLevels int
}

func (q *queryFlags) register(fs *flag.FlagSet) {
	config.Int(fs, &q.WatchBuffer, "watch-buffer", 1024, "low-stock messages queued per WatchLowStock stream before it is cut off with RESOURCE_EXHAUSTED")
	config.Int(fs, &q.CacheLevels, "cache-levels", query.DefaultCacheLevels, "stock levels (sku, store) this instance keeps in memory for GetStock and BatchGetStock (about 100 bytes each), kept exact by the projector's notifications; 0 turns the cache off")
}

func (q *queryFlags) validate() error {
	if q.WatchBuffer < 1 || q.WatchBuffer > 1<<20 {
		return fmt.Errorf("--watch-buffer must be 1 to %d, got %d", 1<<20, q.WatchBuffer)
	}
	if q.CacheLevels < 0 {
		return fmt.Errorf("--cache-levels must be 0 (off) or more, got %d", q.CacheLevels)
	}
	return nil
}

// cacheLevels is query.Config's CacheLevels for the flag.
func (q *queryFlags) cacheLevels() int {
	if q.CacheLevels == 0 {
		return -1
	}
	return q.CacheLevels
}

// authFlags configure who may call the API: bearer JWTs verified with one
// of a secret, a JWKS file or an OIDC issuer's keys. Without one, `tally
// serve` makes its own key under --data-dir and prints tokens to call it
// with (development), and `command` and `query` refuse to start; only
// --insecure-no-auth leaves the API open.
type authFlags struct {
	KeyFile, JWKS, Issuer, Audience string
	// Insecure: no authentication at all.
	Insecure bool
	// api: the process serves the API (the flags are registered);
	// embedded: it may make its own key (`tally serve`).
	api, embedded bool
	MaxAdjustment int64
	// RateLimit is calls per second per caller (0: none), RateBurst the
	// calls it may make at once.
	RateLimit float64
	RateBurst int
	// ProtectMetrics: /metrics needs an admin's or analyst's token.
	ProtectMetrics bool
}

func (a *authFlags) register(fs *flag.FlagSet, embedded bool) {
	config.String(fs, &a.KeyFile, "auth-key-file", "", "file holding the HS256 secret (at least 32 bytes) that signs bearer tokens: every call then needs Authorization: Bearer <JWT> (tally token issue mints them)")
	config.String(fs, &a.JWKS, "auth-jwks", "", "JWKS file with the public keys (RS256, ES256, ...) of bearer tokens an identity provider signs")
	config.String(fs, &a.Issuer, "auth-issuer", "", "OIDC issuer URL: bearer tokens are verified with the keys it publishes (jwks_uri), and their iss must be it")
	config.String(fs, &a.Audience, "auth-audience", "", "when set, a bearer token's aud must include it")
	config.Float64(fs, &a.RateLimit, "rate-limit", 0, "calls per second each caller may make to this instance (the token's subject, or the client's IP address when calls are not authenticated); beyond it RESOURCE_EXHAUSTED with RetryInfo. 0: no limit")
	config.Bool(fs, &a.ProtectMetrics, "protect-metrics", false, "/metrics needs the bearer token of an admin or analyst (health and reflection stay open)")
	config.Int(fs, &a.RateBurst, "rate-burst", 100, "calls a caller may make at once above --rate-limit")
	config.Int64(fs, &a.MaxAdjustment, "max-adjustment", 1000, "the most units one adjustment, or one count's variance, may move on_hand by unless the caller is admin (0: no bound)")
	config.Bool(fs, &a.Insecure, "insecure-no-auth", false, "no authentication: anyone who reaches the port may read and change any store's stock (logged loudly at start; never on a network)")
	a.api, a.embedded = true, embedded
}

func (a *authFlags) validate() error {
	if !a.api {
		return nil
	}
	n := 0
	for _, s := range []string{a.KeyFile, a.JWKS, a.Issuer} {
		if s != "" {
			n++
		}
	}
	var errs []error
	switch {
	case n > 1:
		errs = append(errs, errors.New("--auth-key-file, --auth-jwks and --auth-issuer: at most one"))
	case n > 0 && a.Insecure:
		errs = append(errs, errors.New("--insecure-no-auth with an --auth-* flag: choose"))
	case n == 0 && !a.Insecure && !a.embedded:
		errs = append(errs, errors.New("the API needs --auth-key-file, --auth-jwks or --auth-issuer to check callers' tokens (or --insecure-no-auth to leave it open, never on a network)"))
	}
	if a.RateLimit < 0 || a.RateBurst < 1 {
		errs = append(errs, fmt.Errorf("--rate-limit must be 0 or more and --rate-burst at least 1, got %g and %d", a.RateLimit, a.RateBurst))
	}
	if a.MaxAdjustment < 0 {
		errs = append(errs, fmt.Errorf("--max-adjustment must be 0 or more, got %d", a.MaxAdjustment))
	}
	return errors.Join(errs...)
}

// enabled reports whether calls are authenticated.
func (a *authFlags) enabled() bool { return a.api && !a.Insecure }

// dev reports whether the process makes its own key: `tally serve` with no
// --auth-* flag.
func (a *authFlags) dev() bool {
	return a.embedded && !a.Insecure && a.KeyFile == "" && a.JWKS == "" && a.Issuer == ""
}
