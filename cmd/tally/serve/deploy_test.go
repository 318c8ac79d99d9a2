package serve_test

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// metricName is a metric in a PromQL expression.
var metricName = regexp.MustCompile(`\b(?:tally|go|process)_[a-z0-9_]+\b`)

// The Grafana dashboard and the Prometheus alert rules in deploy/ use only
// metrics that tally serve serves (after a command and a few reads), so
// neither shows "no data" for a typo or a renamed metric.
func TestDashboardAndAlertsUseServedMetrics(t *testing.T) {
	sku := uniq("deploy")
	r, err := cmds.ReceiveStock(t.Context(), &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 5})
	if err != nil {
		t.Fatal(err)
	}
	getStock(t, sku, "S1", r.GetResult().GetSkuVersion())
	getStock(t, sku, "S1", 0)
	if _, err := qry.BatchGetStock(t.Context(), &inventoryv1.BatchGetStockRequest{Keys: []*inventoryv1.StockKey{{SkuId: sku, StoreId: "S1"}}}); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	served, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	exists := func(name string) bool {
		if _, ok := served[name]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f, ok := served[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) && f.GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
		return false
	}

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile("../../../deploy/grafana/tally-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	used := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				used++
				if !exists(m) {
					t.Errorf("dashboard panel %q uses %s, which tally serve does not serve", p.Title, m)
				}
			}
		}
	}
	rules, err := os.ReadFile("../../../deploy/prometheus/tally-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for i, line := range strings.Split(string(rules), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "- alert: ") {
			alerts++
		}
		for _, m := range metricName.FindAllString(line, -1) {
			used++
			if !exists(m) {
				t.Errorf("tally-alerts.yml line %d uses %s, which tally serve does not serve", i+1, m)
			}
		}
	}
	if used < 30 || alerts < 6 {
		t.Fatalf("found %d metric uses and %d alerts: the files were not read as meant", used, alerts)
	}
	// The four: lag growing, DLQ non-empty, visibility p99 above
	// the SLO, writer rebuilds.
	for _, a := range []string{"TallyProjectionLagGrowing", "TallyDeadLetters", "TallyVisibilityP99AboveSLO", "TallyWriterRebuildsRepeatedly"} {
		if !strings.Contains(string(rules), "- alert: "+a+"\n") {
			t.Errorf("no alert %s", a)
		}
	}
}
