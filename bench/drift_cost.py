"""Drift accumulation cost: ``DriftTracker.add`` per row vs the prediction itself.

    .venv/bin/python bench/drift_cost.py [--duration 3]

Loads the committed ``delivery_eta`` 1.1.0 version, validates realistic rows into
matrices of 1, 8 and 64 rows (the shapes the server scores) and times, in this
process and one thread, ``version.score(matrix)`` and ``tracker.add(matrix,
medians)`` on the same matrices, alternating in short rounds so both see the same
machine state. Reports the median per-call time divided by the rows (µs per row)
and add / score. ``--duration`` is the total measuring time, split over the cells.
Default settings: windows close every 5 000 rows, so the cost of closing (fresh
arrays, no statistics) is included at its real rate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import benchlib as bl

from models.loaded import LoadedVersion
from server.monitoring.drift import DriftSettings, DriftTracker

BATCHES = (1, 8, 64)
ROUND_SECONDS = 0.05  # one timing round; the two calls alternate rounds
WARMUP_CALLS = 50
MAX_CALLS = 1_000_000  # a hard bound besides the time bound


def _round(call: Callable[[Any], Any], inputs: list[Any], start: int, seconds: float
           ) -> tuple[float, int]:
    """Calls for ``seconds``; (ns per call, calls made)."""
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    calls = 0
    t0 = clock()
    while calls < MAX_CALLS:
        call(inputs[(start + calls) % len(inputs)])
        calls += 1
        if clock() >= end:
            break
    return (clock() - t0) / calls, calls


def measure(version: LoadedVersion, rows: list[dict[str, Any]], batch: int, seconds: float
            ) -> dict[str, float]:
    matrices = [version.validate(chunk).matrix for chunk in bl.chunks(rows, batch)]
    medians = [version.score(m).median for m in matrices]
    pairs = list(zip(matrices, medians, strict=True))
    tracker = DriftTracker(version.manifest, DriftSettings(), seed=1)

    def score(pair: tuple[Any, Any]) -> Any:
        return version.score(pair[0])

    def add(pair: tuple[Any, Any]) -> None:
        tracker.add(pair[0], pair[1])

    for i in range(WARMUP_CALLS):
        score(pairs[i % len(pairs)])
        add(pairs[i % len(pairs)])
    per_call: dict[str, list[float]] = {"score": [], "add": []}
    deadline = time.monotonic() + seconds
    start = 0
    while time.monotonic() < deadline:
        for name, call in (("score", score), ("add", add)):
            ns, calls = _round(call, pairs, start, ROUND_SECONDS / 2)
            per_call[name].append(ns)
        start += calls
    score_us = statistics.median(per_call["score"]) / 1e3 / batch
    add_us = statistics.median(per_call["add"]) / 1e3 / batch
    return {"score_us": score_us, "add_us": add_us, "ratio": add_us / score_us,
            "rounds": len(per_call["add"]), "windows": len(tracker.report().completed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0,
                        help="total measuring seconds, split over the batch sizes (default 3)")
    args = parser.parse_args(argv)
    if not args.duration > 0:
        parser.error("--duration must be > 0")
    version = LoadedVersion.load(bl.ROOT / "models", bl.MODEL_NAME, bl.MODEL_VERSION)
    rows = bl.load_rows()
    print(f"{bl.MODEL_NAME} {bl.MODEL_VERSION}: per-row cost, median of alternating "
          f"{ROUND_SECONDS * 1e3:g} ms rounds, one thread")
    print(f"{'rows/batch':>10}  {'score µs/row':>12}  {'add µs/row':>10}  {'add/score':>9}")
    busy0, self0, wall0 = bl.machine_cpu_seconds()[0], bl.self_cpu_seconds(), time.monotonic()
    for batch in BATCHES:
        r = measure(version, rows, batch, args.duration / len(BATCHES))
        print(f"{batch:>10}  {r['score_us']:>12.2f}  {r['add_us']:>10.2f}  {r['ratio']:>9.1%}")
    # Absolute figures mean little on a busy machine; the ratio holds up better.
    other = (bl.machine_cpu_seconds()[0] - busy0) - (bl.self_cpu_seconds() - self0)
    print(f"other processes used {other / (time.monotonic() - wall0):.0%} of a core meanwhile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
