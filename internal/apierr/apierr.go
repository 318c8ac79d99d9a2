// Package apierr is what the command and query APIs share about bad input:
// one rule for ids, one field-violation type, and one way to put
// violations on a Connect error as a google.rpc.BadRequest a client can act
// on. It knows neither service.
package apierr

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"
	"golang.org/x/text/unicode/norm"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// MaxIDBytes bounds every id (sku, store, command, reservation).
const MaxIDBytes = 128

// Violation is one problem with one field of a request.
type Violation struct {
	Field       string
	Description string
}

// InvalidError lists every problem found in a request.
type InvalidError struct {
	// What names the request ("command", "request").
	What       string
	Violations []Violation
}

func (e *InvalidError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	what := e.What
	if what == "" {
		what = "request"
	}
	return "invalid " + what + ": " + strings.Join(parts, "; ")
}

// IDProblem says what is wrong with an id, or "" when nothing is: ids are
// 1 to MaxIDBytes bytes of valid UTF-8 in Unicode NFC, made of printable
// characters only, and no spaces (an empty one passes when not required).
//
// An id is compared byte for byte but read by people, in logs, dashboards
// and spreadsheets, so what cannot be seen cannot be in it: control
// characters, invisible ones (zero-width spaces and joiners, U+2060,
// U+FEFF, soft hyphens, variation selectors, Hangul fillers, Unicode tags),
// bidirectional overrides and isolates (which make "SKU-1\u202e2-" display
// as another id), private-use and unassigned code points, and a combining
// mark first. NFC keeps "é" from being two ids (U+00E9, and e + U+0301).
// Lookalikes across scripts (Latin "a", Cyrillic "а") are not refused:
// telling them apart needs the confusables tables of UTS #39, and ids in
// one non-Latin script are legitimate.
func IDProblem(v string, required bool) string {
	if p := idShapeProblem(v, required); p != "" {
		return p
	}
	for i, r := range v {
		if rule := idRuneProblem(r, i == 0); rule != "" {
			return fmt.Sprintf("%s: %U at byte %d", rule, r, i)
		}
	}
	if !norm.NFC.IsNormalString(v) {
		return "must be in Unicode normalization form NFC (composed characters)"
	}
	return ""
}

// idShapeProblem is what both rules ask first: present when required, at
// most MaxIDBytes, valid UTF-8.
func idShapeProblem(v string, required bool) string {
	switch {
	case v == "" && required:
		return "required"
	case len(v) > MaxIDBytes:
		return fmt.Sprintf("at most %d bytes, got %d", MaxIDBytes, len(v))
	case !utf8.ValidString(v):
		return "must be valid UTF-8"
	}
	return ""
}

// StoredIDProblem is IDProblem for an id a read names: the rule every id
// written so far obeys (1 to MaxIDBytes bytes of UTF-8 without spaces or
// control characters), not the stricter one new commands meet, so an id
// accepted before IDProblem refused invisible characters stays readable.
// It keeps out what PostgreSQL cannot take as text (NUL, invalid UTF-8).
func StoredIDProblem(v string, required bool) string {
	if p := idShapeProblem(v, required); p != "" {
		return p
	}
	for i, r := range v {
		if unicode.IsControl(r) {
			return fmt.Sprintf("%s: %U at byte %d", ruleControl, r, i)
		}
		if unicode.IsSpace(r) {
			return fmt.Sprintf("%s: %U at byte %d", ruleSpace, r, i)
		}
	}
	return ""
}

// The rules an id's characters break, as IDProblem names them.
const (
	ruleControl   = "must not contain control characters"
	ruleSpace     = "must not contain spaces"
	ruleBidi      = "must not contain bidirectional overrides or isolates"
	ruleInvisible = "must not contain invisible characters (zero-width, joiners, format characters)"
	rulePrintable = "must contain only printable characters (no private-use or unassigned code points)"
	ruleCombining = "must not start with a combining mark"
)

// hangulFillers are letters (Lo) that display as nothing.
var hangulFillers = []rune{0x115F, 0x1160, 0x3164, 0xFFA0}

// idRuneProblem is the rule r breaks in an id, or "". ASCII, nearly
// every id's every character, is decided without the Unicode tables
// (idRuneProblemUnicode agrees on it; a test checks every ASCII rune).
func idRuneProblem(r rune, first bool) string {
	if r < utf8.RuneSelf {
		switch {
		case r < 0x20 || r == 0x7f:
			return ruleControl
		case r == ' ':
			return ruleSpace
		}
		return ""
	}
	return idRuneProblemUnicode(r, first)
}

// idRuneProblemUnicode is idRuneProblem by the Unicode tables.
func idRuneProblemUnicode(r rune, first bool) string {
	switch {
	case unicode.IsControl(r):
		return ruleControl
	case unicode.IsSpace(r) || unicode.In(r, unicode.Zs, unicode.Zl, unicode.Zp) || r == 0x2800: // U+2800: a blank braille pattern
		return ruleSpace
	case unicode.Is(unicode.Bidi_Control, r):
		return ruleBidi
	case unicode.In(r, unicode.Cf, unicode.Join_Control, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point) ||
		slices.Contains(hangulFillers, r):
		return ruleInvisible
	case !unicode.IsPrint(r):
		return rulePrintable
	case first && unicode.In(r, unicode.Mn, unicode.Me):
		return ruleCombining
	}
	return ""
}

// BadRequest is the google.rpc.BadRequest detail of violations.
func BadRequest(vs []Violation) *errdetails.BadRequest {
	br := &errdetails.BadRequest{}
	for _, v := range vs {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
	}
	return br
}

// InvalidArgument is e as INVALID_ARGUMENT with its BadRequest detail.
func InvalidArgument(e *InvalidError) *connect.Error {
	ce := connect.NewError(connect.CodeInvalidArgument, errors.New(e.Error()))
	if d, err := connect.NewErrorDetail(BadRequest(e.Violations)); err == nil {
		ce.AddDetail(d)
	}
	return ce
}
