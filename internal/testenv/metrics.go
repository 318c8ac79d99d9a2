package testenv

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Series finds the series of the metric name in g whose labels include
// labels, and returns its value (counter or gauge) and its histogram's
// sample count; ok is false when there is no such series.
func Series(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) (value float64, samples uint64, ok bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue(), m.GetHistogram().GetSampleCount(), true
		}
	}
	return 0, 0, false
}
