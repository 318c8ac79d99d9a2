package analytics_test

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/tally-oss/tally/analytics"
)

// Every shipped file expands to SQL with no placeholder left, and none
// spells the sale types out by hand: they come from internal/readmodel.
func TestShippedSQLUsesTheDeclaredSaleTypes(t *testing.T) {
	var paths []string
	for _, dir := range []string{"views", "queries", "forecast"} {
		entries, err := fs.ReadDir(analytics.Files(), dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			paths = append(paths, dir+"/"+e.Name())
		}
	}
	for _, p := range paths {
		sql, err := analytics.SQL(p, "proj", "ds")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(sql, "{{") {
			t.Errorf("%s: a placeholder is left after expansion", p)
		}
		raw, _ := fs.ReadFile(analytics.Files(), p)
		if strings.Contains(string(raw), "'RESERVATION_COMMITTED'") {
			t.Errorf("%s spells the sale types out; use {{sale_types}}", p)
		}
		if strings.Contains(string(raw), "{{sale_types}}") && !strings.Contains(sql, "'SALE', 'RESERVATION_COMMITTED'") {
			t.Errorf("%s: {{sale_types}} did not expand to the sale types", p)
		}
	}
	if len(paths) < 10 {
		t.Fatalf("only %d files found", len(paths))
	}
}

// Every view in views/ is created, each after the views it reads.
func TestViewsComeAfterTheViewsTheyRead(t *testing.T) {
	views, err := analytics.Views()
	if err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(analytics.Files(), "views/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != len(files) {
		t.Fatalf("%d views for %d files in views/", len(views), len(files))
	}
	at := map[string]int{}
	for i, v := range views {
		at[v.Name] = i
	}
	for _, v := range views {
		for _, other := range views {
			if strings.Contains(v.Query("p", "d"), "`p.d."+other.Name+"`") && at[other.Name] > at[v.Name] {
				t.Errorf("view %s reads %s, created after it", v.Name, other.Name)
			}
		}
	}
	if at["low_stock"] < at["stock_position"] {
		t.Errorf("low_stock (reads stock_position) at %d, before stock_position at %d", at["low_stock"], at["stock_position"])
	}
}
