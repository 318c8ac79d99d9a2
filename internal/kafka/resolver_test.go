package kafka_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/kafka"
)

func TestResolverReleasesInOffsetOrder(t *testing.T) {
	const a, b = 1, 2 // producer ids
	data := func(off int64, pid int64, epoch int16, txn bool) *kgo.Record {
		r := &kgo.Record{Offset: off, ProducerID: pid, ProducerEpoch: epoch, Value: []byte(fmt.Sprint(off))}
		if txn {
			r.Attrs = kgo.NewRecordAttrs(kgo.RecordAttrsOpts{Transactional: true})
		}
		return r
	}
	marker := func(off int64, pid int64, commit bool) *kgo.Record {
		typ := byte(0)
		if commit {
			typ = 1
		}
		return &kgo.Record{Offset: off, ProducerID: pid, Attrs: kgo.NewRecordAttrs(kgo.RecordAttrsOpts{Transactional: true, Control: true}), Key: []byte{0, 0, 0, typ}}
	}
	var r kafka.Resolver
	var out []*kgo.Record
	for _, rec := range []*kgo.Record{
		data(0, a, 0, true),  // a's txn, committed at 4
		data(1, b, 0, true),  // b's txn, aborted at 3
		data(2, 0, 0, false), // outside any transaction: waits for 0
		marker(3, b, false),
		marker(4, a, true),
		data(5, a, 1, true), // a, epoch 1: open, then superseded by epoch 2
		data(6, a, 2, true), // a, epoch 2: committed at 7
		marker(7, a, true),
		data(8, b, 0, true), // open at the end: aborted by Finish
	} {
		out = r.Add(rec, out)
	}
	out = r.Finish(out)
	var got []int64
	for _, rec := range out {
		got = append(got, rec.Offset)
	}
	if want := []int64{0, 2, 6}; !slices.Equal(got, want) {
		t.Errorf("released offsets %v, want %v", got, want)
	}
	if r.Aborted != 3 || r.Unmarked != 2 {
		t.Errorf("aborted %d, unmarked %d; want 3 and 2", r.Aborted, r.Unmarked)
	}
}
