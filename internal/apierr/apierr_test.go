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
		{"a b", true, "must not contain spaces: U+0020 at byte 1"},
		{"a\u00a0b", true, "must not contain spaces: U+00A0 at byte 1"},
		{"a\u3000b", true, "must not contain spaces: U+3000 at byte 1"},
		{"a\u2800b", true, "must not contain spaces: U+2800 at byte 1"},
		{"a\x00b", true, "must not contain control characters: U+0000 at byte 1"},
		{"a\x1bb", true, "must not contain control characters: U+001B at byte 1"},
		{"a\u0085b", true, "must not contain control characters: U+0085 at byte 1"},
		{"a\u200bb", true, "must not contain invisible characters (zero-width, joiners, format characters): U+200B at byte 1"},
		{"a\u200cb", true, "must not contain invisible characters (zero-width, joiners, format characters): U+200C at byte 1"},
		{"a\u200db", true, "must not contain invisible characters (zero-width, joiners, format characters): U+200D at byte 1"},
		{"a\u2060b", true, "must not contain invisible characters (zero-width, joiners, format characters): U+2060 at byte 1"},
		{"\ufeffab", true, "must not contain invisible characters (zero-width, joiners, format characters): U+FEFF at byte 0"},
		{"a\u00adb", true, "must not contain invisible characters (zero-width, joiners, format characters): U+00AD at byte 1"},
		{"a\ufe0fb", true, "must not contain invisible characters (zero-width, joiners, format characters): U+FE0F at byte 1"},
		{"a\u3164b", true, "must not contain invisible characters (zero-width, joiners, format characters): U+3164 at byte 1"},
		{"a\U000E0041b", true, "must not contain invisible characters (zero-width, joiners, format characters): U+E0041 at byte 1"},
		{"a\u202ab", true, "must not contain bidirectional overrides or isolates: U+202A at byte 1"},
		{"SKU-1\u202e2-", true, "must not contain bidirectional overrides or isolates: U+202E at byte 5"},
		{"a\u2066b", true, "must not contain bidirectional overrides or isolates: U+2066 at byte 1"},
		{"a\u2069b", true, "must not contain bidirectional overrides or isolates: U+2069 at byte 1"},
		{"a\u200fb", true, "must not contain bidirectional overrides or isolates: U+200F at byte 1"},
		{"a\ue000b", true, "must contain only printable characters (no private-use or unassigned code points): U+E000 at byte 1"},
		{"a\uffffb", true, "must contain only printable characters (no private-use or unassigned code points): U+FFFF at byte 1"},
		{"\u0301ab", true, "must not start with a combining mark: U+0301 at byte 0"},
		{"cafe\u0301", true, "must be in Unicode normalization form NFC (composed characters)"},
		{"caf\u00e9", true, ""},
		{"\u5546\u54c1-42", true, ""},
		{"\u0421\u041a\u0423-1", true, ""}, // Cyrillic СКУ: lookalikes across scripts pass
		{"\xff", true, "must be valid UTF-8"},
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
