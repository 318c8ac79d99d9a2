#!/usr/bin/env bash
# SIGKILL `tally serve` under load again and again on one data directory,
# then restart it and run `tally check` (log well-formed, read model equal to
# the fold of the log). The short version of this runs in the tests
# (TestSIGKILLUnderLoadLosesNothing, which also accounts for every
# acknowledged command); this one runs as long as you like:
#
#   bash scripts/chaos.sh [cycles=20] [rate=1500]
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-20}
rate=${2:-1500}
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
bin=$work/tally
go build -o "$bin" ./cmd/tally
addr=127.0.0.1:18480
kafka=127.0.0.1:19492
data=$work/data

start() {
  "$bin" serve --data-dir "$data" --addr $addr --kafka-listen $kafka --log-level warn >>"$work/serve.log" 2>&1 &
  echo $! >"$work/pid"
}
# The admin token tally serve writes to data/tokens at start (read anew:
# the first start makes the key).
post() {
  local tok=""
  [ -f "$data/tokens" ] && tok=$(sed -n 's/^TALLY_ADMIN_TOKEN=//p' "$data/tokens")
  curl -sf -m 10 -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $tok" "http://$addr/tally.inventory.v1.$1" -d "$2"
}
ready() {
  for _ in $(seq 600); do
    post CommandService/ReceiveStock '{"commandId":"ready","skuId":"ready","storeId":"S1","quantity":1}' >/dev/null && return 0
    sleep 0.1
  done
  echo "tally serve not ready after 60s"; tail -20 "$work/serve.log"; exit 1
}

for i in $(seq "$cycles"); do
  start
  ready
  "$bin" bench --addr $addr --kafka-brokers $kafka --rate "$rate" --duration 60s --no-audit \
    --seed "$i" --seed-skus 200 --skus 2000 --stores 5 >"$work/bench.log" 2>&1 &
  bench=$!
  sleep $((4 + RANDOM % 5))
  kill -9 "$(cat "$work/pid")"
  kill "$bench" 2>/dev/null || true
  wait "$bench" 2>/dev/null || true
  echo "cycle $i: killed under load"

done
start
ready
grep 'not shut down cleanly' "$work/serve.log" | grep -o 'transactions=[0-9]*' |
  awk -F= '{n++; s+=$2} END {printf "%d restarts after a kill wrote %d abort markers for transactions the kills left open\n", n, s}'
# Every partition takes commands: 60 SKUs cover every partition.
for s in $(seq 60); do
  post CommandService/ReceiveStock "{\"commandId\":\"after-chaos-$s\",\"skuId\":\"probe-$s\",\"storeId\":\"S1\",\"quantity\":1}" >/dev/null ||
    { echo "sku probe-$s does not take commands after the restart"; exit 1; }
done
echo "after the last restart: 60 SKUs over every partition took a command"
for _ in $(seq 600); do
  lag=$(post QueryService/GetProjectionStatus '{}' | sed -n 's/.*"totalLag":"\{0,1\}\([0-9]*\).*/\1/p')
  [ -z "$lag" ] && break # omitted when 0
  [ "$lag" = 0 ] && break
  sleep 0.1
done
"$bin" check --kafka-brokers $kafka --database-url "$(cat "$data/pg/DATABASE_URL")"
