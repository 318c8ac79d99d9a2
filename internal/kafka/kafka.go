// Package kafka is Tally's Kafka plumbing: topic names, client options, topic
// creation, the key partitioner and reading the log to its end with
// transactions resolved (CommittedReader). It knows nothing of commands,
// projections or queries, and does not link the embedded broker (package
// broker), so production roles that talk to a real cluster carry no kfake.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Topic names.
const (
	EventsTopic = "tally.inventory.events"
	DLQTopic    = "tally.inventory.dlq"
	// SnapshotsTopic holds the partition writers' snapshots (compacted).
	SnapshotsTopic = "tally.inventory.snapshots"
)

// Record headers every event carries, so any consumer can tell what the
// value is without guessing.
const (
	HeaderSchema        = "tally-schema"
	HeaderSchemaVersion = "tally-schema-version"
	EventSchema         = "tally.inventory.v1.InventoryEvent"
	EventSchemaVersion  = "1"
)

// Options returns the client options every Tally Kafka client starts from:
// the seed brokers, sec's TLS, SASL (nil: plaintext, no authentication)
// and hooks, and, when log is not nil, the client's warnings and errors.
func Options(brokers []string, sec *Security, log *slog.Logger) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	if sec != nil && sec.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(sec.TLS.Clone()))
	}
	if sec != nil && sec.SASL != nil {
		opts = append(opts, kgo.SASL(sec.SASL))
	}
	if sec != nil && len(sec.Hooks) > 0 {
		opts = append(opts, kgo.WithHooks(sec.Hooks...))
	}
	if log != nil {
		// The client narrates every rebalance at info; keep warnings up.
		opts = append(opts, kgo.WithLogger(kslog.New(slog.New(minLevel{log.Handler(), slog.LevelWarn}).With("component", "kafka"))))
	}
	return opts
}

var (
	partitionerMu sync.Mutex
	partitioner   = kgo.StickyKeyPartitioner(nil).ForTopic(EventsTopic)
)

// PartitionFor returns the partition of a SKU among n: franz-go's default
// key partitioner (murmur2, the Java client's), so any Kafka tool agrees.
func PartitionFor(sku string, n int32) int32 {
	partitionerMu.Lock()
	defer partitionerMu.Unlock()
	return int32(partitioner.Partition(&kgo.Record{Key: []byte(sku)}, int(n)))
}

// EnsureTopic creates topic with the given partition count and configs
// when it is missing, and returns the partition count the topic actually
// has. An existing topic is left as it is: CheckEventTopic says whether
// the events topic's configs will do.
func EnsureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, configs map[string]string) (int32, error) {
	cfg := map[string]*string{}
	for k, v := range configs {
		cfg[k] = &v
	}
	_, err := adm.CreateTopic(ctx, partitions, -1, cfg, topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return 0, fmt.Errorf("create topic %s: %w", topic, err)
	}
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	td, ok := details[topic]
	if !ok || td.Err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", topic, td.Err)
	}
	return int32(len(td.Partitions)), nil
}

// EventTopicConfigs are the events topic's settings: keep everything,
// stated explicitly, since a cluster's defaults would delete events after
// 7 days (log.retention.ms) and CheckEventTopic refuses the topic then.
func EventTopicConfigs() map[string]string {
	return map[string]string{"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
}

// SnapshotTopicConfigs are the snapshots topic's settings: compacted (the
// newest record of each key is the state), tombstones kept a day so a
// reader that started before one still sees it.
func SnapshotTopicConfigs() map[string]string {
	return map[string]string{"cleanup.policy": "compact", "delete.retention.ms": "86400000", "min.compaction.lag.ms": "0"}
}

// ParsePort returns the port of a host:port listen address ("" = 0).
func ParsePort(addr string) (int, error) {
	if addr == "" {
		return 0, nil
	}
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return strconv.Atoi(addr[i+1:])
		}
	}
	return strconv.Atoi(addr)
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
