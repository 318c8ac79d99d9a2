package readmodel_test

import (
	"slices"
	"testing"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/readmodel"
)

func TestSaleTypesInEveryForm(t *testing.T) {
	if got, want := readmodel.SaleTypeNumbers(), []int16{int16(inventoryv1.EventType_EVENT_TYPE_SALE), int16(inventoryv1.EventType_EVENT_TYPE_RESERVATION_COMMITTED)}; !slices.Equal(got, want) {
		t.Errorf("SaleTypeNumbers() = %v, want %v", got, want)
	}
	if got, want := readmodel.SaleTypeNames(), "'SALE', 'RESERVATION_COMMITTED'"; got != want {
		t.Errorf("SaleTypeNames() = %s, want %s", got, want)
	}
}
