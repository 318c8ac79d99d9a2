package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

func TestBatchFailuresLogOneLineForTheWorstKind(t *testing.T) {
	invalid := &ValidationError{What: "command", Violations: []Violation{{Field: "commands[0].receipt.quantity", Description: "must be positive"}}}
	unavailable := fmt.Errorf("%w: partition 3 is recovering", ErrUnavailable)
	internal := errors.New("decide and apply disagree")
	for _, tc := range []struct {
		name   string
		errs   []error
		level  string // "" for no line
		first  error
		counts map[string]int
	}{
		{name: "client errors only", errs: []error{invalid, invalid, &NotOwnerError{Partition: 1}}},
		{
			name: "unavailable", errs: []error{invalid, unavailable, fmt.Errorf("%w: other", ErrUnavailable)},
			level: "WARN", first: unavailable, counts: map[string]int{"invalid_argument": 1, "unavailable": 2},
		},
		{
			name: "internal", errs: []error{unavailable, internal, errors.New("later"), invalid},
			level: "ERROR", first: internal, counts: map[string]int{"internal": 2, "invalid_argument": 1, "unavailable": 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			b := batchFailures{byCode: map[connect.Code]int{}}
			for _, err := range tc.errs {
				code, _, _, report := (&Handler{}).classify(err)
				b.add(code, err, report)
			}
			b.log(context.Background(), slog.New(slog.NewJSONHandler(&buf, nil)), len(tc.errs))
			if tc.level == "" {
				if buf.Len() != 0 {
					t.Fatalf("logged %s, want nothing", buf.String())
				}
				return
			}
			if n := strings.Count(buf.String(), "\n"); n != 1 {
				t.Fatalf("%d lines, want 1: %s", n, buf.String())
			}
			var line struct {
				Level    string
				Commands int
				Failed   map[string]int
				Error    string
			}
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatal(err)
			}
			if line.Level != tc.level || line.Commands != len(tc.errs) || line.Error != tc.first.Error() || !maps.Equal(line.Failed, tc.counts) {
				t.Fatalf("logged %s, want level %s, %d commands, failures %v, error %q", buf.String(), tc.level, len(tc.errs), tc.counts, tc.first)
			}
		})
	}
}

func TestTooOldCommandIsFailedPreconditionWithItsHorizon(t *testing.T) {
	since := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	h := &Handler{log: slog.New(slog.DiscardHandler)}
	err := h.connectError(&CommandTooOldError{SKU: "A", CommandID: "c1", OccurredAt: since.Add(-time.Hour), RememberedSince: since})
	if err.Code() != connect.CodeFailedPrecondition || !strings.Contains(err.Message(), "too old to verify") {
		t.Fatalf("%v, want failed_precondition saying too old to verify", err)
	}
	for _, d := range err.Details() {
		v, _ := d.Value()
		if ei, ok := v.(*errdetails.ErrorInfo); ok && ei.GetReason() == ReasonCommandIDTooOld {
			if ei.GetMetadata()["remembered_since"] != since.Format(time.RFC3339Nano) || ei.GetMetadata()["command_id"] != "c1" {
				t.Fatalf("ErrorInfo metadata %v", ei.GetMetadata())
			}
			return
		}
	}
	t.Fatalf("no %s ErrorInfo in %v", ReasonCommandIDTooOld, err.Details())
}

func TestQuantityOverflowIsFailedPreconditionNotInternal(t *testing.T) {
	err := fmt.Errorf("deciding: %w", &QuantityOverflowError{SKU: "A", Store: "S1", Level: "on_hand", Current: 1<<63 - 1, Delta: 1})
	code, msg, ce, report := (&Handler{}).classify(err)
	if code != connect.CodeFailedPrecondition || report || ce.GetCode() != "failed_precondition" || !strings.Contains(msg, "beyond the range of int64") {
		t.Fatalf("classify = %v %q %v report=%v", code, msg, ce, report)
	}
}
