#!/usr/bin/env bash
# Builds github.com/goccy/bigquery-emulator v0.8.1 (pinned in
# tools/bigquery-emulator/go.mod) into the Go cache directory, if missing,
# and prints its path. The first build takes about 4 to 7 minutes and 6 GB
# of memory; Go's build cache makes later ones instant. `go install …@v0.8.1`
# does not work from these machines; the pinned module does. Concurrent
# callers (test binaries run in parallel) wait for one build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${TALLY_BQ_EMULATOR:-$(go env GOCACHE)/tally/bigquery-emulator-v0.8.1}"
if [ ! -x "$out" ]; then
  mkdir -p "$(dirname "$out")"
  exec 9>"$out.lock"
  flock 9
  if [ ! -x "$out" ]; then
    echo "building bigquery-emulator v0.8.1 (first time: about 4 to 7 minutes)..." >&2
    tmp="$(mktemp "$out.XXXXXX")"
    (cd "$root/tools/bigquery-emulator" && go build -o "$tmp" github.com/goccy/bigquery-emulator/cmd/bigquery-emulator)
    mv "$tmp" "$out"
  fi
fi
echo "$out"
