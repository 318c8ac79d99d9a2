package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// DLQRetention is how long the dead-letter topic keeps a record: long
// enough for someone to notice the tally_…_dead_lettered_total alert and
// look. Dead letters are copies of events the events topic keeps forever,
// so losing them loses nothing the log does not hold.
const DLQRetention = 30 * 24 * time.Hour

// DLQTopicConfigs are the dead-letter topic's settings: records deleted
// after DLQRetention.
func DLQTopicConfigs() map[string]string {
	return map[string]string{"retention.ms": strconv.FormatInt(DLQRetention.Milliseconds(), 10), "cleanup.policy": "delete"}
}

// kafkaDefaults are Apache Kafka's defaults of the settings CheckEventTopic
// reads, assumed when a broker does not report one.
var kafkaDefaults = map[string]string{
	"retention.ms":    "604800000", // log.retention.hours=168
	"retention.bytes": "-1",
	"cleanup.policy":  "delete",
}

// TopicConfigError is an events topic setting under which Kafka would
// delete events.
type TopicConfigError struct {
	Topic string
	Key   string // retention.ms, retention.bytes or cleanup.policy
	Value string // as the broker reports it, broker defaults included
	// Want is the value Tally needs.
	Want string
	// Reported is false when the broker did not report Key and Value is
	// Kafka's default.
	Reported bool
}

func (e *TopicConfigError) Error() string {
	var why string
	switch e.Key {
	case "retention.ms":
		why = "Kafka would delete events older than that"
	case "retention.bytes":
		why = "Kafka would delete a partition's oldest events once it holds more bytes than that"
	case "cleanup.policy":
		why = "compaction keeps only the last record of each key and would drop a SKU's earlier events"
	}
	value := e.Value
	if !e.Reported {
		value += " (not reported by the broker; Kafka's default)"
	}
	return fmt.Sprintf("events topic %s has %s=%s: %s, before any snapshot covers them, and the write side could never rebuild a SKU from the log; "+
		"fix it with: kafka-configs --bootstrap-server <broker> --alter --entity-type topics --entity-name %s --add-config %s=%s",
		e.Topic, e.Key, value, why, e.Topic, e.Key, e.Want)
}

// CheckEventTopic refuses an events topic that does not keep every event:
// its effective retention.ms and retention.bytes (broker defaults
// included, as DescribeConfigs reports them) must be -1 and its
// cleanup.policy must not compact. It returns a *TopicConfigError per
// problem, joined. With tiered storage (remote.storage.enable=true),
// local.retention.ms may be finite: only the total retention counts.
//
// A missing topic passes: the command role creates it with
// EventTopicConfigs, which pass.
func CheckEventTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return fmt.Errorf("describe the configs of topic %s: %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("describe the configs of topic %s: %w", topic, err)
	}
	get := func(key string) (string, bool) {
		for _, c := range rc.Configs {
			if c.Key == key && c.Value != nil {
				return *c.Value, true
			}
		}
		return kafkaDefaults[key], false
	}
	var errs []error
	for _, key := range []string{"retention.ms", "retention.bytes"} {
		if v, ok := get(key); v != "-1" {
			errs = append(errs, &TopicConfigError{Topic: topic, Key: key, Value: v, Want: "-1", Reported: ok})
		}
	}
	if v, ok := get("cleanup.policy"); strings.Contains(v, "compact") {
		errs = append(errs, &TopicConfigError{Topic: topic, Key: "cleanup.policy", Value: v, Want: "delete", Reported: ok})
	}
	return errors.Join(errs...)
}
