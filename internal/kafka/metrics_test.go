package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/testenv"
)

// Two clients made from one Security share its metrics: what one produces
// and the other fetches is counted once each, and requests are timed by
// type.
func TestClientMetricsCountEveryClientsTraffic(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	reg := prometheus.NewRegistry()
	sec := &kafka.Security{Hooks: []kgo.Hook{kafka.NewClientMetrics(reg).Hook()}}

	producer, err := kgo.NewClient(kafka.Options(c.ListenAddrs(), sec, nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	for i := range 10 {
		if err := producer.ProduceSync(t.Context(), &kgo.Record{Topic: "t", Value: fmt.Appendf(nil, "record %d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	consumer, err := kgo.NewClient(append(kafka.Options(c.ListenAddrs(), sec, nil), kgo.ConsumeTopics("t"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for got := 0; got < 10; {
		fs := consumer.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		got += fs.NumRecords()
	}

	if n := value(t, reg, "tally_kafka_produced_records_total", "t"); n != 10 {
		t.Errorf("produced records %v, want 10", n)
	}
	if n := value(t, reg, "tally_kafka_fetched_records_total", "t"); n != 10 {
		t.Errorf("fetched records %v, want 10", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	requests := map[string]uint64{}
	for _, mf := range mfs {
		series[mf.GetName()] = len(mf.GetMetric())
		if mf.GetName() == "tally_kafka_request_duration_seconds" {
			for _, m := range mf.GetMetric() {
				requests[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	for _, name := range []string{"tally_kafka_connects_total", "tally_kafka_written_bytes_total", "tally_kafka_read_bytes_total"} {
		if series[name] == 0 {
			t.Errorf("no %s", name)
		}
	}
	if requests["Produce"] == 0 || requests["Fetch"] == 0 {
		t.Errorf("requests timed by type: %v, want Produce and Fetch among them", requests)
	}
}

// value is the counter name's series of topic.
func value(t *testing.T, reg *prometheus.Registry, name, topic string) float64 {
	t.Helper()
	v, _, ok := testenv.Series(t, reg, name, map[string]string{"topic": topic})
	if !ok {
		t.Fatalf("no %s{topic=%q}", name, topic)
	}
	return v
}
