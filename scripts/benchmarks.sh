#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: bash scripts/benchmarks.sh > BENCHMARKS.md
# Every figure comes from `tally bench`; each run starts its own embedded
# Tally (fresh data) unless noted. Takes about 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/tally
go build -o "$bin" ./cmd/tally

run() {
  echo
  echo '```'
  echo "\$ tally bench $*"
  "$bin" bench "$@" 2>/dev/null
  echo '```'
}

nosync() {
  echo
  echo '```'
  echo "\$ TALLY_KAFKA_SYNC_WRITES=false tally bench $*"
  TALLY_KAFKA_SYNC_WRITES=false "$bin" bench "$@" 2>/dev/null
  echo '```'
}

cat <<HEAD
# Benchmarks

Regenerate with \`bash scripts/benchmarks.sh > BENCHMARKS.md\` (about 15 minutes).

## The machine
- $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB memory
- $(go version)
- Everything on this one machine: the load generator, Tally (\`tally serve\`: CommandService,
  projector, QueryService), the embedded Kafka broker (franz-go's kfake, in the same process as
  Tally) and PostgreSQL 15 (its own processes). They share the 2 cores.
- Workload unless noted: 100,000 SKUs with Zipf(1.1) popularity, 50 stores, 70% sales, 10% returns,
  15% receipts, 5% transfers, seed 1; the 5,000 hottest SKUs stocked at every store first. Sales
  of unstocked SKUs are rejected and counted (insufficient_stock), not hidden.
- Latency is measured from each call's scheduled start (open loop, no coordinated omission).
  "vis" is write→query visibility: from the accepted response to the first successful
  \`GetStock(min_version)\`, sampled on 1% of commands. "proj p99" is the projector's own
  recorded_at→committed histogram (Prometheus bucket bound). Every Tally run ends with the audit.
HEAD

echo
echo "## RPC ceiling of the box (no-op handler, same client)"
run --target noop --rate 30000 --duration 10s
run --target noop --rate 300000 --batch 100 --duration 10s

echo
echo "## Sweep, unary commands"
run --embedded --sweep 1000,2000,5000,10000 --duration 10s

echo
echo "## Sweep, Apply batches of 100"
run --embedded --batch 100 --sweep 10000,20000,40000 --duration 10s

echo
echo "## Against the naive Postgres design, unary (same Postgres server, offered beyond both capacities)"
run --embedded --compare --rate 8000 --duration 10s

echo
echo "## Against the naive Postgres design, batches of 100"
run --embedded --compare --batch 100 --rate 40000 --duration 10s

echo
echo "## Durability: the embedded broker fsyncs every acknowledged batch (--kafka-sync-writes, default on)"
echo
echo "The same workloads with fsync (the default, every figure above) and without it"
echo "(TALLY_KAFKA_SYNC_WRITES=false: an acknowledged command survives a process kill, not a power cut)."
run --embedded --rate 3000 --duration 10s
nosync --embedded --rate 3000 --duration 10s
run --embedded --batch 100 --rate 20000 --duration 10s
nosync --embedded --batch 100 --rate 20000 --duration 10s

echo
echo "## Replay (rebuild the read model from the log into a fresh schema)"
run --embedded --batch 100 --rate 20000 --duration 10s --replay

echo
echo "## Faults: every part its own process, killed and paused under load (tally chaos)"
echo
echo "tally kafka, PostgreSQL, 3 command, 2 projector and 2 query instances as OS processes; 300"
echo "commands/s offered round-robin over the command instances by clients that retry UNAVAILABLE"
echo "and deadlines with the same command_id; 20 faults (SIGKILL then restart, SIGSTOP 1-5 s then"
echo "SIGCONT, PostgreSQL stopped and started) at random; then the audit from outside."
echo
echo '```'
echo '$ tally chaos --faults 20 --rate 300'
"$bin" chaos --faults 20 --rate 300 2>/dev/null
echo '```'

