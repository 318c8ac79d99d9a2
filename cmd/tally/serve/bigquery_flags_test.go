package serve

import (
	"strings"
	"testing"
	"time"
)

func TestBigQueryFlagsSayWhatIsMissing(t *testing.T) {
	ok := BigQueryFlags{BatchRows: 500, BatchWait: time.Second, MergeInterval: time.Minute}
	for _, c := range []struct {
		flags    BigQueryFlags
		required bool
		want     string // "" = valid
	}{
		{ok, false, ""}, // off
		{ok, true, "--bigquery-project is required"},
		{with(ok, func(b *BigQueryFlags) { b.Dataset = "d" }), false, "--bigquery-project is required"},
		{with(ok, func(b *BigQueryFlags) { b.Project = "p" }), false, "--bigquery-dataset is required"},
		{with(ok, func(b *BigQueryFlags) { b.Project, b.Dataset = "p", "d" }), true, ""},
		{with(ok, func(b *BigQueryFlags) { b.Project, b.Dataset, b.BatchRows = "p", "d", 0 }), false, "--bigquery-batch-rows must be 1 to 100000, got 0"},
		{with(ok, func(b *BigQueryFlags) { b.Project, b.Dataset, b.BatchWait = "p", "d", 0 }), false, "--bigquery-batch-wait must be positive"},
		{with(ok, func(b *BigQueryFlags) { b.Project, b.Dataset, b.MergeInterval = "p", "d", 0 }), false, "--bigquery-merge-interval must be positive"},
	} {
		err := c.flags.validate(c.required)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.flags, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: error %v, want %q", c.flags, err, c.want)
		}
	}
}

// An emulator serves the Storage Write API on a port of its own, which the
// live projection needs.
func TestAnEmulatorNeedsItsStorageEndpoint(t *testing.T) {
	b := BigQueryFlags{Project: "p", Dataset: "d", Endpoint: "http://127.0.0.1:9050"}
	if err := b.validateLive(); err == nil || !strings.Contains(err.Error(), "--bigquery-storage-endpoint") {
		t.Fatalf("an emulator without its storage endpoint: %v", err)
	}
	b.StorageEndpoint = "127.0.0.1:9060"
	if err := b.validateLive(); err != nil {
		t.Fatal(err)
	}
}

func with(b BigQueryFlags, f func(*BigQueryFlags)) BigQueryFlags {
	f(&b)
	return b
}

func TestHistoryRetentionIsZeroOrAtLeastAMonth(t *testing.T) {
	for _, c := range []struct {
		retention time.Duration
		ok        bool
	}{
		{0, true},
		{400 * 24 * time.Hour, true},
		{31 * 24 * time.Hour, true},
		{30 * 24 * time.Hour, false},
		{-time.Hour, false},
	} {
		f := projectorFlags{HistoryRetention: c.retention, BigQuery: BigQueryFlags{BatchRows: 500, BatchWait: time.Second, MergeInterval: time.Minute}}
		if err := f.validate(); (err == nil) != c.ok {
			t.Errorf("--history-retention %v: %v, want valid %v", c.retention, err, c.ok)
		}
	}
}

func TestMaxRequestBytesIsBetween64KiBAnd1GiB(t *testing.T) {
	for _, c := range []struct {
		n  int
		ok bool
	}{{4 << 20, true}, {64 << 10, true}, {1 << 30, true}, {64<<10 - 1, false}, {1<<30 + 1, false}, {0, false}, {-1, false}} {
		f := commonFlags{Addr: "127.0.0.1:0", KafkaBrokers: "k:9092", logFlags: logFlags{LogLevel: "info", LogFormat: "text"}, MaxRequestBytes: c.n}
		if err := f.validate(false); (err == nil) != c.ok {
			t.Errorf("--max-request-bytes %d: %v, want valid %v", c.n, err, c.ok)
		}
	}
}
