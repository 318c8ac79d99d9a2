package query_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/query"
)

func TestProjectionStatusReportsTheNewestDeadLetters(t *testing.T) {
	f := newFixture(t, query.Config{})
	c, exec := f.c, f.exec
	status := func() *inventoryv1.GetProjectionStatusResponse {
		t.Helper()
		r, err := c.GetProjectionStatus(t.Context(), connect.NewRequest(&inventoryv1.GetProjectionStatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg
	}
	if s := status(); s.GetDeadLetterCount() != 0 || len(s.GetRecentDeadLetters()) != 0 {
		t.Fatalf("a read model without dead letters reports %d: %v", s.GetDeadLetterCount(), s.GetRecentDeadLetters())
	}

	// Twelve events refused over an hour, one record that did not decode
	// after them, and one dead letter of another projection.
	exec(`INSERT INTO projection_dead_letters (consumer, log_partition, log_offset, event_id, sku_id, sku_version, error, sqlstate, dead_lettered_at)
		SELECT 'postgres', i % 3, 100 + i, ('00000000-0000-7000-8000-0000000000' || lpad(i::text, 2, '0'))::uuid, 'sku-' || i, i,
		       'postgres refused the event: invalid byte sequence', '22021', now() - interval '1 hour' + i * interval '1 minute'
		FROM generate_series(1, 12) i`)
	exec(`INSERT INTO projection_dead_letters (consumer, log_partition, log_offset, error) VALUES ('postgres', 2, 500, 'decode InventoryEvent: bad')`)
	exec(`INSERT INTO projection_dead_letters (consumer, log_partition, log_offset, error) VALUES ('replay', 0, 7, 'other')`)

	s := status()
	var got []string
	for _, d := range s.GetRecentDeadLetters() {
		got = append(got, fmt.Sprintf("%d/%d:%s:%s:%d:%s", d.GetPartition(), d.GetOffset(), d.GetEventId(), d.GetSkuId(), d.GetSkuVersion(), d.GetSqlstate()))
		if d.GetError() == "" || d.GetDeadLetteredAt() == nil {
			t.Errorf("dead letter %d/%d without error or time", d.GetPartition(), d.GetOffset())
		}
	}
	want := []string{"2/500:::0:"}
	for i := 12; len(want) < query.RecentDeadLetters; i-- {
		want = append(want, fmt.Sprintf("%d/%d:00000000-0000-7000-8000-0000000000%02d:sku-%d:%d:22021", i%3, 100+i, i, i, i))
	}
	if s.GetDeadLetterCount() != 13 || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%d dead letters, newest first:\n%s\nwant 13:\n%s", s.GetDeadLetterCount(), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The lag is the log's end offsets (read through the Kafka admin client)
// minus where the projection's rows say it is, per partition.
func TestProjectionStatusReportsLagAgainstTheLog(t *testing.T) {
	topic := fmt.Sprintf("test.events.%d", time.Now().UnixNano())
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	if _, err := kafka.EnsureTopic(t.Context(), adm, topic, 3, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })
	// 5 records in partition 0, 2 in partition 1, none in partition 2.
	for p, n := range []int{5, 2, 0} {
		for range n {
			if err := cl.ProduceSync(t.Context(), &kgo.Record{Partition: int32(p), Value: []byte("x")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	f := newFixture(t, query.Config{Admin: adm, Topic: topic})
	newest := time.Now().Add(-time.Minute)
	f.exec(`INSERT INTO `+readmodel.Offsets+` (consumer, log_partition, next_offset, newest_recorded_at)
		VALUES ('postgres', 0, 3, $1), ('postgres', 1, 2, $1), ('replay', 0, 5, $1)`, newest)

	r, err := f.c.GetProjectionStatus(t.Context(), connect.NewRequest(&inventoryv1.GetProjectionStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range r.Msg.GetPartitions() {
		got = append(got, fmt.Sprintf("%d:%d/%d lag %d", p.GetPartition(), p.GetNextOffset(), p.GetEndOffset(), p.GetLag()))
	}
	if want := []string{"0:3/5 lag 2", "1:2/2 lag 0", "2:0/0 lag 0"}; !slices.Equal(got, want) || r.Msg.GetTotalLag() != 2 {
		t.Fatalf("partitions %v, total lag %d; want %v, total 2", got, r.Msg.GetTotalLag(), want)
	}
	if p := r.Msg.GetPartitions()[0]; !p.GetNewestRecordedAt().AsTime().Equal(newest.Truncate(time.Microsecond)) || p.GetNewestAgeMs() < time.Minute.Milliseconds() {
		t.Errorf("partition 0's newest %v, age %dms; want %v, at least a minute", p.GetNewestRecordedAt().AsTime(), p.GetNewestAgeMs(), newest)
	}
}
