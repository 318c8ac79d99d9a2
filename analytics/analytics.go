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
	"path"
	"slices"
	"strings"

	"github.com/tally-oss/tally/internal/readmodel"
)

//go:embed views/*.sql queries/*.sql forecast/*.sql
var files embed.FS

// View is one view of the dataset.
type View struct {
	Name string
	sql  string
}

// Query is the view's SELECT for project.dataset.
func (v View) Query(project, dataset string) string {
	return expand(v.sql, project, dataset)
}

// Views are every view in views/, in creation order: a view comes after
// the views it reads (`{{dataset}}.name`), otherwise by name. Adding a view
// is adding its file.
func Views() ([]View, error) {
	paths, err := fs.Glob(files, "views/*.sql")
	if err != nil {
		return nil, err
	}
	byName := map[string]View{}
	var names []string
	for _, p := range paths {
		b, err := files.ReadFile(p)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(path.Base(p), ".sql")
		byName[name] = View{Name: name, sql: string(b)}
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]View, 0, len(names))
	state := map[string]int{} // 1: being placed, 2: placed
	var place func(name string, chain []string) error
	place = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("analytics: views read one another in a cycle: %s", strings.Join(append(chain, name), " -> "))
		case 2:
			return nil
		}
		state[name] = 1
		for _, dep := range names {
			if dep != name && strings.Contains(byName[name].sql, "{{dataset}}."+dep+"`") {
				if err := place(dep, append(chain, name)); err != nil {
					return err
				}
			}
		}
		state[name] = 2
		out = append(out, byName[name])
		return nil
	}
	for _, name := range names {
		if err := place(name, nil); err != nil {
			return nil, err
		}
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
