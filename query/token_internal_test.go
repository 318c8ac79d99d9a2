package query

import (
	"encoding/base64"
	"testing"
	"unicode/utf8"

	"github.com/tally-oss/tally/internal/apierr"
)

// FuzzPageToken decodes random page tokens: a token is either refused as a
// page_token violation (INVALID_ARGUMENT) or carries the request's filter
// and keys PostgreSQL can compare. It never panics.
func FuzzPageToken(f *testing.F) {
	list := "list|S1||false|0"
	f.Add(encodeToken(pageToken{Filter: list, A: "SKU-1"}), list)
	f.Add(encodeToken(pageToken{Filter: "history|A|S1", V: 42}), "history|A|S1")
	f.Add(encodeToken(pageToken{Filter: list, A: "SKU-1"}), "list|S2||false|0")
	f.Add("", list)
	f.Add("not base64!", list)
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"f":"`+list+`","a":"\u0000"}`)), list)
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"f":"`+list+`","v":1e400}`)), list)
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`)), list)
	f.Fuzz(func(t *testing.T, s, filter string) {
		v := &violations{}
		tok := decodeToken(s, filter, v)
		if len(v.list) > 0 {
			if len(v.list) != 1 || v.list[0].Field != "page_token" {
				t.Fatalf("violations %v, want one of page_token", v.list)
			}
			return
		}
		if s == "" {
			return
		}
		if tok.Filter != filter {
			t.Fatalf("accepted a token of filter %q for %q", tok.Filter, filter)
		}
		for _, k := range []string{tok.A, tok.B} {
			if !utf8.ValidString(k) || apierr.StoredIDProblem(k, false) != "" {
				t.Fatalf("accepted a token whose key %q PostgreSQL may refuse", k)
			}
		}
	})
}

// FuzzResumeToken decodes random WatchLowStock resume tokens: refused, or
// a time after the epoch. It never panics.
func FuzzResumeToken(f *testing.F) {
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("1764150000000000")))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("-1")))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("99999999999999999999")))
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, s string) {
		if at, ok := decodeResume(s); ok && at.UnixMicro() <= 0 {
			t.Fatalf("accepted %q as %v", s, at)
		}
	})
}
