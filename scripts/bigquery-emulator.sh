#!/usr/bin/env bash
# Builds github.com/goccy/bigquery-emulator v0.8.1 (pinned in
# tools/bigquery-emulator/go.mod) into the Go cache directory, if missing,
# and prints its path. The first build takes about 4 minutes and 6 GB of
# memory; Go's build cache makes later ones instant. `go install …@v0.8.1`
# does not work from these machines; the pinned module does.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${TALLY_BQ_EMULATOR:-$(go env GOCACHE)/tally/bigquery-emulator-v0.8.1}"
if [ ! -x "$out" ]; then
  mkdir -p "$(dirname "$out")"
  echo "building bigquery-emulator v0.8.1 (first time: about 4 minutes)..." >&2
  (cd "$root/tools/bigquery-emulator" && go build -o "$out.tmp" github.com/goccy/bigquery-emulator/cmd/bigquery-emulator)
  mv "$out.tmp" "$out"
fi
echo "$out"
