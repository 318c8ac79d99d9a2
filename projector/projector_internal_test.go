package projector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestOnlyErrorsOfTheEventsDataDeadLetterIt(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	for _, c := range []struct {
		err  error
		want bool
	}{
		{pg("22021"), true},  // invalid byte sequence: a NUL in text
		{pg("22P05"), true},  // untranslatable character: \u0000 in jsonb
		{pg("22008"), true},  // datetime field overflow
		{pg("22003"), true},  // numeric value out of range
		{pg("23502"), false}, // not null violation: our schema's, refuses every event
		{pg("23514"), false}, // check violation: likewise
		{&pgconn.PgError{Code: "54000", Message: "index row size 3000 exceeds btree version 4 maximum 2704"}, true},
		{&pgconn.PgError{Code: "54000", Message: "too many notifications in the NOTIFY queue"}, false},
		{fmt.Errorf("copy: %w", pg("22021")), true},
		{pg("40001"), false}, // serialization failure
		{pg("40P01"), false}, // deadlock detected
		{pg("08006"), false}, // connection failure
		{pg("57P01"), false}, // admin shutdown
		{pg("57014"), false}, // query canceled (statement timeout)
		{pg("53100"), false}, // disk full
		{pg("55P03"), false}, // lock not available
		{pg("42P01"), false}, // undefined table: ours, not the event's
		{io.ErrUnexpectedEOF, false},
		{context.Canceled, false},
		{nil, false},
	} {
		if got := refusedData(c.err) != nil; got != c.want {
			t.Errorf("refusedData(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestDeadLetterColumnsTakeWhatTheEventCouldNot(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a\x00b", "a\uFFFDb"},
		{"a\xffb", "a\uFFFDb"},
		{"plain", "plain"},
		{strings.Repeat("é", 10), strings.Repeat("é", 3)}, // 7 bytes: cut before a rune's second byte
	} {
		got := storable(c.in, 7)
		if got != c.want || !utf8.ValidString(got) || strings.ContainsRune(got, 0) {
			t.Errorf("storable(%q, 7) = %q, want %q", c.in, got, c.want)
		}
	}
	var pgErr *pgconn.PgError
	err := &refusedError{&pgconn.PgError{Code: "22021", Message: "invalid byte sequence", Where: "COPY ledger_stage, line 1, column reason"}}
	if !errors.As(err, &pgErr) || pgErr.Code != "22021" ||
		err.Error() != "postgres refused the event: invalid byte sequence (COPY ledger_stage, line 1, column reason) (SQLSTATE 22021)" {
		t.Errorf("refusedError: %q", err)
	}
}
