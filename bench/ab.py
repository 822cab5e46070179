"""Interleaved A/B of Waybill configurations: what one feature costs, despite a noisy VM.

Every configuration is started at once (all on the server core) and the load (closed loop,
32 callers, single-row requests; ``--workload 64cols``: 8 callers, 64 rows each as columns)
alternates between them, round after round; the medians
are printed, as req/s relative to the first configuration and server CPU per request.
Consecutive runs of one server here differ by 15-25 %, so a feature's cost is only
believable from alternation like this (the resident servers' idle threads cost everyone
alike; absolute numbers are a little lower than with one server alone).

A configuration is a name from waybill_configs.py, or NAME=BASE+FLAGS: BASE's flags
followed by FLAGS (split on spaces), e.g.

    .venv/bin/python bench/ab.py waybill-off waybill-on \\
        'noshadow=waybill-on+--routing /tmp/routing-without-shadow.toml' \\
        'nodrift=waybill-on+--no-drift'

Any configuration can run another commit's code with ``@REF`` (a git ref, extracted with
``git archive``; one ref per run), e.g. the same configuration before and after a change:

    .venv/bin/python bench/ab.py waybill-on@HEAD~3 waybill-on
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import benchlib as bl
from waybill_configs import WAYBILL_CONFIGS


def derive(spec: str) -> tuple[str, Path]:
    """Register NAME[=BASE+FLAGS][@REF] as a configuration; its name and source tree."""
    spec, _, ref = spec.partition("@")
    name = _derive(spec)
    if not ref:
        return name, bl.ROOT
    at = f"{name}@{ref}"
    WAYBILL_CONFIGS[at] = WAYBILL_CONFIGS[name]
    return at, bl.waybill_source(ref)


def _derive(spec: str) -> str:
    if "=" not in spec:
        if spec not in WAYBILL_CONFIGS:
            raise SystemExit(f"unknown configuration {spec!r}: {sorted(WAYBILL_CONFIGS)}")
        return spec
    name, _, rest = spec.partition("=")
    base, _, flags = rest.partition("+")
    if base not in WAYBILL_CONFIGS:
        raise SystemExit(f"{spec!r}: unknown base {base!r}")
    return bl.with_flags(base, flags, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="NAME or NAME=BASE+FLAGS, each maybe @REF")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workload", choices=("1row", "64cols", "stream"), default="1row",
                        help="1row: 32 callers, one row each (default); 64cols: 8 callers, "
                             "64 rows each as columns; stream: PredictStream, 32 one-row "
                             "messages in flight")
    args = parser.parse_args()
    rows_each, callers = (64, 8) if args.workload == "64cols" else (1, 32)
    mode, method = (("stream", bl.PREDICT_METHOD + "Stream") if args.workload == "stream"
                    else ("closed", bl.PREDICT_METHOD))
    sources = dict(derive(spec) for spec in args.configs)
    names = list(sources)
    work = bl.RUN_DIR / "ab"
    payloads = work / "payloads.bin"
    work.mkdir(parents=True, exist_ok=True)
    rows = bl.load_rows()
    if args.workload == "stream":  # PredictStreamRequest: field 1 holds the PredictRequest
        requests = [bl.stream_message(bl.waybill_request_bytes([row])) for row in rows]
    elif rows_each == 1:
        requests = [bl.waybill_request_bytes([row]) for row in rows]
    else:
        requests = [bl.waybill_columns_request_bytes(c) for c in bl.chunks(rows, rows_each)]
    bl.write_payloads(payloads, requests)
    servers: dict[str, tuple[bl.Proc, int]] = {}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        for name in names:
            servers[name] = bl.start_waybill(name, work / name, sources[name])
        for _ in range(args.rounds):
            for name in names:
                proc, port = servers[name]
                spec = {"target": f"{bl.HOST}:{port}", "method": method,
                        "payloads": str(payloads), "mode": mode, "concurrency": callers,
                        "warmup": 0.5, "duration": args.seconds, "server_pid": proc.pid,
                        "rows_per_request": rows_each,
                        "metadata": [list(m) for m in bl.PIN_METADATA]}
                spec_file, out = work / "spec.json", work / "result.json"
                spec_file.write_text(json.dumps(spec))
                subprocess.run(["taskset", "-c", bl.CLIENT_CPU, bl.VENV_PY,
                                Path(__file__).with_name("loadgen.py"), spec_file, out],
                               check=True, capture_output=True)
                cell = json.loads(out.read_text())
                results[name].append((cell["req_s"], cell["server_cpu_us_per_req"]))
    finally:
        for proc, _ in servers.values():
            proc.stop()
    base = statistics.median(r for r, _ in results[names[0]])
    for name in names:
        rates = [r for r, _ in results[name]]
        rate, cpu = statistics.median(rates), statistics.median(c for _, c in results[name])
        print(f"{name:24s} {rate:7,.0f} req/s ({rate / base:4.2f}x)  {cpu:5.0f} us CPU/req  "
              f"rounds {[round(r) for r in rates]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