echo
echo "## Scale-out: 1 or 3 command instances (forwarding), no faults"
for rate in 3000 4500 5500; do
  for n in 1 3; do
    echo
    echo '```'
    echo "\$ tally chaos --faults 0 --commands $n --projectors 1 --queries 1 --rate $rate --every 10s"
    "$bin" chaos --faults 0 --commands $n --projectors 1 --queries 1 --rate $rate --every 10s 2>/dev/null | grep -E '^(commands|throughput|latency|audit)'
    echo '```'
  done
done
echo
echo '```'
echo '$ go test -run xxx -bench BenchmarkInstances -benchtime 20000x ./command'
go test -run xxx -bench 'BenchmarkInstances/(1|3|direct)' -benchtime 20000x ./command 2>/dev/null | grep '^Benchmark'
go test -run xxx -bench 'BenchmarkInstances/batch' -benchtime 100000x ./command 2>/dev/null | grep '^Benchmark'
echo '```'

echo
echo "## BigQuery projection (into the BigQuery emulator, which is not BigQuery)"
gobench() {
  echo
  echo '```'
  echo "\$ go test -run xxx $* ./projector"
  go test -run xxx "$@" ./projector 2>/dev/null | grep '^Benchmark'
  echo '```'
}
gobench -bench 'BenchmarkProjectBigQuery' -benchtime 50000x
gobench -bench 'BenchmarkEmulatorMergeCurrent' -benchtime 1x
cat <<'BQ'

Events/s merged into `github.com/goccy/bigquery-emulator` v0.8.1 (1,000 SKUs × 3 stores, log
produced first, clock runs while the projector catches up). "500" closes every batch at 500
events, the steady-state size; "catch-up" lets a lagging projector take up to 50,000 per batch,
which is what `tally serve` does when it is behind. What bounds it is the emulator, not Tally:
one SQLite database behind the emulator's process, so `insertAll` rows are decoded and inserted
one by one (about 5,000 rows/s: 4.2 s of a 20,000-event batch) and a `MERGE` is a nested loop
over `current_inventory` (a 500-event batch's statements grow from 0.4 s to 6 s as the table
fills to 3,000 rows; deleting a work table takes 0.5–3 s, done in the background). On BigQuery
each statement costs about a second whatever the batch size, so throughput there comes from
batch size: per-batch cost is a handful of jobs (stage, then two chains of two statements side
by side, then the offsets MERGE).
BQ

cat <<'READS'

## Reads (issue #17: first measurements, before any read-side work)

`tally bench --reads F` offers reads beside the commands, open loop: F = 0.8 offers 4 reads per
command, F = 1 only reads, at `--rate` reads/s. The reads (`--read-mix`, default
`get=70,batch=20,list=5,history=5`) are GetStock, BatchGetStock of 100 keys, ListStock of a
store (a page of 100) and GetStockHistory (a page of 100), over Zipf-popular SKUs among those
stocked at every store (`--seed-skus`), through the generated gRPC client; each RPC's calls,
QPS, latency and errors (a call that finds `--concurrency` calls in flight counts as an error,
so overload shows) are reported. Everything on this 2-core box: generator, Tally, kfake,
PostgreSQL.

READS
echo '```'
for args in "--read-mix get=100 --rate 5000" "--read-mix get=100 --rate 10000" "--read-mix batch=100 --rate 500" "--read-mix history=100 --rate 2000"; do
  echo "\$ tally bench --embedded --reads 1 $args --duration 10s --no-audit"
  # shellcheck disable=SC2086
  "$bin" bench --embedded --reads 1 $args --duration 10s --no-audit 2>/dev/null | sed -n '/ read /,$p'
done
echo '$ tally bench --embedded --reads 0.8 --rate 1000 --duration 10s'
"$bin" bench --embedded --reads 0.8 --rate 1000 --duration 10s 2>/dev/null | grep -E '^ +(target|tally)'
echo '```'
cat <<'READS'

