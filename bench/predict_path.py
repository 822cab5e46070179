"""Predict path: raw in-process CatBoost vs Waybill over gRPC, one caller, sequential calls.

    .venv/bin/python bench/predict_path.py [--duration 10] [--config waybill-off]

(a) raw: ``CatBoostRegressor.predict(numpy object array, thread_count=1)`` in this process,
    pinned to core 0 (the core the server gets later).
(b) Waybill: ``waybill serve`` pinned to core 0 (``taskset -c 0``); this process becomes
    the only client, pinned to core 1, one sync channel, pre-serialized requests,
    sequential calls (one in flight).

For single rows it reports p50/p99 latency in µs; for 64-row requests rows/s; and the
ratios server/raw. ``--duration`` is the total measuring time (split over the four
measurements; server start-up and warm-up come on top, a few seconds).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

WARMUP_CALLS = 200
MAX_CALLS = 2_000_000  # a hard bound besides the time bound


def _timed_loop(call: Any, inputs: list[Any], seconds: float) -> list[int]:
    for i in range(min(WARMUP_CALLS, len(inputs) * 4)):
        call(inputs[i % len(inputs)])
    latencies: list[int] = []
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    i = 0
    while i < MAX_CALLS:
        t0 = clock()
        if t0 >= end:
            break
        call(inputs[i % len(inputs)])
        latencies.append(clock() - t0)
        i += 1
    return latencies


def _summary(latencies: list[int], rows_per_call: int, cpu_s: float | None) -> dict[str, float]:
    values = sorted(latencies)
    total_s = sum(values) / 1e9
    return {
        "calls": len(values),
        "p50_us": bl.percentile(values, 0.5) / 1e3,
        "p99_us": bl.percentile(values, 0.99) / 1e3,
        "calls_s": len(values) / total_s if total_s else 0.0,
        "rows_s": len(values) * rows_per_call / total_s if total_s else 0.0,
        "cpu_us": (cpu_s / len(values) * 1e6) if cpu_s is not None and values else float("nan"),
    }


def measure_raw(rows: list[dict[str, Any]], batch: int, seconds: float) -> dict[str, float]:
    model = bl.load_regressor()
    matrices = [bl.row_matrix(chunk) for chunk in bl.chunks(rows, batch)]

    def call(matrix: Any) -> Any:
        return model.predict(matrix, thread_count=1)

    cpu0 = bl.self_cpu_seconds()
    latencies = _timed_loop(call, matrices, seconds)
    return _summary(latencies, batch, bl.self_cpu_seconds() - cpu0)


def measure_server(port: int, server_pid: int, rows: list[dict[str, Any]], batch: int,
                   seconds: float) -> dict[str, float]:
    import grpc
    from waybill.v1 import prediction_pb2 as pb

    payloads = [bl.waybill_request_bytes(chunk) for chunk in bl.chunks(rows, batch)]
    with grpc.insecure_channel(f"{bl.HOST}:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        # No serializer: the request bytes go out as they are, the answer comes back as bytes.
        predict = channel.unary_unary(bl.PREDICT_METHOD)
        first = pb.PredictResponse.FromString(
            predict(payloads[0], metadata=bl.PIN_METADATA, timeout=10))
        if len(first.predictions) != batch or first.version != bl.MODEL_VERSION:
            raise RuntimeError(f"unexpected answer: {len(first.predictions)} predictions, "
                               f"version {first.version!r}")

        def call(payload: bytes) -> Any:
            return predict(payload, metadata=bl.PIN_METADATA, timeout=5)

        for i in range(WARMUP_CALLS):
            call(payloads[i % len(payloads)])
        cpu0 = bl.tree_cpu_seconds(server_pid)
        latencies = _timed_loop(call, payloads, seconds)
        cpu = bl.tree_cpu_seconds(server_pid) - cpu0
    return _summary(latencies, batch, cpu)


def render(results: dict[str, dict[str, dict[str, float]]], config: str) -> str:
    raw, srv = results["raw"], results[config]
    header = ("path", "1-row p50 µs", "1-row p99 µs", "1-row calls/s", "1-row CPU µs/call",
              "64-row p50 µs", "64-row rows/s", "64-row CPU µs/call")

    def line(name: str, r: dict[str, dict[str, float]]) -> list[str]:
        one, many = r["1"], r["64"]
        return [name, f"{one['p50_us']:.0f}", f"{one['p99_us']:.0f}", f"{one['calls_s']:.0f}",
                f"{one['cpu_us']:.0f}", f"{many['p50_us']:.0f}", f"{many['rows_s']:.0f}",
                f"{many['cpu_us']:.0f}"]

    ratio = ["server/raw",
             f"{srv['1']['p50_us'] / raw['1']['p50_us']:.2f}x",
             f"{srv['1']['p99_us'] / raw['1']['p99_us']:.2f}x",
             f"{srv['1']['calls_s'] / raw['1']['calls_s']:.2f}x",
             f"{srv['1']['cpu_us'] / raw['1']['cpu_us']:.2f}x",
             f"{srv['64']['p50_us'] / raw['64']['p50_us']:.2f}x",
             f"{srv['64']['rows_s'] / raw['64']['rows_s']:.2f}x",
             f"{srv['64']['cpu_us'] / raw['64']['cpu_us']:.2f}x"]
    table = [list(header), line("raw CatBoost (in process)", raw),
             line(f"{config} (gRPC, 1 sync caller)", srv), ratio]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = []
    for n, r in enumerate(table):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from waybill_configs import WAYBILL_CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="total measuring seconds, split over 4 measurements (default 10)")
    parser.add_argument("--config", default="waybill-off", choices=sorted(WAYBILL_CONFIGS))
    parser.add_argument("--waybill-src", metavar="GIT_REF",
                        help="serve from this commit (extracted with git archive) instead of "
                             "the work tree")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the `finally` below stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not 0.4 <= args.duration <= 600:
        parser.error("--duration must be between 0.4 and 600 seconds")
    share = args.duration / 4

    m = bl.machine()  # before pinning: nproc counts the cores this process may use
    src = bl.waybill_source(args.waybill_src)
    rows = bl.load_rows()
    results: dict[str, dict[str, dict[str, float]]] = {"raw": {}, args.config: {}}
    bl.pin_self({0})  # raw CatBoost on the core the server gets
    busy0, self0, t0 = bl.machine_cpu_seconds()[0], bl.self_cpu_seconds(), time.monotonic()
    for batch in (1, 64):
        results["raw"][str(batch)] = measure_raw(rows, batch, share)
    other = bl.machine_cpu_seconds()[0] - busy0 - (bl.self_cpu_seconds() - self0)
    elapsed = time.monotonic() - t0
    bl.pin_self({1})  # from here on this process is the client
    with tempfile.TemporaryDirectory(prefix="waybill-predict-path-") as tmp:
        proc, port = bl.start_waybill(args.config, Path(tmp), src)
        try:
            busy0, self0, srv0 = (bl.machine_cpu_seconds()[0], bl.self_cpu_seconds(),
                                  bl.tree_cpu_seconds(proc.pid))
            t0 = time.monotonic()
            for batch in (1, 64):
                results[args.config][str(batch)] = measure_server(port, proc.pid, rows, batch,
                                                                  share)
            other += (bl.machine_cpu_seconds()[0] - busy0 - (bl.self_cpu_seconds() - self0)
                      - (bl.tree_cpu_seconds(proc.pid) - srv0))
            elapsed += time.monotonic() - t0
        finally:
            proc.stop()
    print(f"predict path: {m['cpu']}, nproc {m['nproc']}, {m['date']}; "
          f"model {bl.MODEL_NAME} {bl.MODEL_VERSION}; server on core 0, client on core 1; "
          f"{args.duration:g} s measured; server code: "
          f"{'work tree' if src == bl.ROOT else args.waybill_src + ' ' + src.name}")
    print(render(results, args.config))
    print("CPU µs/call: raw = this process's CPU per predict call; server = the server "
          "process's utime+stime per request (from /proc).")
    share_other = max(0.0, other) / elapsed
    print(f"other processes used {share_other:.0%} of a core while measuring"
          + (" - THE NUMBERS ARE DISTURBED, run again on a quiet machine"
             if share_other > 0.1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
