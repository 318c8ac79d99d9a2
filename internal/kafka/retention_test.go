package kafka_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/kafka"
)

// newAdmin starts a kfake cluster for the test and returns an admin client
// on it; both end with the test.
func newAdmin(t testing.TB) *kadm.Client {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func TestEventTopicThatWouldLoseEventsIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		configs map[string]string // nil: the broker's defaults
		want    []string          // the keys refused; none: the topic passes
	}{
		{"created by Tally", kafka.EventTopicConfigs(), nil},
		{"cleanup.policy left to the broker", map[string]string{"retention.ms": "-1", "retention.bytes": "-1"}, nil},
		{"one day of retention", map[string]string{"retention.ms": "86400000", "retention.bytes": "-1"}, []string{"retention.ms"}},
		{"a size limit", map[string]string{"retention.ms": "-1", "retention.bytes": "1073741824"}, []string{"retention.bytes"}},
		{"compacted", map[string]string{"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "compact"}, []string{"cleanup.policy"}},
		{"compacted and deleted", map[string]string{"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "compact,delete"}, []string{"cleanup.policy"}},
		// The broker's default, log.retention.ms, is 7 days (kfake's too).
		{"broker defaults", nil, []string{"retention.ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adm := newAdmin(t)
			if _, err := kafka.EnsureTopic(t.Context(), adm, kafka.EventsTopic, 1, tc.configs); err != nil {
				t.Fatal(err)
			}
			err := kafka.CheckEventTopic(t.Context(), adm, kafka.EventsTopic)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("passed; want %v refused", tc.want)
			}
			t.Log(err)
			for _, key := range tc.want {
				var ce *kafka.TopicConfigError
				if !errors.As(err, &ce) || ce.Key != key || ce.Topic != kafka.EventsTopic || !ce.Reported {
					t.Errorf("error %#v; want a *TopicConfigError on %s, reported", ce, key)
				}
				fix := "--entity-name " + kafka.EventsTopic + " --add-config " + key + "="
				if !strings.Contains(err.Error(), fix) {
					t.Errorf("error does not say how to fix it (%q)", fix)
				}
			}
		})
	}
}

func TestMissingEventTopicPasses(t *testing.T) {
	if err := kafka.CheckEventTopic(t.Context(), newAdmin(t), kafka.EventsTopic); err != nil {
		t.Fatalf("refused a topic that is not there yet: %v", err)
	}
}

func TestDLQTopicForgetsAfterThirtyDays(t *testing.T) {
	adm := newAdmin(t)
	if _, err := kafka.EnsureTopic(t.Context(), adm, kafka.DLQTopic, 1, kafka.DLQTopicConfigs()); err != nil {
		t.Fatal(err)
	}
	rcs, err := adm.DescribeTopicConfigs(t.Context(), kafka.DLQTopic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(kafka.DLQTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := "not reported"
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" {
			got = c.MaybeValue()
		}
	}
	if got != "2592000000" {
		t.Errorf("dead-letter topic retention.ms=%s; want 30 days, 2592000000", got)
	}
}
