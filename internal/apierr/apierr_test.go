package apierr_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/tally-oss/tally/internal/apierr"
)

func TestIDProblem(t *testing.T) {
	for _, c := range []struct {
		id       string
		required bool
		want     string
	}{
		{"SKU-1", true, ""},
		{"", false, ""},
		{"", true, "required"},
		{"a b", true, "must not contain spaces or control characters"},
		{"a\x00b", true, "must not contain spaces or control characters"},
		{"\xff", true, "must be valid UTF-8"},
		{strings.Repeat("x", apierr.MaxIDBytes+1), true, "at most 128 bytes, got 129"},
	} {
		if got := apierr.IDProblem(c.id, c.required); got != c.want {
			t.Errorf("IDProblem(%q, %v) = %q, want %q", c.id, c.required, got, c.want)
		}
	}
}

func TestInvalidArgumentCarriesEveryViolation(t *testing.T) {
	e := &apierr.InvalidError{What: "command", Violations: []apierr.Violation{{Field: "sku_id", Description: "required"}, {Field: "quantity", Description: "must be > 0"}}}
	ce := apierr.InvalidArgument(e)
	if ce.Code() != connect.CodeInvalidArgument || ce.Message() != "invalid command: sku_id: required; quantity: must be > 0" {
		t.Fatalf("%v %q", ce.Code(), ce.Message())
	}
	var fields []string
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			t.Fatal(err)
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			for _, f := range br.GetFieldViolations() {
				fields = append(fields, f.GetField())
			}
		}
	}
	if strings.Join(fields, ",") != "sku_id,quantity" {
		t.Errorf("BadRequest fields %v", fields)
	}
}
