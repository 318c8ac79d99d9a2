package bench

import (
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"strings"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// Mix is the share of each command kind, in percent.
type Mix struct{ Sale, Return, Receipt, Transfer int }

// ParseMix reads "sale=70,return=10,receipt=15,transfer=5".
func ParseMix(s string) (Mix, error) {
	var m Mix
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return m, fmt.Errorf("--mix: %q is not kind=percent", part)
		}
		switch k {
		case "sale":
			m.Sale = n
		case "return":
			m.Return = n
		case "receipt":
			m.Receipt = n
		case "transfer":
			m.Transfer = n
		default:
			return m, fmt.Errorf("--mix: unknown kind %q (sale, return, receipt, transfer)", k)
		}
	}
	if m.Sale+m.Return+m.Receipt+m.Transfer != 100 {
		return m, errors.New("--mix: percentages must add up to 100")
	}
	return m, nil
}

// workload generates a repeatable command sequence: SKU popularity is
// Zipf-distributed, stores uniform, kinds by the mix.
type workload struct {
	rng    *rand.Rand
	zipf   *rand.Zipf
	stores int
	mix    Mix
	runID  string
	seq    int64
}

func newWorkload(seed int64, skus, stores int, s float64, mix Mix, runID string) *workload {
	rng := rand.New(rand.NewSource(seed))
	return &workload{rng: rng, zipf: rand.NewZipf(rng, s, 1, uint64(skus-1)), stores: stores, mix: mix, runID: runID}
}

// SKUName and StoreName name the workload's keys; SKU 0 is the hottest.
func SKUName(i int) string   { return fmt.Sprintf("SKU-%06d", i) }
func StoreName(i int) string { return fmt.Sprintf("ST-%03d", i) }

func (w *workload) next() *inventoryv1.Command {
	w.seq++
	id := fmt.Sprintf("bench-%s-%d", w.runID, w.seq)
	sku := SKUName(int(w.zipf.Uint64()))
	store := StoreName(w.rng.Intn(w.stores))
	roll := w.rng.Intn(100)
	switch {
	case roll < w.mix.Sale:
		return &inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{
			CommandId: id, SkuId: sku, StoreId: store, Quantity: int64(1 + w.rng.Intn(3))}}}
	case roll < w.mix.Sale+w.mix.Return:
		return &inventoryv1.Command{Kind: &inventoryv1.Command_Return{Return: &inventoryv1.RecordReturnRequest{
			CommandId: id, SkuId: sku, StoreId: store, Quantity: 1}}}
	case roll < w.mix.Sale+w.mix.Return+w.mix.Receipt:
		return &inventoryv1.Command{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{
			CommandId: id, SkuId: sku, StoreId: store, Quantity: int64(10 + w.rng.Intn(41))}}}
	}
	to := (w.rng.Intn(w.stores-1) + 1 + storeIndex(store)) % w.stores
	return &inventoryv1.Command{Kind: &inventoryv1.Command_Transfer{Transfer: &inventoryv1.TransferStockRequest{
		CommandId: id, SkuId: sku, FromStoreId: store, ToStoreId: StoreName(to), Quantity: int64(1 + w.rng.Intn(5))}}}
}

func storeIndex(name string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(name, "ST-"))
	return n
}

// seedCommands stocks the hottest SKUs at every store.
func seedCommands(runID string, skus, stores int, units int64) []*inventoryv1.Command {
	out := make([]*inventoryv1.Command, 0, skus*stores)
	for i := range skus {
		for s := range stores {
			out = append(out, &inventoryv1.Command{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{
				CommandId: fmt.Sprintf("seed-%s-%d-%d", runID, i, s), SkuId: SKUName(i), StoreId: StoreName(s), Quantity: units}}})
		}
	}
	return out
}

// keyOf returns a command's SKU and (first) store.
func keyOf(c *inventoryv1.Command) (sku, store string) {
	switch k := c.GetKind().(type) {
	case *inventoryv1.Command_Sale:
		return k.Sale.GetSkuId(), k.Sale.GetStoreId()
	case *inventoryv1.Command_Return:
		return k.Return.GetSkuId(), k.Return.GetStoreId()
	case *inventoryv1.Command_Receipt:
		return k.Receipt.GetSkuId(), k.Receipt.GetStoreId()
	case *inventoryv1.Command_Transfer:
		return k.Transfer.GetSkuId(), k.Transfer.GetFromStoreId()
	}
	return "", ""
}

func commandID(c *inventoryv1.Command) string {
	switch k := c.GetKind().(type) {
	case *inventoryv1.Command_Sale:
		return k.Sale.GetCommandId()
	case *inventoryv1.Command_Return:
		return k.Return.GetCommandId()
	case *inventoryv1.Command_Receipt:
		return k.Receipt.GetCommandId()
	case *inventoryv1.Command_Transfer:
		return k.Transfer.GetCommandId()
	}
	return ""
}

func kindName(c *inventoryv1.Command) string {
	switch c.GetKind().(type) {
	case *inventoryv1.Command_Sale:
		return "sale"
	case *inventoryv1.Command_Return:
		return "return"
	case *inventoryv1.Command_Receipt:
		return "receipt"
	case *inventoryv1.Command_Transfer:
		return "transfer"
	}
	return "other"
}
