"""The prediction log's writer on both backends: rows per second, and the hot path's cost.

    .venv/bin/python bench/store_writer.py [--rounds 5] [--rows 100000] [--per-call 32]

In this process, pinned to core 0: a store of each backend (``server/storage``), the
SQLite file in a temporary directory, PostgreSQL a throwaway cluster on 127.0.0.1 whose
processes run on core 1 (benchlib.postgres_url; a database runs elsewhere than the
server). Each round queues ``--rows`` predictions in calls of ``--per-call`` rows (what
``log_predictions`` costs the event loop, per row), then times one ``flush()``: the writer
thread's batched transactions (SQLite: executemany; PostgreSQL: binary COPY into a staging
table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING), ``FLUSH_ROWS`` rows each.
Rounds alternate the backends; medians are printed. The writer's rate bounds how many
predictions per second one process can log; the tables grow over the rounds, as they do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import benchlib as bl

from server.storage import backends
from server.storage.base import LoggedPrediction, Store


def batch(n: int) -> list[LoggedPrediction]:
    return [LoggedPrediction(uuid.uuid4().hex, "delivery_eta", "1.1.0", "2025-01-01",
                             3.0 + k % 7, 2.0, 6.0, 4) for k in range(n)]


def one_round(store: Store, rows: int, per_call: int) -> tuple[float, float]:
    """(hot path µs per row, writer rows per second)."""
    calls = [batch(per_call) for _ in range(rows // per_call)]
    started = time.perf_counter()
    for call in calls:
        store.log_predictions(call)
    logged = time.perf_counter() - started
    started = time.perf_counter()
    store.flush()
    written = time.perf_counter() - started
    n = per_call * len(calls)
    return logged / n * 1e6, n / written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--per-call", type=int, default=32)
    args = parser.parse_args()
    bl.pin_self({int(bl.SERVER_CPU)})
    results: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as tmp:
        targets = {"sqlite": str(Path(tmp) / "waybill.db"), "postgresql": bl.postgres_url()}
        stores = {name: backends.open_store(target, flush_interval_s=60.0,
                                            queue_max=2 * args.rows)
                  for name, target in targets.items()}
        try:
            for store in stores.values():
                store.start()
                store.flush()
            for _ in range(args.rounds):
                for name, store in stores.items():
                    results[name].append(one_round(store, args.rows, args.per_call))
            lost = {name: (s.dropped, s.failed) for name, s in stores.items()}
        finally:
            for store in stores.values():
                store.close()
    print(f"{args.rounds} rounds of {args.rows:,} rows in calls of {args.per_call}; "
          "medians (all rounds)")
    for name, rounds in results.items():
        hot = statistics.median(h for h, _ in rounds)
        rate = statistics.median(r for _, r in rounds)
        print(f"{name:11s} writer {rate:9,.0f} rows/s  hot path {hot:.3f} us/row  "
              f"rounds {[round(r) for _, r in rounds]}  dropped/failed {lost[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