Latency runs from when a call was due, as for the commands (a schedule that falls behind counts).
Where this stands against #17's targets: GetStock peaks at about 9,500 QPS alone (target 20,000
with p99 ≤ 5 ms while 2,000 commands/s are written) and its p99 is 19 ms already at 5,000 QPS;
BatchGetStock of 100 keys has p99 6.7 ms at 500/s (target ≤ 10 ms); 4,000 reads/s of the default
mix beside 1,000 commands/s saturate the box (the mix's BatchGetStock alone asks for 80,000
levels/s). The no-op RPC ceiling measured above (unary calls with nothing behind them) is the
bound a cache in the query service can approach; that, prepared statements and the read path's
profile are the work left in #17.
READS
echo
echo "## Writer memory (issue #17)"
echo
echo '```'
echo '$ go test -run xxx -bench BenchmarkWriterStateMemory -benchtime 1x ./command'
go test -run xxx -bench BenchmarkWriterStateMemory -benchtime 1x ./command 2>/dev/null | grep '^Benchmark'
echo '```'
cat <<'MEM'

Heap of a partition writer's state (the SKU map it folds from the log; the dedupe window is
apart: `TestWindowRemembersACommandInUnder100Bytes`, ~92 bytes per remembered command), folded
the way a rebuild folds it (each event decoded, so every string is the decoder's): **58 bytes
per (sku, store) level** in SKUs stocked at 50 stores (2.9 KB per SKU), flat from 1M to 5M
levels (276 MiB of heap at 5M); a SKU at a single store costs 471 bytes, the floor of a Go map
(one group of 8 slots) plus the SKU's struct, id and entry in the writer's map. An empty
reservation map is no longer allocated per SKU (49 bytes per SKU less: 520 → 471). RSS moves
with the Go heap's growth and returns (the 20,000 × 50 run follows the 1M run's release), so the
heap figures are the ones to read. A heap profile: add `-memprofile mem.out` and
`go tool pprof -top mem.out`.
MEM

cat <<'SOAK'

## Soak: 20M events (issue #14, running for years)

`tally bench --soak` writes a log of `--events` events straight into the embedded broker, as the
partition writers would have written them over `--history-span` (720h) ending now: each command
of the bench's workload (100,000 SKUs, Zipf 1.1, 50 stores, 70/10/15/5 sale/return/receipt/
transfer, ~20-character command ids) is decided by the writer's own `command.Decide` against the
state so far, refused sales leave nothing, and the records (key, headers, timestamp) are the
writer's, committed in transactions of 20,000 events per partition. Then, on that log: the
projector catches up into PostgreSQL (with GetStock and GetStockHistory timed through the
generated gRPC client, 10,000 calls each after one untimed call per key, at `--query-at` 1M events and again at the end); the
write side starts without snapshots, with snapshots (the first start folds the whole log and
writes a full snapshot at close), again after a clean stop, and again with 50,000 events per
partition after the snapshots (half of `--snapshot-every`: what a crash leaves on average),
each timed until a command on every partition succeeds; the months that ended before yesterday
are compacted as `--ledger-compact-after` would, and the reads timed again; last, the ledger's
oldest month is dropped as `--history-retention` would. Run by `SOAK=1 bash scripts/benchmarks.sh` only (about 20 minutes more).
SOAK
# The 20M soak takes about 15 minutes: run with SOAK=1 to measure it again
# (its output is kept in scripts/results/soak-20m.txt), else the last
# recorded run is shown.
if [ "${SOAK:-}" = 1 ]; then
  "$bin" bench --soak --events 20000000 --queries 10000 2>/dev/null | sed -n '/^log:/,$p' > scripts/results/soak-20m.txt
fi
echo
echo '```'
echo '$ tally bench --soak --events 20000000 --queries 10000'
cat scripts/results/soak-20m.txt
echo '```'
cat <<'SOAKREAD'

