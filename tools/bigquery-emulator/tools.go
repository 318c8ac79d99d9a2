//go:build tools

// Package tools pins github.com/goccy/bigquery-emulator for the BigQuery
// projector's tests. It is built as a separate binary from this module
// (never linked into Tally): see scripts/bigquery-emulator.sh.
package tools

import _ "github.com/goccy/bigquery-emulator/cmd/bigquery-emulator"
