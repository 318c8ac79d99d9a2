// Package analytics ships the BigQuery analytics of Tally's analytical
// model as SQL files: views the BigQuery projector creates in the dataset
// (views/), parameterised queries (queries/) and the BigQuery ML demand
// forecast (forecast/). In the files, {{dataset}} stands for
// project.dataset and {{sale_types}} for the event types that sell stock
// (readmodel.SaleTypes, the same set the query side counts); README.md
// shows each.
package analytics

import (
	"embed"
	"fmt"
	"io/fs"
	"strings"

	"github.com/tally-oss/tally/internal/readmodel"
)

//go:embed views/*.sql queries/*.sql forecast/*.sql
var files embed.FS

// viewOrder is the creation order: a view comes after the views it reads.
var viewOrder = []string{
	"event_volume_minute",
	"event_volume_hour",
	"daily_sales",
	"hot_skus",
	"stock_heatmap",
	"stock_position",
	"low_stock",
	"stuck_inventory",
	"phantom_inventory",
}

// View is one view of the dataset.
type View struct {
	Name string
	sql  string
}

// Query is the view's SELECT for project.dataset.
func (v View) Query(project, dataset string) string {
	return expand(v.sql, project, dataset)
}

// Views are every view, in creation order.
func Views() ([]View, error) {
	out := make([]View, 0, len(viewOrder))
	for _, name := range viewOrder {
		b, err := files.ReadFile("views/" + name + ".sql")
		if err != nil {
			return nil, err
		}
		out = append(out, View{Name: name, sql: string(b)})
	}
	return out, nil
}

// SQL returns a shipped file (e.g. "queries/low_stock.sql") for
// project.dataset.
func SQL(path, project, dataset string) (string, error) {
	b, err := files.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("analytics: %w", err)
	}
	return expand(string(b), project, dataset), nil
}

func expand(sql, project, dataset string) string {
	return strings.NewReplacer("{{dataset}}", project+"."+dataset, "{{sale_types}}", readmodel.SaleTypeNames()).Replace(sql)
}

// Files are the shipped SQL files as they are stored, placeholders
// included.
func Files() fs.FS { return files }
