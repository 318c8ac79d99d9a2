#!/usr/bin/env bash
# The test command: builds what the tests start that Go's test runner
# should not wait for (the BigQuery emulator, once per machine), then runs
# every test with the race detector. Extra arguments go to `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
TALLY_BQ_EMULATOR="$(bash scripts/bigquery-emulator.sh)"
export TALLY_BQ_EMULATOR
exec go test -race "$@" ./...
