package projector

import (
	"testing"

	"cloud.google.com/go/bigquery"
)

func TestOnlyRowsBigQueryCallsInvalidAreDeadLettered(t *testing.T) {
	row := func(reasons ...string) bigquery.RowInsertionError {
		var errs bigquery.MultiError
		for _, r := range reasons {
			errs = append(errs, &bigquery.Error{Reason: r, Message: "m"})
		}
		return bigquery.RowInsertionError{Errors: errs}
	}
	for _, c := range []struct {
		row  bigquery.RowInsertionError
		want bool
	}{
		{row("invalid"), true},
		{row("invalid", "invalid"), true},
		{row("stopped"), false}, // not inserted because of another row: retry it
		{row("invalid", "backendError"), false},
		{row("timeout"), false},
		{row(), false},
	} {
		if got := invalidRow(c.row); got != c.want {
			t.Errorf("invalidRow(%v) = %v, want %v", c.row.Errors, got, c.want)
		}
	}
}
