package serve

import (
	"context"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/tally-oss/tally/command"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/projector"
	"github.com/tally-oss/tally/query"
	"github.com/tally-oss/tally/web"
)

// part is one role of a process, built and not yet running. Either
// function may be nil.
type part struct {
	// run runs the part's loops until ctx ends.
	run func(ctx context.Context) error
	// close releases what the part holds once the server takes no more
	// calls and run has returned, or when the part never ran because a
	// later one failed to build; ctx bounds how long it may wait.
	close func(ctx context.Context) error
}

// newCommandRole serves CommandService. Its close drains the writers, so
// every accepted command is committed and answered before Kafka closes.
func newCommandRole(ctx context.Context, f *commandFlags, d *deps) (part, error) {
	advertise := f.Advertise
	if advertise == "" {
		advertise = d.srv.Addr()
	}
	cmds, err := command.NewService(ctx, command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: d.brokers, Kafka: d.kafka, Logger: d.log, Metrics: command.NewMetrics(d.reg), DedupeWindow: f.DedupeWindow,
			SnapshotEvery: f.SnapshotEvery, SnapshotInterval: f.SnapshotEach},
		Partitions:     int32(f.Partitions),
		Advertise:      advertise,
		ForwardTLS:     d.peerTLS,
		SessionTimeout: f.sessionTimeout(d.embeddedKafka),
		// Every instance must be started with the same --max-request-bytes.
		MaxRequestBytes: int(d.srv.MaxRequestBytes()),
	})
	if err != nil {
		return part{}, err
	}
	handler := command.NewHandler(cmds, d.log)
	handler.SetMaxAdjustment(d.maxAdjustment)
	path, h := handler.HTTPHandler(append(d.srv.HandlerOptions(), connect.WithInterceptors(d.apiInterceptors()...))...)
	d.srv.Handle(inventoryv1connect.CommandServiceName, path, h)
	return part{close: cmds.Close}, nil
}

// newQueryRole serves QueryService and runs its low-stock hub.
func newQueryRole(_ context.Context, f *queryFlags, d *deps) (part, error) {
	admCl, err := kgo.NewClient(kafka.Options(d.brokers, d.kafka, nil)...)
	if err != nil {
		return part{}, err
	}
	q := query.New(query.Config{Pool: d.pool, Admin: kadm.NewClient(admCl), Logger: d.log, WatchBuffer: f.WatchBuffer,
		CacheLevels: f.cacheLevels(), Registerer: d.reg})
	path, h := inventoryv1connect.NewQueryServiceHandler(q, append(d.srv.HandlerOptions(), connect.WithInterceptors(append(d.apiInterceptors(), query.Authorize())...))...)
	d.srv.Handle(inventoryv1connect.QueryServiceName, path, h)
	// The web console, on the same port as the API it calls.
	d.srv.Handle("", "/", web.Handler())
	return part{run: q.RunHub, close: func(context.Context) error { admCl.Close(); return nil }}, nil
}

// newProjectorRole projects the log into Postgres and, when configured,
// into BigQuery.
func newProjectorRole(ctx context.Context, f *projectorFlags, d *deps) (part, error) {
	p, err := projector.NewPostgres(projector.Config{
		Consume: projector.Consume{Brokers: d.brokers, Kafka: d.kafka, Logger: d.log}, Pool: d.pool, Metrics: projector.NewMetrics(d.reg),
		HistoryRetention: f.HistoryRetention, CompactAfter: f.CompactAfter,
	})
	if err != nil {
		return part{}, err
	}
	if !f.BigQuery.enabled() {
		return part{run: p.Run}, nil
	}
	bq, err := f.BigQuery.client(ctx)
	if err != nil {
		return part{}, err
	}
	w, err := f.BigQuery.writer(ctx)
	if err != nil {
		_ = bq.Close()
		return part{}, err
	}
	cfg := f.BigQuery.config(d.brokers, d.kafka, bq, w, d.log, projector.NewBigQueryMetrics(d.reg))
	cfg.Progress = d.pool // for GetProjectionStatus
	bp, err := projector.NewBigQuery(cfg)
	if err != nil {
		_ = bq.Close()
		_ = w.Close()
		return part{}, err
	}
	d.log.Info("bigquery projection enabled", "project", f.BigQuery.Project, "dataset", f.BigQuery.Dataset, "endpoint", f.BigQuery.Endpoint)
	return part{
		run: func(ctx context.Context) error {
			g, ctx := errgroup.WithContext(ctx)
			g.Go(func() error { return p.Run(ctx) })
			g.Go(func() error { return bp.Run(ctx) })
			return g.Wait()
		},
		close: func(context.Context) error { _ = bq.Close(); _ = w.Close(); return nil },
	}, nil
}

// checkEventTopic refuses an events topic Kafka would delete events from
// (kafka.CheckEventTopic). A topic not there yet passes: the command role
// creates it with kafka.EventTopicConfigs.
func checkEventTopic(ctx context.Context, brokers []string, sec *kafka.Security) error {
	cl, err := kgo.NewClient(kafka.Options(brokers, sec, nil)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	return kafka.CheckEventTopic(ctx, kadm.NewClient(cl), kafka.EventsTopic)
}
