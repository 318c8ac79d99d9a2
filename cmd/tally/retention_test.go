package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/kafka"
)

// startKafka starts a kfake cluster for the test and returns its address
// and an admin client on it; both end with the test.
func startKafka(t testing.TB) (string, *kadm.Client) {
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
	return c.ListenAddrs()[0], kadm.NewClient(cl)
}

func TestCommandRefusesAnEventsTopicThatForgets(t *testing.T) {
	for _, tc := range []struct {
		name      string
		key, val  string
		fix       string
		configsOK map[string]string // the rest of the topic's configs
	}{
		{"a day of retention", "retention.ms", "86400000", "--add-config retention.ms=-1", map[string]string{"retention.bytes": "-1"}},
		{"compaction", "cleanup.policy", "compact", "--add-config cleanup.policy=delete", map[string]string{"retention.ms": "-1", "retention.bytes": "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			brokers, adm := startKafka(t)
			configs := map[string]*string{tc.key: &tc.val}
			for k, v := range tc.configsOK {
				configs[k] = &v
			}
			if _, err := adm.CreateTopic(t.Context(), 1, 1, configs, kafka.EventsTopic); err != nil {
				t.Fatal(err)
			}

			code, stderr := startTally(t, "command", "--insecure-no-auth", "--kafka-brokers", brokers, "--addr", freeAddr(t), "--log-level", "warn").exited(t, time.Minute)
			t.Logf("tally command: exit %d, stderr:\n%s", code, stderr)
			if code != 1 {
				t.Errorf("tally command on a topic with %s=%s: exit %d, want 1", tc.key, tc.val, code)
			}
			for _, want := range []string{kafka.EventsTopic, tc.key + "=" + tc.val, "kafka-configs", tc.fix, "never rebuild"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("tally command's error does not say %q", want)
				}
			}
		})
	}
}

func TestCommandCreatesAnEventsTopicThatKeepsEverything(t *testing.T) {
	brokers, adm := startKafka(t)
	addr := freeAddr(t)
	p := startTally(t, "command", "--insecure-no-auth", "--kafka-brokers", brokers, "--addr", addr, "--partitions", "2", "--log-level", "warn")
	p.waitFor(t, "serving", serving(addr))

	rcs, err := adm.DescribeTopicConfigs(t.Context(), kafka.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(kafka.EventsTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range rc.Configs {
		got[c.Key] = c.MaybeValue()
	}
	for k, want := range map[string]string{"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"} {
		if got[k] != want {
			t.Errorf("events topic Tally created has %s=%q; want %q", k, got[k], want)
		}
	}
	if err := kafka.CheckEventTopic(t.Context(), adm, kafka.EventsTopic); err != nil {
		t.Errorf("the topic Tally created fails its own check: %v", err)
	}

	// A second start finds the topic and passes the check.
	addr2 := freeAddr(t)
	second := startTally(t, "command", "--insecure-no-auth", "--kafka-brokers", brokers, "--addr", addr2, "--partitions", "2", "--log-level", "warn")
	second.waitFor(t, "serving", serving(addr2))
	for _, p := range []*proc{second, p} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, stderr := p.exited(t, time.Minute); code != 0 {
			t.Errorf("tally command after SIGTERM: exit %d, stderr:\n%s", code, stderr)
		}
	}
}