- Restart: with snapshots every partition is writable 0.98 s after a clean stop and 1.48 s with
  300,000 events after the snapshots (50,000 per partition, half of `--snapshot-every`: what a
  crash leaves on average), against 41.1 s folding the 20M-event log (the target: at most 5 s).
  The first start with snapshots folds the whole log once and writes a full snapshot. (The run
  before this one: 0.53 s, 1.15 s and 46.7 s.)
- The dedupe window holds the commands of the last 72 h of the 30-day history (1.9M of 20M);
  peak RSS (Tally's parts and the embedded broker in one process) 1.4 GB.
- Reads: 10,000 calls of each, one at a time, after one untimed call per key (the steady state
  of a live system's hot keys, not their first read after a bulk load of 19M rows, which
  dominated the p99 of the runs before). GetStock p50 0.62 → 0.67 ms and p99 2.40 → 2.31 ms
  (−4%) between 1M and 20M ledger events, while stock_levels grew eightfold (112k → 932k
  (sku, store) rows): flat, inside the issue's ±20%. GetStockHistory p99 11.8 → 5.4 ms (p50 1.71
  → 1.93): the 1M figure is this shared box's noise (the run before measured 2.7 → 4.1 ms with
  2,000 calls, and this one's first run 4.3 → 6.1 ms); the p50s are the stable figures.
- PostgreSQL: 299–304 bytes per event as rows (ledger heap and its one index); **106.0 bytes per
  event once compacted**: the soak compacts October (the log's 2.85M events recorded before
  November), as `--ledger-compact-after` would a day after the month ends, in 97.8 s
  (29,102 rows/s alongside the rest of the soak's process), and the ledger shrinks from 5,807 to
  5,276 MiB with only that month compacted. After compaction GetStock p99 2.88 ms and
  GetStockHistory p50/p99 1.97/5.66 ms: the newest history page reads the rows' key and skips
  chunks that cannot hold it (without that skip, the first run of this soak measured a history
  p99 of 31.6 ms: DESIGN.md "Ledger compaction"). `TestLedgerBytesPerEvent` measures 85–105 bytes
  per compacted event at 25–100 events per (sku, store) and month (a chain at 1,000 events/s
  sends ~500), 215 at 3.7; with 400 days kept, 13 of 14 months are compacted.
- Dropping the oldest month (2.85M events, 288 MiB compacted; 862 MiB as rows before compaction)
  took 0.12 s: retention is a `DROP TABLE` of a month's two partitions, never a `DELETE`.
SOAKREAD

cat <<'PAPER'

## Beside the reference design's figures

| | reference (event-sourcing paper) | Tally, this file |
| --- | --- | --- |
| hardware | 3 Kafka brokers × 4 vCPU, plus 8–32 stream-processing workers | one 2-core VM running load generator, Tally, Kafka (kfake) and PostgreSQL together |
| 10k events/s | 300 ms average write→query | the 10,000/s row of "Sweep, Apply batches of 100" (sustained; compare its vis columns); unary commands saturate below 10k/s here |
| 100k events/s | 350 ms average write→query | not reached on 2 shared cores: the highest batch row above is this box's limit, see below |

## What limits these figures
Measured with `tally bench --cpuprofile` (the embedded Tally is in the bench's process) and
`BenchmarkProjectPostgres`:
- The two cores are shared by everything. At 30k commands/s in batches the Go process uses about
  one core (write side 18%, GC 18%, Connect/gRPC handling 14%, projector encoding rows for COPY 11%),
  PostgreSQL the other.
- The read model is bound by PostgreSQL CPU per event: a ledger insert with two B-tree inserts and a
  stock_levels upsert; alone on the machine the projector reaches about 35–39k events/s
  (`go test -run xxx -bench BenchmarkProjectPostgres -benchtime 200000x ./projector`). Above that rate
  the projection lags and write→query visibility grows without bound while commands are still accepted.
- Unary commands are bound by per-call RPC cost: the same client against a no-op handler is the ceiling.
PAPER
