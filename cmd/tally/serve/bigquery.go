package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/managedwriter"

	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/projector"
)

// BigQueryFlags configure the BigQuery projection (off unless a project is
// given).
type BigQueryFlags struct {
	Project         string
	Dataset         string
	Endpoint        string
	StorageEndpoint string
	Location        string
	BatchRows       int
	BatchWait       time.Duration
	MergeInterval   time.Duration
}

func (b *BigQueryFlags) flags(fs *flag.FlagSet, batching bool) {
	config.String(fs, &b.Project, "bigquery-project", "", "Google Cloud project of the BigQuery analytical model; empty turns the BigQuery projection off")
	config.String(fs, &b.Dataset, "bigquery-dataset", "", "BigQuery dataset of the analytical model (created with its tables and views when missing)")
	config.String(fs, &b.Endpoint, "bigquery-endpoint", "", "BigQuery API endpoint, for an emulator such as http://127.0.0.1:9050 (no authentication); empty uses BigQuery with Application Default Credentials")
	config.String(fs, &b.StorageEndpoint, "bigquery-storage-endpoint", "", "BigQuery Storage Write API endpoint host:port, for an emulator's gRPC port (plaintext, no authentication); required with --bigquery-endpoint")
	config.String(fs, &b.Location, "bigquery-location", "US", "location of the BigQuery dataset when Tally creates it")
	if batching {
		config.Duration(fs, &b.MergeInterval, "bigquery-merge-interval", time.Minute, "how often the buffered events are committed to inventory_events and current_inventory is refreshed by one MERGE (freshness of BigQuery: about this plus --bigquery-batch-wait)")
		config.Int(fs, &b.BatchRows, "bigquery-batch-rows", 500, "events per BigQuery batch before it is written (a lagging projection takes up to 100x more per batch)")
		config.Duration(fs, &b.BatchWait, "bigquery-batch-wait", time.Second, "longest wait for a BigQuery batch to fill before it is written")
	}
}

func (b *BigQueryFlags) enabled() bool { return b.Project != "" }

// validateLive: the live projection appends through the Storage Write API,
// which an emulator serves on its own port.
func (b *BigQueryFlags) validateLive() error {
	if b.Endpoint != "" && b.StorageEndpoint == "" {
		return errors.New("--bigquery-endpoint (an emulator) needs --bigquery-storage-endpoint, its gRPC host:port, for the Storage Write API")
	}
	return nil
}

// validate: required says the BigQuery projection must be configured.
func (b *BigQueryFlags) validate(required bool) error {
	var errs []error
	switch {
	case b.Project == "" && (required || b.Dataset != "" || b.Endpoint != ""):
		errs = append(errs, errors.New("--bigquery-project is required for the BigQuery projection"))
	case b.Project != "" && b.Dataset == "":
		errs = append(errs, errors.New("--bigquery-dataset is required with --bigquery-project"))
	}
	if b.BatchRows < 1 || b.BatchRows > 100000 {
		errs = append(errs, fmt.Errorf("--bigquery-batch-rows must be 1 to 100000, got %d", b.BatchRows))
	}
	if b.BatchWait <= 0 {
		errs = append(errs, fmt.Errorf("--bigquery-batch-wait must be positive, got %s", b.BatchWait))
	}
	if b.MergeInterval <= 0 {
		errs = append(errs, fmt.Errorf("--bigquery-merge-interval must be positive, got %s", b.MergeInterval))
	}

	return errors.Join(errs...)
}

func (b *BigQueryFlags) client(ctx context.Context) (*bigquery.Client, error) {
	c, err := projector.NewBigQueryClient(ctx, b.Project, b.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("bigquery client: %w", err)
	}
	return c, nil
}

// writer connects to the Storage Write API, which the live projection
// appends through.
func (b *BigQueryFlags) writer(ctx context.Context) (*managedwriter.Client, error) {
	w, err := projector.NewBigQueryWriter(ctx, b.Project, b.StorageEndpoint)
	if err != nil {
		return nil, fmt.Errorf("bigquery storage write client: %w", err)
	}
	return w, nil
}

func (b *BigQueryFlags) config(brokers []string, sec *kafka.Security, c *bigquery.Client, w *managedwriter.Client, log *slog.Logger, m *projector.BigQueryMetrics) projector.BigQueryConfig {
	return projector.BigQueryConfig{
		Consume: projector.Consume{Brokers: brokers, Kafka: sec, Logger: log},
		Client:  c, Writer: w, Dataset: b.Dataset, Location: b.Location,
		BatchRows: b.BatchRows, BatchWait: b.BatchWait, MaxBatchRows: 100 * b.BatchRows, MergeInterval: b.MergeInterval,
		Metrics: m,
	}
}
