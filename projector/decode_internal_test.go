package projector

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// FuzzDecodeRecord decodes random record values as a consumer's batch
// does: each is an event every projection can take, or a dead letter with
// its error, never a panic and never both. (That a dead letter reaches the
// DLQ and the projection goes on is TestGarbageRecordIsDeadLetteredAndProjectionContinues.)
func FuzzDecodeRecord(f *testing.F) {
	at := timestamppb.New(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	valid, err := proto.Marshal(&inventoryv1.InventoryEvent{
		EventId: uuid.NewString(), EventType: inventoryv1.EventType_EVENT_TYPE_SALE, SkuId: "A", StoreId: "S1",
		SkuVersion: 1, QuantityDelta: -1, OnHandAfter: 4, OccurredAt: at, RecordedAt: at, Metadata: map[string]string{"k": "v"},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte{})
	f.Add([]byte("not a protobuf at all"))
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // a length beyond the value
	f.Fuzz(func(t *testing.T, value []byte) {
		l := &loop{}
		b := l.decode([]partBatch{{partition: 0, recs: []*kgo.Record{{Value: value}}, next: 1}}, true)
		switch {
		case len(b.events)+len(b.dead) != 1:
			t.Fatalf("%d events and %d dead letters of one record", len(b.events), len(b.dead))
		case len(b.dead) == 1:
			if b.dead[0].err == nil {
				t.Fatal("dead letter without its error")
			}
		default:
			e := b.events[0].e
			if e.GetSkuId() == "" || e.GetStoreId() == "" || e.GetSkuVersion() <= 0 ||
				e.GetEventType() == inventoryv1.EventType_EVENT_TYPE_UNSPECIFIED ||
				e.GetOccurredAt().CheckValid() != nil || e.GetRecordedAt().CheckValid() != nil {
				t.Fatalf("decoded an event a projection cannot take: %v", e)
			}
			if b.events[0].id.String() != e.GetEventId() && uuid.MustParse(e.GetEventId()) != b.events[0].id {
				t.Fatalf("event id %v of %q", b.events[0].id, e.GetEventId())
			}
		}
	})
}
