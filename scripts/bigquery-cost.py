#!/usr/bin/env python3
"""The BigQuery cost model of docs/bigquery-cost.md.

usage: python3 scripts/bigquery-cost.py [ROW_BYTES]

Prints, for 1k, 10k and 100k events/s, what the BigQuery projection scans,
appends and costs a day and per million events, before (statements per
batch) and after (Storage Write API appends, one MERGE per interval).
Edit the constants below for your own levels and interval.
"""
import sys

MiB, GiB, TiB = 2**20, 2**30, 2**40
SCAN = 6.25 / TiB          # on-demand query and DML, per byte scanned
WRITE = 0.025 / GiB        # Storage Write API, per byte appended
INSERTALL = 0.05 / GiB     # legacy streaming inserts, per byte (rows at least 1 KiB)
L = 5_000_000              # (sku, store) levels: 100k SKUs x 50 stores
C = 50                     # bytes of a current_inventory row
I = 60                     # --bigquery-merge-interval, seconds
MAX_PENDING = 1_000_000    # events buffered before a flush is due anyway
T = 3.5                    # seconds a batch's statements take on BigQuery (before)
MAX_BATCH = 50_000         # events a batch may hold (before)


def after(r, e):
    every = min(I, MAX_PENDING / r)  # seconds between flushes
    flushes = 86400 / every
    changed = min(L, r * every)
    scanned = flushes * (L * C + max(10 * MiB, changed * C) + 2 * 10 * MiB)
    appended = r * 86400 * e + flushes * changed * C
    return scanned, appended, scanned * SCAN + appended * WRITE


def before(r, e):
    n = r * T
    if n > MAX_BATCH:
        return None
    per_batch = 3 * max(10 * MiB, n * e) + r * 43200 * 38 + L * C + max(10 * MiB, n * C) + 20 * MiB
    scanned = 86400 / T * per_batch
    streamed = r * 86400 * max(1024, e)
    return scanned, streamed, scanned * SCAN + streamed * INSERTALL


def main():
    e = float(sys.argv[1]) if len(sys.argv) > 1 else 144
    print(f"row bytes {e:.0f}; levels {L:,}; interval {I}s")
    print(f"{'events/s':>9} {'design':>7} {'TiB scanned/day':>16} {'GiB appended/day':>17} {'US$/day':>9} {'US$/M events':>12}")
    for r in (1_000, 10_000, 100_000):
        events = r * 86400
        for name, f in (("before", before), ("after", after)):
            got = f(r, e)
            if got is None:
                print(f"{r:>9,} {name:>7} cannot keep up: a batch holds at most {MAX_BATCH:,} events")
                continue
            scanned, appended, cost = got
            print(f"{r:>9,} {name:>7} {scanned / TiB:>16.2f} {appended / GiB:>17.1f} {cost:>9.2f} {cost / events * 1e6:>12.4f}")


if __name__ == "__main__":
    main()
