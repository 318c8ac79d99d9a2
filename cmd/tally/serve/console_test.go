package serve_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/auth"
)

// browser starts headless Chromium (Debian's; no download) for the test.
// Without it the test is skipped, except in CI (CI set), which installs it.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed (.ci/run installs it)")
		}
		t.Skip("chromium is not installed: apt-get install chromium")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1000, 800))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// artefact saves a screenshot of the page under $TALLY_TEST_ARTIFACTS
// (CI keeps it), else the test's temporary directory.
func artefact(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv("TALLY_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "console-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// within waits until the page's JavaScript expression js is true.
func within(t *testing.T, ctx context.Context, d time.Duration, what, js string) {
	t.Helper()
	ok, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(20*time.Millisecond)))
	if err != nil || !ok {
		artefact(t, ctx, "failed")
		t.Fatalf("not within %v: %s (%v)", d, what, err)
	}
}

// The console in a real browser against a real tally serve with
// authentication on: it asks for a token and uses it; a sale made
// through the API shows on the Stock page within a second; a sale below
// the reorder point shows on the Low-stock page; the Pipeline page shows
// lag 0 once the projection caught up; the heatmap shows the sales.
func TestConsoleInTheBrowser(t *testing.T) {
	ctx := browser(t)
	a := startAuthed(t)
	admin := a.as(t, "admin", auth.RoleAdmin)
	prefix := uniq("web") + "-"
	skuA, skuB := prefix+"a", prefix+"b"
	for _, sku := range []string{skuA, skuB} {
		if _, err := a.cmds.ReceiveStock(admin(t.Context()), &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 20}); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := auth.Issue(a.key, "store-manager", []auth.Role{auth.RoleAnalyst}, []string{"S1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + a.addr + "/"

	// Without a token the API refuses, and the console says what to do.
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"#/stock"), chromedp.SetValue(chromedp.ID("stock-store"), "S1"),
		chromedp.SetValue(chromedp.ID("stock-prefix"), prefix), chromedp.Click(chromedp.CSS(`form[aria-label="Find stock"] button`))); err != nil {
		t.Fatal(err)
	}
	within(t, ctx, 10*time.Second, "the console asks for a token", `document.getElementById("status").textContent.includes("token")`)
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("token"), tok), chromedp.Click(chromedp.CSS(`#token-form button`))); err != nil {
		t.Fatal(err)
	}
	avail := func(sku string) string {
		return fmt.Sprintf(`(document.querySelector('[data-available=%q]') || {}).textContent`, sku)
	}
	within(t, ctx, 10*time.Second, "the Stock page lists the store's SKUs", avail(skuA)+` === "20"`)
	artefact(t, ctx, "stock")

	// A sale through the API shows within a second of its answer.
	if _, err := a.cmds.RecordSale(admin(t.Context()), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: skuA, StoreId: "S1", Quantity: 3}); err != nil {
		t.Fatal(err)
	}
	sold := time.Now()
	within(t, ctx, time.Second, "the sale on the Stock page", avail(skuA)+` === "17"`)
	t.Logf("sale visible on the Stock page %v after its answer", time.Since(sold).Round(time.Millisecond))

	// History of the SKU, opened from the list.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[data-sku=%q]`, skuA)))); err != nil {
		t.Fatal(err)
	}
	within(t, ctx, 5*time.Second, "the SKU's history with the sale", `[...document.querySelectorAll("section[aria-label=History] td")].some(td => td.textContent === "sale")`)
	artefact(t, ctx, "history")

	// Low stock: a sale below the reorder point (10) appears, highlighted.
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"#/low-stock"), chromedp.SetValue(chromedp.ID("low-stores"), "S1"),
		chromedp.SetValue(chromedp.ID("low-prefix"), prefix), chromedp.Click(chromedp.CSS(`form[aria-label="Watch"] button`))); err != nil {
		t.Fatal(err)
	}
	within(t, ctx, 10*time.Second, "the watch is live", `document.getElementById("status").textContent.startsWith("Watching")`)
	if _, err := a.cmds.RecordSale(admin(t.Context()), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: skuB, StoreId: "S1", Quantity: 15}); err != nil {
		t.Fatal(err)
	}
	within(t, ctx, 5*time.Second, "the crossing on the Low-stock page", fmt.Sprintf(
		`[...document.querySelectorAll("tr.fresh")].some(tr => tr.cells[0].textContent === %q && tr.cells[2].textContent === "low" && tr.cells[3].textContent === "5")`, skuB))
	artefact(t, ctx, "low-stock")

	// Pipeline: caught up, lag 0, a visibility figure.
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"#/pipeline")); err != nil {
		t.Fatal(err)
	}
	within(t, ctx, 10*time.Second, "lag 0 on the Pipeline page", `(document.getElementById("lag") || {}).textContent === "0" && document.getElementById("visibility").textContent.includes("p99")`)
	artefact(t, ctx, "pipeline")

	// Heatmap: both SKUs sold in the last hour at S1.
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"#/heatmap"), chromedp.SetValue(chromedp.ID("heat-stores"), "S1"),
		chromedp.Click(chromedp.CSS(`form[aria-label="Heatmap"] button`))); err != nil {
		t.Fatal(err)
	}
	within(t, ctx, 10*time.Second, "the sales on the heatmap", fmt.Sprintf(
		`[...document.querySelectorAll("table.heat th[scope=row]")].some(th => th.textContent === %q && th.nextElementSibling.classList.contains("low"))`, skuB))
	artefact(t, ctx, "heatmap")

	// Phone width: nothing wider than the screen but the tables' own scrollers.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 800)); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
	if err != nil {
		t.Fatal(err)
	}
	artefact(t, ctx, "phone")
	if overflow {
		t.Error("the page is wider than a 390 px screen")
	}
}
