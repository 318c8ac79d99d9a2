#!/usr/bin/env bash
# Sends three concurrent 256 MB request bodies to a fresh `tally serve`
# (embedded Kafka and PostgreSQL) and prints its RSS before and after:
# with --max-request-bytes they are refused RESOURCE_EXHAUSTED and the
# process does not grow.
#   bash scripts/oversized-requests.sh [connect|grpc] [tally binary]
set -uo pipefail
proto=${1:-connect}
bin=${2:-}
if [ -z "$bin" ]; then
  bin=$(mktemp -d)/tally
  (cd "$(dirname "$0")/.." && go build -o "$bin" ./cmd/tally) || exit 1
fi
dir=$(mktemp -d)
port=$((20000 + RANDOM % 10000))
"$bin" serve --data-dir "$dir" --addr 127.0.0.1:$port --kafka-listen 127.0.0.1:$((port + 1)) --log-level warn 2>"$dir/log" &
pid=$!
trap 'kill $pid; wait $pid; rm -rf "$dir"' EXIT
for _ in $(seq 1 120); do
  curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' http://127.0.0.1:$port/grpc.health.v1.Health/Check && break
  sleep 1
done
sleep 3
rss() { grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \t' ' ' | tr '\n' ' '; }
echo "before: $(rss)"
url=http://127.0.0.1:$port/tally.inventory.v1.CommandService/RecordSale
body() {
  # gRPC: an envelope announcing 256 MiB, then the bytes.
  [ "$proto" = grpc ] && printf '\x00\x10\x00\x00\x00'
  head -c 268435456 /dev/zero
}
pids=()
for i in 1 2 3; do
  if [ "$proto" = grpc ]; then
    body | curl -s --http2-prior-knowledge -X POST -T - -H 'Content-Type: application/grpc' -D - -o /dev/null "$url" | grep -i '^grpc-' &
  else
    body | curl -s -X POST -T - -H 'Content-Type: application/proto' -w ' HTTP %{http_code}\n' "$url" &
  fi
  pids+=($!)
done
wait "${pids[@]}"
echo "after:  $(rss)"
