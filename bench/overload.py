"""Past capacity: many callers with short deadlines against one Waybill server.

    .venv/bin/python bench/overload.py [--config waybill-on] [--callers 500]
        [--deadline 0.25] [--seconds 6] [--ref REF]
    .venv/bin/python bench/overload.py --open 1.5 [--deadline 1.0] [--config waybill-on]

``--open X``: issue 19's measure instead. First the closed-loop capacity (32 callers,
1-row requests), then an open loop offering X times that capacity, every call with
``--deadline``: answered calls/s as a share of the capacity, the answered calls' p99
against deadline/2, and how fast each refusal status came (p50/p99).

For 1-row and 64-row requests, first the unloaded rate (8 closed-loop callers, no
deadline pressure), then ``--callers`` closed-loop callers whose every call has
``--deadline``: goodput (answered calls/s) as a share of the unloaded rate, how fast
refusals come (RESOURCE_EXHAUSTED p50/p99), how long admitted calls took (p99 against
the deadline), and every status seen. A refused caller calls again at once, the harshest
client there is. ``--ref`` runs another commit's code (git archive) for a before/after.
The server is pinned to core 0, the load generator to core 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import benchlib as bl

ROWS = (1, 64)


def load(port: int, proc: bl.Proc, payloads: Path, rows: int, callers: int,
         deadline: float, seconds: float, work: Path, rate: float = 0.0) -> dict[str, Any]:
    """Closed loop with ``callers``, or open loop at ``rate`` requests/s."""
    spec = {"target": f"{bl.HOST}:{port}", "method": bl.PREDICT_METHOD,
            "payloads": str(payloads), "mode": "open" if rate else "closed",
            "concurrency": callers, "rate": rate, "max_inflight": 20_000,
            "warmup": 1.0, "duration": seconds, "timeout": deadline,
            "server_pid": proc.pid, "rows_per_request": rows,
            "metadata": [list(m) for m in bl.PIN_METADATA]}
    spec_file, out = work / "spec.json", work / "result.json"
    spec_file.write_text(json.dumps(spec))
    subprocess.run(["taskset", "-c", bl.CLIENT_CPU, bl.VENV_PY,
                    Path(__file__).with_name("loadgen.py"), spec_file, out],
                   check=True, capture_output=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def past_capacity(port: int, proc: bl.Proc, work: Path, times: float, deadline: float,
                  seconds: float) -> None:
    payloads = work / "payloads-1.bin"
    bl.write_payloads(payloads, [bl.waybill_request_bytes([r]) for r in bl.load_rows()])
    calm = load(port, proc, payloads, 1, 32, 5.0, seconds, work)
    rate = times * calm["req_s"]
    hard = load(port, proc, payloads, 1, 0, deadline, seconds, work, rate=rate)
    refusals = ", ".join(f"{code} {n} (p50 {hard['error_latency_ms'][code]['p50']:.1f} ms, "
                         f"p99 {hard['error_latency_ms'][code]['p99']:.1f} ms)"
                         for code, n in sorted(hard["errors"].items()))
    print(f"capacity (closed loop, 32 callers): {calm['req_s']:,.0f} req/s; offered "
          f"{rate:,.0f}/s ({times:g}x) for {seconds:g} s, deadline {deadline * 1000:.0f} ms: "
          f"answered {hard['req_s']:,.0f} req/s = {hard['req_s'] / calm['req_s']:.2f}x "
          f"capacity, p50 {hard['p50_ms']:.1f} ms, p99 {hard['p99_ms']:.1f} ms "
          f"({hard['p99_ms'] / (deadline * 1000):.2f}x the deadline); refused: "
          f"{refusals or 'none'}; drops {hard['drops']}; server CPU "
          f"{hard['server_cpu_frac']:.0%}, load generator CPU {hard['gen_cpu_frac']:.0%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="waybill-on")
    parser.add_argument("--callers", type=int, default=500)
    parser.add_argument("--deadline", type=float, default=0.25)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--ref", default=None, help="a git ref to run instead of the tree")
    parser.add_argument("--flags", default="", help="more `waybill serve` flags")
    parser.add_argument("--open", type=float, default=None, metavar="X",
                        help="offer X times the closed-loop capacity, open loop")
    args = parser.parse_args()
    src = bl.waybill_source(args.ref)
    work = bl.RUN_DIR / "overload"
    work.mkdir(parents=True, exist_ok=True)
    rows = bl.load_rows()
    config = bl.with_flags(args.config, args.flags)
    proc, port = bl.start_waybill(config, work / "server", src)
    try:
        if args.open is not None:
            past_capacity(port, proc, work, args.open, args.deadline, args.seconds)
            return 0
        for n in ROWS:
            payloads = work / f"payloads-{n}.bin"
            bl.write_payloads(payloads, [bl.waybill_request_bytes(rows[i:i + n])
                                         for i in range(0, len(rows) - n, max(1, n))][:2000])
            calm = load(port, proc, payloads, n, 8, 5.0, args.seconds, work)
            hard = load(port, proc, payloads, n, args.callers, args.deadline, args.seconds,
                        work)
            refused = hard["error_latency_ms"].get("RESOURCE_EXHAUSTED", {})
            print(f"{n:>2}-row  unloaded {calm['req_s']:7,.0f} req/s | {args.callers} callers, "
                  f"{args.deadline * 1000:.0f} ms deadline: goodput {hard['req_s']:7,.0f} "
                  f"req/s ({hard['req_s'] / calm['req_s']:.0%}), admitted p50 "
                  f"{hard['p50_ms']:.1f} p99 {hard['p99_ms']:.1f} ms, refusals p50 "
                  f"{refused.get('p50', float('nan')):.1f} p99 "
                  f"{refused.get('p99', float('nan')):.1f} ms, errors {hard['errors']}; "
                  "error latency p50/p99 ms: " + ", ".join(
                      f"{code} {v['p50']:.1f}/{v['p99']:.1f}"
                      for code, v in hard["error_latency_ms"].items())
                  + f"; load generator CPU {hard['gen_cpu_frac']:.0%}, server CPU "
                  f"{hard['server_cpu_frac']:.0%}")
    finally:
        proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
