package command

import (
	"testing"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// A kind added to the proto's Apply batch without its kind_<name>.go file
// would be refused in every batch; the compiler cannot see it, this can.
func TestEveryBatchKindIsRegistered(t *testing.T) {
	fields := (*inventoryv1.Command)(nil).ProtoReflect().Descriptor().Oneofs().ByName("kind").Fields()
	names := map[string]bool{}
	for _, k := range kinds() {
		names[kindName(k)] = true
	}
	for i := range fields.Len() {
		if name := string(fields.Get(i).Name()); !names[name] {
			t.Errorf("Command.%s has no registered kind", name)
		}
	}
	if len(kinds()) != fields.Len() {
		t.Errorf("%d kinds registered for %d fields of Command.kind", len(kinds()), fields.Len())
	}
}

func TestKindNamesAreTheBatchFields(t *testing.T) {
	for k, want := range map[Kind]string{
		KindSale: "sale", KindReturn: "return", KindReceipt: "receipt", KindAdjustment: "adjustment",
		KindTransfer: "transfer", KindReserve: "reserve", KindCommitReservation: "commit_reservation",
		KindReleaseReservation: "release_reservation", KindSetReorderPolicy: "reorder_policy", KindCountStock: "count",
		Kind(0): "unknown",
	} {
		if got := kindName(k); got != want {
			t.Errorf("kindName(%d) = %q, want %q", int(k), got, want)
		}
	}
}

// A kind's number is in the fingerprint of every command of it in the log
// (command/domain's encoding test uses sale's): renumbering a kind breaks
// every retry across the upgrade.
func TestKindNumbersNeverChange(t *testing.T) {
	for k, want := range map[Kind]int{
		KindSale: 1, KindReturn: 2, KindReceipt: 3, KindAdjustment: 4, KindTransfer: 5, KindReserve: 6,
		KindCommitReservation: 7, KindReleaseReservation: 8, KindSetReorderPolicy: 9, KindCountStock: 10,
	} {
		if int(k) != want {
			t.Errorf("%s is kind %d, was %d", kindName(k), int(k), want)
		}
	}
}
