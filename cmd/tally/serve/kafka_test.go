package serve_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/cmd/tally/serve"
	"github.com/tally-oss/tally/internal/kafka"
)

// `tally kafka` serves the real protocol with the events topic made, keeps
// what it acknowledged across a restart, and refuses a second broker on its
// data directory.
func TestKafkaSubcommandPersistsTheLog(t *testing.T) {
	dir, listen := t.TempDir(), freeAddr()
	start := func() (stop func() error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- serve.RunKafka(ctx, []string{"--listen", listen, "--data-dir", dir, "--partitions", "4", "--log-level", "warn"})
		}()
		return func() error { cancel(); return <-done }
	}
	client := func() *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.ConsumeTopics(kafka.EventsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	// waitTopic waits until the broker answers with the topic made.
	waitTopic := func(cl *kgo.Client) kadm.TopicDetail {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			td, err := kadm.NewClient(cl).ListTopics(t.Context(), kafka.EventsTopic)
			if err == nil && td.Has(kafka.EventsTopic) && td[kafka.EventsTopic].Err == nil {
				return td[kafka.EventsTopic]
			}
			if time.Now().After(deadline) {
				t.Fatalf("tally kafka did not serve the events topic in 15s: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	stop := start()
	cl := client()
	if n := len(waitTopic(cl).Partitions); n != 4 {
		t.Fatalf("events topic has %d partitions, want 4", n)
	}
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: kafka.EventsTopic, Key: []byte("k"), Value: []byte("kept")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	if err := serve.RunKafka(t.Context(), []string{"--listen", freeAddr(), "--data-dir", dir}); err == nil {
		t.Fatal("a second tally kafka on the same data directory started")
	}
	if err := stop(); err != nil {
		t.Fatalf("tally kafka stopped with %v", err)
	}

	stop = start()
	defer stop()
	cl = client()
	defer cl.Close()
	waitTopic(cl)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	if recs := fs.Records(); len(recs) != 1 || string(recs[0].Value) != "kept" {
		t.Fatalf("after a restart the log holds %v, want the one record produced", recs)
	}
}
