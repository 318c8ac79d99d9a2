// Package apierr is what the command and query APIs share about bad input:
// one rule for ids, one field-violation type, and one way to put
// violations on a Connect error as a google.rpc.BadRequest a client can act
// on. It knows neither service.
package apierr

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"
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
// 1 to MaxIDBytes bytes of UTF-8 without spaces or control characters (an
// empty one passes when not required).
func IDProblem(v string, required bool) string {
	switch {
	case v == "" && required:
		return "required"
	case len(v) > MaxIDBytes:
		return fmt.Sprintf("at most %d bytes, got %d", MaxIDBytes, len(v))
	case !utf8.ValidString(v):
		return "must be valid UTF-8"
	}
	for _, r := range v {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "must not contain spaces or control characters"
		}
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
