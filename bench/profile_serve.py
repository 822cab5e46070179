"""Where a serving process's event loop spends its time under one workload (cProfile).

    .venv/bin/python bench/profile_serve.py [--config waybill-on] [--workload 1row|64cols]
        [--concurrency N] [--duration 5] [--top 40] [--out PROFILE]

Starts the named configuration (bench/waybill_configs.py) under cProfile, pinned to core 0,
drives it with bench/loadgen.py (closed loop) from core 1, stops it with SIGTERM and prints
the functions with the most own time on the event loop thread. cProfile slows calls down
(each traced call costs ~0.3 us more), so the shares are what to read, not the times;
work on other threads (CatBoost and drift on the predict executor, the log writer) does
not appear: ``bench/costs.py`` times those components directly.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl
from waybill_configs import WAYBILL_CONFIGS


def child(out: str, argv: list[str]) -> int:
    """Run the server's CLI with the profiler on this (the event loop's) thread."""
    from server.runtime.cli import main

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return int(main(argv) or 0)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def payloads(workload: str) -> tuple[list[bytes], int]:
    rows = bl.load_rows()
    if workload == "1row":
        return [bl.waybill_request_bytes([r]) for r in rows], 1
    return [bl.waybill_columns_request_bytes(c) for c in bl.chunks(rows, 64)], 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="waybill-on", choices=sorted(WAYBILL_CONFIGS))
    parser.add_argument("--workload", default="1row", choices=("1row", "64cols"))
    parser.add_argument("--concurrency", type=int, default=0,
                        help="closed-loop callers (default 32 for 1row, 8 for 64cols)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="keep the profile here")
    args = parser.parse_args(argv)
    concurrency = args.concurrency or (32 if args.workload == "1row" else 8)
    spec = WAYBILL_CONFIGS[args.config]
    with tempfile.TemporaryDirectory(prefix="waybill-profile-") as tmp:
        work = Path(tmp)
        profile = args.out or work / "serve.prof"
        port_file = work / "port"
        serve = ["serve", "--host", bl.HOST, "--port", "0", "--port-file", str(port_file),
                 "--registry", str(bl.ROOT / "models"),
                 *[a.replace("{workdir}", str(work)) for a in spec["args"]]]
        if any("{postgres}" in a for a in serve):
            parser.error("PostgreSQL configurations are not profiled here")
        env: dict[str, str] = {}
        sink = None
        if spec.get("otlp"):
            sink, sink_port = bl.start_otlp_sink(work)
            env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{bl.HOST}:{sink_port}",
                       OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
        server = bl.Proc(args.config, [bl.VENV_PY, __file__, "--child", str(profile), "--",
                                       *serve],
                         spec["cpus"], work / "server.log", env=env, companion=sink)
        try:
            server.start()
            deadline = time.monotonic() + 90
            while not port_file.exists():
                if not server.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{server.tail()}")
                time.sleep(0.05)
            port = bl.read_port_file(port_file)
            requests, rows = payloads(args.workload)
            bl.write_payloads(work / "payloads", requests)
            load = {"target": f"{bl.HOST}:{port}", "method": bl.PREDICT_METHOD,
                    "payloads": str(work / "payloads"),
                    "metadata": [list(m) for m in bl.PIN_METADATA], "mode": "closed",
                    "concurrency": concurrency, "warmup": 1.0, "duration": args.duration,
                    "timeout": 5.0, "max_inflight": 2000, "server_pid": server.pid,
                    "rows_per_request": rows}
            (work / "spec.json").write_text(json.dumps(load))
            subprocess.run(["taskset", "-c", bl.CLIENT_CPU, bl.VENV_PY,
                            bl.BENCH / "loadgen.py", work / "spec.json", work / "out.json"],
                           check=True, timeout=args.duration + 120)
            result = json.loads((work / "out.json").read_text())
        finally:
            server.stop(timeout=30)
        print(f"{args.config}, {args.workload}, c={concurrency}: "
              f"{result['req_s']:,.0f} req/s, {result['server_cpu_us_per_req']:,.0f} µs server "
              "CPU a request, under the profiler")
        stats = pstats.Stats(str(profile))
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2], sys.argv[4:]))
    sys.exit(main())
