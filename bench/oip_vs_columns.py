"""64 orders a request: the Open Inference Protocol's ModelInfer with raw contents against
waybill.v1's Predict with columns, on one server, in one run.

    .venv/bin/python bench/oip_vs_columns.py [--rounds 3] [--duration 2] [--config waybill-off]

One `waybill serve` (a waybill_configs.py configuration, on core 0). bench/loadgen.py on
core 1 drives it closed-loop, 8 callers, with pre-serialized requests: the 31 64-row
requests of the bench rows, pinned to 1.1.0, as columns (`Predict`) and as raw tensors
(`ModelInfer`), alternating form after form for ``--rounds`` rounds; the medians are
printed (rows/s, latency, server CPU per request). Before measuring, the first request of
each form is answered and the two answers compared: the same numbers or it stops.

Then, in process (pinned to core 0, like bench/request_forms.py): the server CPU to read
and check one request of each form (decode, convert, validate against 1.1.0), the part
of a request whose cost depends on its form.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

import benchlib as bl

ROWS = 64
CONCURRENCY = 8
FORMS = ("columns", "v2-raw")


def payloads(rows: list[dict[str, Any]]) -> dict[str, list[bytes]]:
    chunks = bl.chunks(rows, ROWS)
    return {"columns": [bl.waybill_columns_request_bytes(c) for c in chunks],
            "v2-raw": [bl.v2_raw_request_bytes(c) for c in chunks]}


def check_same_answers(port: int, forms: dict[str, list[bytes]]) -> None:
    """The first request of each form, answered: the same values (transit days)."""
    import grpc
    import numpy as np
    from inference import open_inference_grpc_pb2 as oip
    from waybill.v1 import prediction_pb2 as pb

    with grpc.insecure_channel(f"{bl.HOST}:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        columns = pb.PredictResponse.FromString(channel.unary_unary(bl.PREDICT_METHOD)(
            forms["columns"][0], metadata=bl.PIN_METADATA, timeout=10))
        v2 = oip.ModelInferResponse.FromString(channel.unary_unary(bl.V2_METHOD)(
            forms["v2-raw"][0], timeout=10))
    names = [o.name for o in v2.outputs]
    days = np.frombuffer(v2.raw_output_contents[names.index("transit_days")], "<f8").tolist()
    if v2.model_version != columns.version or days != list(columns.columns.transit_days):
        raise SystemExit(f"the two forms answer differently: {v2.model_version} "
                         f"{days[:3]} vs {columns.version} "
                         f"{list(columns.columns.transit_days)[:3]}")


def drive(form: str, port: int, server_pid: int, files: dict[str, Path], workdir: Path,
          warmup: float, duration: float) -> dict[str, Any]:
    spec = {
        "target": f"{bl.HOST}:{port}",
        "method": bl.V2_METHOD if form == "v2-raw" else bl.PREDICT_METHOD,
        "payloads": str(files[form]),
        "metadata": [] if form == "v2-raw" else [list(m) for m in bl.PIN_METADATA],
        "mode": "closed", "concurrency": CONCURRENCY, "warmup": warmup,
        "duration": duration, "timeout": 5.0, "server_pid": server_pid,
        "rows_per_request": ROWS,
    }
    spec_path, out_path = workdir / f"{form}.spec.json", workdir / f"{form}.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    gen = subprocess.run(["taskset", "-c", bl.CLIENT_CPU, bl.VENV_PY, bl.BENCH / "loadgen.py",
                          spec_path, out_path], capture_output=True, text=True,
                         timeout=warmup + duration + 60)
    if gen.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"load generator failed: {gen.stderr.strip()[-800:]}")
    result = dict(json.loads(out_path.read_text()))
    if result["errors"]:
        raise RuntimeError(f"{form}: errors {result['errors']}")
    return result


def read_costs(forms: dict[str, list[bytes]]) -> dict[str, float]:
    """µs of server CPU to read and check one request of each form, in process."""
    from inference import open_inference_grpc_pb2 as oip
    from waybill.v1 import prediction_pb2 as pb

    from models.loaded import LoadedVersion
    from server.transport import convert, inference_convert

    version = LoadedVersion.load(bl.ROOT / "models", bl.MODEL_NAME, bl.MODEL_VERSION)
    facts = inference_convert.model_facts([version])

    def columns() -> None:
        query = convert.predict_query(pb.PredictRequest.FromString(forms["columns"][0]), [])
        version.validate(query.read())

    def v2_raw() -> None:
        request = oip.ModelInferRequest.FromString(forms["v2-raw"][0])
        query, _ = inference_convert.infer_query(request, [], facts)
        version.validate(query.read())

    out = {}
    for name, one in (("columns", columns), ("v2-raw", v2_raw)):
        one()
        calls = 300
        out[name] = min(timeit.repeat(one, number=calls, repeat=5)) / calls * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    from waybill_configs import WAYBILL_CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--config", default="waybill-off", choices=sorted(WAYBILL_CONFIGS))
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 0.2 <= args.duration <= 60):
        parser.error("--rounds 1..20, --duration 0.2..60")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the server

    m = bl.machine()
    forms = payloads(bl.load_rows())
    results: dict[str, list[dict[str, Any]]] = {form: [] for form in FORMS}
    with tempfile.TemporaryDirectory(prefix="waybill-oip-") as tmp:
        workdir = Path(tmp)
        files = {form: workdir / f"{form}.payloads" for form in FORMS}
        for form in FORMS:
            bl.write_payloads(files[form], forms[form])
        bl.pin_self({1})
        proc, port = bl.start_waybill(args.config, workdir)
        try:
            check_same_answers(port, forms)
            for _ in range(args.rounds):
                for form in FORMS:
                    results[form].append(drive(form, port, proc.pid, files, workdir,
                                               args.warmup, args.duration))
        finally:
            proc.stop()
    bl.pin_self({0})
    costs = read_costs(forms)

    def median(form: str, key: str) -> float:
        return statistics.median(r[key] for r in results[form])

    print(f"{ROWS} orders a request, closed loop c={CONCURRENCY}: {args.config} on core 0, "
          f"bench/loadgen.py on core 1; {m['cpu']}, nproc {m['nproc']}, {m['date']}; "
          f"medians of {args.rounds} alternating rounds of {args.duration:g} s")
    header = ("form", "rows/s", "p50 ms", "p99 ms", "srv CPU µs/req", "read+check µs",
              "other CPU %")
    table = [list(header)]
    for form in FORMS:
        table.append([
            "waybill.v1 Predict, columns" if form == "columns" else "V2 ModelInfer, raw",
            f"{median(form, 'rows_s'):,.0f}", f"{median(form, 'p50_ms'):.2f}",
            f"{median(form, 'p99_ms'):.2f}", f"{median(form, 'server_cpu_us_per_req'):.0f}",
            f"{costs[form]:.0f}", f"{median(form, 'other_cpu_frac') * 100:.0f}"])
    ratio = median("v2-raw", "rows_s") / median("columns", "rows_s")
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for n, r in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"V2 raw / columns rows/s: {ratio:.2f}; every round: "
          + ", ".join(f"{a['rows_s']:,.0f} vs {b['rows_s']:,.0f}"
                      for a, b in zip(results["v2-raw"], results["columns"], strict=True)))
    busy = max(median(form, "other_cpu_frac") for form in FORMS)
    if busy > 0.1:
        print("OTHER PROCESSES BUSY: run again on a quiet machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
