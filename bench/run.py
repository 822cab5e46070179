"""Waybill benchmark suite (issue 7): one table comparing Waybill with raw CatBoost, a bare
grpc.aio server (with and without a batching window) and MLServer, on one core each.

    .venv/bin/python bench/run.py [--quick] [--only PATTERN[,PATTERN...]] [--list]

Every server is pinned to core 0 (`taskset -c 0`), the load generator (bench/loadgen.py,
one grpc.aio process, pre-serialized requests) to core 1. Same model file, same rows
(models.datagen, 2000 rows, seed 5) for everyone. Results go to stdout and to
bench/RESULTS.md. MLServer is installed on first use into bench/.venvs/mlserver (its
protobuf must be < 7, so it cannot share the project venv). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib as bl
from waybill_configs import WAYBILL_CONFIGS

MLSERVER_VENV = bl.BENCH / ".venvs" / "mlserver"
MLSERVER_PY = MLSERVER_VENV / "bin" / "python"
MLSERVER_REQUIREMENTS = ["mlserver==1.7.1", "mlserver-catboost==1.7.1", "uvloop==0.21.0"]
MLSERVER_TOOL = bl.BENCH / "mlserver" / "tool.py"
MLSERVER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
BATCH_WINDOW_MS = 1.5
ROWS_PER_BIG_REQUEST = 64


# ------------------------------------------------------------------------------ workloads
@dataclass(frozen=True)
class Workload:
    name: str
    mode: str  # closed | open | stream (PredictStream: Waybill only)
    rows: int  # rows per request
    concurrency: int = 1
    rate: float = 0.0  # open loop: requests per second
    columns: bool = False  # a columnar PredictRequest (Waybill only)


def workloads(args: argparse.Namespace) -> list[Workload]:
    out = [Workload(f"closed c={c} 1-row", "closed", 1, c) for c in (1, 8, 32)]
    rc = args.rows_concurrency
    out.append(Workload(f"closed c={rc} {ROWS_PER_BIG_REQUEST}-row", "closed",
                        ROWS_PER_BIG_REQUEST, rc))
    out.append(Workload(f"closed c={rc} {ROWS_PER_BIG_REQUEST}-row columns", "closed",
                        ROWS_PER_BIG_REQUEST, rc, columns=True))
    out += [Workload(f"open {r:g}/s 1-row", "open", 1, rate=r) for r in args.open_rates]
    out.append(Workload("stream c=32 1-row", "stream", 1, 32))
    return out


# ------------------------------------------------------------------------------ targets
@dataclass
class Running:
    proc: bl.Proc
    port: int


@dataclass
class Target:
    name: str
    description: str
    kind: str  # raw | waybill-proto | mlserver
    start: Callable[[Path], Running] | None = None
    streams: bool = False  # serves PredictStream (Waybill only)
    columns: bool = False  # takes columnar requests (Waybill, and noop-aio as their floor)
    notes: list[str] = field(default_factory=list)


def start_bare(window_ms: float, noop: bool = False) -> Callable[[Path], Running]:
    def start(workdir: Path) -> Running:
        name = "noop" if noop else f"bare-{window_ms:g}ms"
        port_file = workdir / f"{name}.port"
        port_file.unlink(missing_ok=True)
        proc = bl.Proc(name, [bl.VENV_PY, bl.BENCH / "bare_server.py", "--port-file", port_file,
                              "--window-ms", str(window_ms), *(["--noop"] if noop else [])],
                       bl.SERVER_CPU, workdir / f"{name}.log").start()
        return Running(proc, wait_port_file(proc, port_file, 60))
    return start


def start_waybill(config: str, src: Path) -> Callable[[Path], Running]:
    def start(workdir: Path) -> Running:
        proc, port = bl.start_waybill(config, workdir, src)
        return Running(proc, port)
    return start


def start_mlserver(name: str, batching: bool) -> Callable[[Path], Running]:
    def start(workdir: Path) -> Running:
        repo = workdir / name
        (repo / "delivery_eta").mkdir(parents=True, exist_ok=True)
        ports = [bl.free_port() for _ in range(3)]
        settings = {"debug": False, "host": bl.HOST, "http_port": ports[0],
                    "grpc_port": ports[1], "metrics_port": ports[2]}
        model: dict[str, Any] = {
            "name": bl.MODEL_NAME,
            "implementation": "waybill_bench_runtime.CatBoostRegressorRuntime",
            "parameters": {"uri": str(bl.MODEL_FILE), "version": bl.MODEL_VERSION},
        }
        if batching:
            model.update(max_batch_size=64, max_batch_time=BATCH_WINDOW_MS / 1000)
        (repo / "settings.json").write_text(json.dumps(settings, indent=1))
        (repo / "delivery_eta" / "model-settings.json").write_text(json.dumps(model, indent=1))
        proc = bl.Proc(name, [MLSERVER_VENV / "bin" / "mlserver", "start", repo], bl.SERVER_CPU,
                       workdir / f"{name}.log", cwd=repo,
                       env={"PYTHONPATH": str(bl.BENCH / "mlserver")}).start()
        try:
            check = subprocess.run(
                ["taskset", "-c", bl.CLIENT_CPU, MLSERVER_PY, MLSERVER_TOOL, "check",
                 str(ports[1]), str(payload_file("mlserver", ROWS_PER_BIG_REQUEST)),
                 "--wait", "120"], capture_output=True, text=True, timeout=150)
            if check.returncode != 0 or not proc.alive():
                raise RuntimeError(f"{name} not ready: {check.stderr.strip()}\n{proc.tail()}")
        except BaseException:
            proc.stop()
            raise
        return Running(proc, ports[1])
    return start


def wait_port_file(proc: bl.Proc, port_file: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    try:
        while not port_file.exists():
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not ready in {timeout}s:\n{proc.tail()}")
            time.sleep(0.05)
        return int(port_file.read_text().strip())
    except BaseException:
        proc.stop()
        raise


def all_targets(src: Path) -> list[Target]:
    targets = [
        Target("raw", "CatBoostRegressor.predict in process (numpy object array, "
               "thread_count=1), sequential calls", "raw"),
        Target("noop-aio", "bench/bare_server.py --noop: grpc.aio answering an empty response "
               "(no model): the floor of any Python gRPC server here; to a columnar request "
               "a prebuilt columnar answer as big as Waybill's", "waybill-proto",
               start_bare(0.0, noop=True), columns=True),
        Target("bare-aio", "bench/bare_server.py: grpc.aio, predict per request on the loop",
               "waybill-proto", start_bare(0.0)),
        Target("bare-aio-batch", f"bench/bare_server.py --window-ms {BATCH_WINDOW_MS:g}: one "
               "predict per batching window on a predict thread", "waybill-proto",
               start_bare(BATCH_WINDOW_MS)),
        Target("mlserver", "MLServer 1.7.1 + mlserver-catboost (regressor subclass), stock "
               "settings (1 parallel worker), pandas request with string categories", "mlserver",
               start_mlserver("mlserver", batching=False)),
        Target("mlserver-adaptive", f"as mlserver, adaptive batching max_batch_size=64 "
               f"max_batch_time={BATCH_WINDOW_MS / 1000:g}s", "mlserver",
               start_mlserver("mlserver-adaptive", batching=True)),
    ]
    for name, cfg in WAYBILL_CONFIGS.items():
        args = " ".join(cfg["args"])
        targets.append(Target(name, f"waybill serve {args} (cores {cfg['cpus']}): "
                              f"{cfg['description']}", "waybill-proto", start_waybill(name, src),
                              streams=True, columns=True))
    return targets


# ------------------------------------------------------------------------------ payloads
def payload_file(kind: str, rows: int) -> Path:
    return bl.RUN_DIR / "payloads" / f"{kind}-{rows}.bin"


def prepare_payloads(rows: list[dict[str, Any]], need_mlserver: bool) -> None:
    sizes = (1, ROWS_PER_BIG_REQUEST)
    for size in sizes:
        bl.write_payloads(payload_file("waybill", size),
                          [bl.waybill_request_bytes(c) for c in bl.chunks(rows, size)])
    # PredictStreamRequest: field 1 (length-delimited) holding the PredictRequest.
    bl.write_payloads(payload_file("waybill-columns", ROWS_PER_BIG_REQUEST),
                      [bl.waybill_columns_request_bytes(c)
                       for c in bl.chunks(rows, ROWS_PER_BIG_REQUEST)])
    bl.write_payloads(payload_file("waybill-stream", 1),
                      [bl.stream_message(bl.waybill_request_bytes([row])) for row in rows])
    if need_mlserver:
        d = bl.RUN_DIR / "payloads"
        (d / "rows.json").write_text(json.dumps(rows))
        (d / "features.json").write_text(json.dumps(bl.model_features()))
        (d / "spec.json").write_text(json.dumps({str(payload_file("mlserver", s)): s
                                                 for s in sizes}))
        subprocess.run([MLSERVER_PY, MLSERVER_TOOL, "payloads", d / "rows.json",
                        d / "features.json", d / "spec.json"], check=True, timeout=300)


# ------------------------------------------------------------------------------ MLServer venv
def ensure_mlserver() -> None:
    """Install MLServer into its own venv (once; a marker records what was installed)."""
    marker = MLSERVER_VENV / ".bench-installed"
    want = " ".join(MLSERVER_REQUIREMENTS)
    if marker.exists() and marker.read_text().strip() == want and MLSERVER_PY.exists():
        return
    print(f"installing {want} into {MLSERVER_VENV} (first run only) ...", flush=True)
    if not MLSERVER_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", MLSERVER_VENV], check=True, timeout=300)
    subprocess.run([MLSERVER_PY, "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *MLSERVER_REQUIREMENTS],
                   check=True, timeout=1800)
    marker.write_text(want + "\n")


def mlserver_versions() -> dict[str, str]:
    code = ("import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
            "('mlserver', 'mlserver-catboost', 'catboost', 'grpcio', 'protobuf', 'pandas', "
            "'uvloop')}))")
    out = subprocess.run([MLSERVER_PY, "-c", code], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else {}


# ------------------------------------------------------------------------------ measuring
def measure_raw(rows: list[dict[str, Any]], batch: int, warmup: float,
                duration: float) -> dict[str, Any]:
    """Sequential predict calls in this process, pinned to the server core."""
    model = bl.load_regressor()
    matrices = [bl.row_matrix(c) for c in bl.chunks(rows, batch)]
    bl.pin_self({int(bl.SERVER_CPU)})
    clock = time.perf_counter_ns

    def loop(seconds: float) -> tuple[list[int], float, float, float]:
        latencies: list[int] = []
        busy0 = bl.machine_cpu_seconds()[0]
        cpu0, t0 = bl.self_cpu_seconds(), clock()
        end, i = t0 + int(seconds * 1e9), 0
        while i < 10_000_000:
            s = clock()
            if s >= end:
                break
            model.predict(matrices[i % len(matrices)], thread_count=1)
            latencies.append(clock() - s)
            i += 1
        cpu = bl.self_cpu_seconds() - cpu0
        return latencies, (clock() - t0) / 1e9, cpu, bl.machine_cpu_seconds()[0] - busy0 - cpu

    try:
        loop(warmup)
        latencies, window, cpu, other = loop(duration)
    finally:
        bl.pin_self({int(bl.CLIENT_CPU)})
    n = len(latencies)
    return {"ok": n, "errors": {}, "timeouts": 0, "drops": 0, "window_s": window,
            "req_s": n / window, "rows_s": n * batch / window, "server_cpu_frac": cpu / window,
            "server_cpu_us_per_req": cpu / n * 1e6, "gen_cpu_frac": math.nan,
            "other_cpu_frac": max(0.0, other) / window,
            **bl.latency_summary(latencies)}


def run_cell(target: Target, running: Running, w: Workload, args: argparse.Namespace,
             cell_dir: Path) -> dict[str, Any]:
    kind = "mlserver" if target.kind == "mlserver" else "waybill"
    method = MLSERVER_METHOD if kind == "mlserver" else bl.PREDICT_METHOD
    if w.mode == "stream":
        kind, method = "waybill-stream", bl.PREDICT_METHOD + "Stream"
    elif w.columns:
        kind = "waybill-columns"
    spec = {
        "target": f"{bl.HOST}:{running.port}",
        "method": method,
        "payloads": str(payload_file(kind, w.rows)),
        "metadata": [] if kind == "mlserver" else [list(m) for m in bl.PIN_METADATA],
        "mode": w.mode, "concurrency": w.concurrency, "rate": w.rate,
        "warmup": args.warmup, "duration": args.duration,
        "timeout": args.open_timeout if w.mode == "open" else args.timeout,
        "max_inflight": args.max_inflight, "server_pid": running.proc.pid,
        "rows_per_request": w.rows,
    }
    slug = f"{target.name}-{w.name}".replace(" ", "_").replace("/", "per").replace("=", "")
    spec_path, out_path = cell_dir / f"{slug}.spec.json", cell_dir / f"{slug}.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    out_path.unlink(missing_ok=True)
    limit = args.warmup + args.duration + max(args.timeout, args.open_timeout) + 60
    gen = subprocess.run(["taskset", "-c", bl.CLIENT_CPU, bl.VENV_PY, bl.BENCH / "loadgen.py",
                          spec_path, out_path], capture_output=True, text=True, timeout=limit)
    if gen.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"load generator failed: {gen.stderr.strip()[-800:]}")
    return dict(json.loads(out_path.read_text()))


def check_predictions(target: Target, running: Running, expected: list[float]) -> str:
    """Score the first 64-row request and compare medians with raw CatBoost."""
    import grpc
    import numpy as np

    if target.name == "noop-aio":
        return "n/a (answers no predictions)"
    try:
        if target.kind == "mlserver":
            out = subprocess.run(["taskset", "-c", bl.CLIENT_CPU, MLSERVER_PY, MLSERVER_TOOL,
                                  "check", str(running.port),
                                  str(payload_file("mlserver", ROWS_PER_BIG_REQUEST))],
                                 capture_output=True, text=True, timeout=60)
            values = json.loads(out.stdout)["values"]
            got = np.sort(np.asarray(values, dtype=float).reshape(-1, 3), axis=1)[:, 1]
        else:
            from waybill.v1 import prediction_pb2 as pb

            payload = bl.read_payloads(payload_file("waybill", ROWS_PER_BIG_REQUEST))[0]
            with grpc.insecure_channel(f"{bl.HOST}:{running.port}") as channel:
                raw = channel.unary_unary(bl.PREDICT_METHOD)(payload, metadata=bl.PIN_METADATA,
                                                            timeout=10)
            got = np.asarray([p.transit_days for p in pb.PredictResponse.FromString(raw)
                              .predictions])
        diff = float(np.max(np.abs(got - np.asarray(expected))))
        return "match raw" if diff < 1e-6 else f"DIFFER from raw (max |diff| {diff:.3g})"
    except Exception as err:  # a check that cannot run is reported, not fatal
        return f"check failed: {err}"


# ------------------------------------------------------------------------------ reporting
COLUMNS = ("server", "workload", "req/s", "rows/s", "p50 ms", "p99 ms", "p999 ms", "errors",
           "srv CPU µs/req", "srv CPU %", "gen CPU %", "other CPU %", "note")


def fmt(v: float, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}"


def error_text(r: dict[str, Any]) -> str:
    errs = dict(r.get("errors", {}))
    total = sum(errs.values()) + r.get("drops", 0)
    if not total:
        return "0"
    parts = [f"{n} {code.lower()}" for code, n in sorted(errs.items())]
    if r.get("drops"):
        parts.append(f"{r['drops']} dropped")
    return f"{total} ({', '.join(parts)})"


def saturation_note(r: dict[str, Any]) -> str:
    notes = []
    if r.get("gen_cpu_frac", 0) >= 0.9:
        notes.append("GENERATOR SATURATED")
    if r.get("send_lag_p99_ms", 0) > 5:
        notes.append(f"send lag p99 {r['send_lag_p99_ms']:.0f} ms")
    if r.get("other_cpu_frac", 0) > 0.1:
        notes.append("OTHER PROCESSES BUSY")
    if r.get("steal_frac", 0) > 0.05:
        notes.append(f"steal {100 * r['steal_frac']:.0f}%")
    return "; ".join(notes)


def table_rows(results: list[tuple[str, str, dict[str, Any] | str]]) -> list[list[str]]:
    rows = []
    for server, workload, r in results:
        if isinstance(r, str):
            rows.append([server, workload, *["-"] * 10, r])
            continue
        rows.append([server, workload, fmt(r["req_s"]), fmt(r["rows_s"]),
                     fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2), fmt(r["p999_ms"], 2),
                     error_text(r), fmt(r["server_cpu_us_per_req"]),
                     fmt(100 * r["server_cpu_frac"]), fmt(100 * r["gen_cpu_frac"]),
                     fmt(100 * r.get("other_cpu_frac", math.nan)), saturation_note(r)])
    return rows


def markdown_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    table = [list(header), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for n, r in enumerate(table):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def target_checks(res: dict[tuple[str, str], dict[str, Any]], args: argparse.Namespace,
                  ) -> list[list[str]]:
    """The issue's targets, evaluated on whatever this run measured."""
    c32, big = "closed c=32 1-row", f"closed c={args.rows_concurrency} {ROWS_PER_BIG_REQUEST}-row"
    out: list[list[str]] = []

    def get(server: str, workload: str) -> dict[str, Any] | None:
        r = res.get((server, workload))
        return r if isinstance(r, dict) and r.get("ok") else None

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    on, off = get("waybill-on", c32), get("waybill-off", c32)
    mls = [(n, r) for n in ("mlserver", "mlserver-adaptive") if (r := get(n, c32))]
    best = max(mls, key=lambda nr: nr[1]["req_s"]) if mls else None
    bare = get("bare-aio-batch", c32)
    if on and best:
        ratio = on["req_s"] / best[1]["req_s"]
        out.append(["c=32 1-row: waybill-on >= 4x MLServer best req/s",
                    f"{on['req_s']:,.0f} vs {best[0]} {best[1]['req_s']:,.0f} = {ratio:.2f}x",
                    verdict(ratio >= 4)])
        out.append(["c=32 1-row: waybill-on p99 <= MLServer best's p99",
                    f"{on['p99_ms']:.2f} vs {best[1]['p99_ms']:.2f} ms",
                    verdict(on["p99_ms"] <= best[1]["p99_ms"])])
    else:
        out.append(["c=32 1-row: waybill-on vs MLServer", "not measured", "n/a"])
    if on and bare:
        ratio = on["req_s"] / bare["req_s"]
        out.append(["c=32 1-row: waybill-on >= 0.9x bare-aio-batch req/s",
                    f"{on['req_s']:,.0f} vs {bare['req_s']:,.0f} = {ratio:.2f}x",
                    verdict(ratio >= 0.9)])
    else:
        out.append(["c=32 1-row: waybill-on vs bare-aio-batch", "not measured", "n/a"])
    streamed = get("waybill-on", "stream c=32 1-row")
    if streamed and bare:
        ratio = streamed["req_s"] / bare["req_s"]
        out.append(["32 in flight 1-row: waybill-on PredictStream vs bare-aio-batch (unary)",
                    f"{streamed['req_s']:,.0f} vs {bare['req_s']:,.0f} = {ratio:.2f}x",
                    verdict(ratio >= 0.9)])
    raw_big = get("raw", f"{ROWS_PER_BIG_REQUEST} rows/call")
    for server, workload in [("waybill-on", big), ("waybill-on", f"{big} columns"),
                             ("waybill-off", f"{big} columns")]:
        served = get(server, workload)
        if served and raw_big:
            ratio = served["rows_s"] / raw_big["rows_s"]
            out.append([f"{workload.removeprefix('closed ')}: {server} >= 70% of raw rows/s",
                        f"{served['rows_s']:,.0f} vs {raw_big['rows_s']:,.0f} = {ratio:.0%}",
                        verdict(ratio >= 0.7)])
        else:
            out.append([f"{workload}: {server} vs raw", "not measured", "n/a"])
    floor = get("noop-aio", f"{big} columns")
    if floor and raw_big:
        # What 70 % of raw leaves for Waybill: the transport alone, same bytes in and out.
        out.append([f"context: {big.removeprefix('closed ')} columns with no work at all "
                    "(noop-aio) vs raw",
                    f"{floor['rows_s']:,.0f} vs {raw_big['rows_s']:,.0f} rows/s = "
                    f"{floor['rows_s'] / raw_big['rows_s']:.0%}; server CPU "
                    f"{floor['server_cpu_us_per_req']:,.0f} vs "
                    f"{raw_big['server_cpu_us_per_req']:,.0f} µs per 64 rows", "floor"])
    if on and off:
        cost = 1 - on["req_s"] / off["req_s"]
        cpu = on["server_cpu_us_per_req"] / off["server_cpu_us_per_req"] - 1
        out.append(["on vs off cost <= 15% (c=32 1-row req/s; CPU/req shown too)",
                    f"req/s {on['req_s']:,.0f} vs {off['req_s']:,.0f}: on costs {cost:.0%} of "
                    f"throughput; CPU/req {cpu:+.0%}", verdict(cost <= 0.15)])
    else:
        out.append(["on vs off cost", "not measured", "n/a"])
    out += issue19_checks(get, args, verdict)
    two = [n for n in WAYBILL_CONFIGS if n.startswith("waybill-on-2")]
    if two and on and (r2 := get(two[0], c32)):
        ratio = r2["req_s"] / on["req_s"]
        out.append([f"2 workers >= 1.7x one ({two[0]} vs waybill-on, c=32 1-row)",
                    f"{r2['req_s']:,.0f} vs {on['req_s']:,.0f} = {ratio:.2f}x",
                    verdict(ratio >= 1.7)])
    else:
        out.append(["2 workers >= 1.7x one", "no 2-worker configuration in "
                    "bench/waybill_configs.py yet", "n/a"])
    return out


def issue19_checks(get: Callable[[str, str], dict[str, Any] | None],
                   args: argparse.Namespace, verdict: Callable[[bool | None], str],
                   ) -> list[list[str]]:
    """Issue 19's ratios, each against the Python gRPC floor or waybill-off of this run
    (its past-capacity target: bench/overload.py --open 1.5)."""
    c32 = "closed c=32 1-row"
    big = f"closed c={args.rows_concurrency} {ROWS_PER_BIG_REQUEST}-row"
    on, bare = get("waybill-on", c32), get("bare-aio-batch", c32)
    streamed = get("waybill-on", "stream c=32 1-row")
    cols_on, cols_off = get("waybill-on", f"{big} columns"), get("waybill-off", f"{big} columns")
    bare_big = get("bare-aio-batch", big)
    checks = [("c=32 1-row: waybill-on >= 0.75x bare-aio-batch req/s (issue 19)", on, bare,
               "req_s", 0.75),
              ("c=32 PredictStream: waybill-on >= 1.2x bare-aio-batch unary req/s (issue 19)",
               streamed, bare, "req_s", 1.2),
              ("c=8 64-row columns: waybill-on >= 0.85x waybill-off rows/s (issue 19)",
               cols_on, cols_off, "rows_s", 0.85),
              ("c=8 64-row columns: waybill-on >= 1.1x bare-aio-batch 64-row rows/s (issue 19)",
               cols_on, bare_big, "rows_s", 1.1)]
    out = []
    for name, a, b, key, floor in checks:
        if a and b:
            ratio = a[key] / b[key]
            out.append([name, f"{a[key]:,.0f} vs {b[key]:,.0f} = {ratio:.2f}x",
                        verdict(ratio >= floor)])
        else:
            out.append([name, "not measured", "n/a"])
    return out


# ------------------------------------------------------------------------------ main
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 s warm-up + 2 s per cell")
    p.add_argument("--duration", type=float, help="measured seconds per cell (default 8)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 2)")
    p.add_argument("--only", help="comma-separated server names or globs (see --list)")
    p.add_argument("--list", action="store_true", help="list the servers and exit")
    p.add_argument("--open-rates", default="100,500,2000",
                   help="open-loop single-row arrival rates, req/s (default 100,500,2000)")
    p.add_argument("--rows-concurrency", type=int, default=8,
                   help=f"callers for the {ROWS_PER_BIG_REQUEST}-row workload (default 8)")
    p.add_argument("--timeout", type=float, default=5.0, help="closed-loop deadline, s")
    p.add_argument("--open-timeout", type=float, default=1.0, help="open-loop deadline, s")
    p.add_argument("--max-inflight", type=int, default=2000,
                   help="open loop: requests beyond this many in flight are dropped")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="before each cell wait up to this many seconds for other processes "
                        "to use < 15%% of a core (default 10; 0 = do not wait)")
    p.add_argument("--waybill-src", metavar="GIT_REF",
                   help="run Waybill from this commit (git archive) instead of the work tree")
    p.add_argument("--results", type=Path, default=bl.BENCH / "RESULTS.md",
                   help="where to write the Markdown results (default bench/RESULTS.md)")
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 8.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.open_rates = [float(r) for r in args.open_rates.split(",") if r.strip()]
    if not (0.5 <= args.duration <= 120 and 0 <= args.warmup <= 60):
        p.error("--duration must be in [0.5, 120] s and --warmup in [0, 60] s")
    if any(not 1 <= r <= 50_000 for r in args.open_rates):
        p.error("--open-rates must be between 1 and 50000 req/s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    machine = bl.machine()  # before pinning: nproc counts the cores we may use
    src = bl.waybill_source(args.waybill_src)
    targets = all_targets(src)
    if args.list:
        for t in targets:
            print(f"{t.name:18} {t.description}")
        return 0
    if args.only:
        pats = [p.strip() for p in args.only.split(",") if p.strip()]
        targets = [t for t in targets if any(fnmatch.fnmatch(t.name, p) for p in pats)]
        if not targets:
            raise SystemExit(f"--only {args.only!r} matches no server (see --list)")
    else:  # configurations for ab.py comparisons run only when named
        targets = [t for t in targets if WAYBILL_CONFIGS.get(t.name, {}).get("suite", True)]
    floor = bl.pingpong(1.0, (int(bl.SERVER_CPU), int(bl.CLIENT_CPU)))
    print(f"cross-core wake-up round trip (socketpair ping-pong): p50 {floor['p50_us']:.0f} µs, "
          f"p99 {floor['p99_us']:.0f} µs, p999 {floor['p999_us']:.0f} µs", flush=True)
    bl.pin_self({int(bl.CLIENT_CPU)})
    run_dir = bl.RUN_DIR / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    old_runs = sorted(d for d in bl.RUN_DIR.glob("2*-*") if d.is_dir() and d != run_dir)
    for old in old_runs[:-2]:  # keep the logs of the last three runs
        shutil.rmtree(old, ignore_errors=True)

    setup_notes: list[str] = []
    ml_versions: dict[str, str] = {}
    if any(t.kind == "mlserver" for t in targets):
        try:
            ensure_mlserver()
            ml_versions = mlserver_versions()
        except (subprocess.SubprocessError, OSError) as err:
            reason = f"MLServer install failed: {err}"
            setup_notes.append(reason)
            for t in targets:
                if t.kind == "mlserver":
                    t.start, t.kind = None, "unavailable"
                    t.notes.append(reason)

    rows = bl.load_rows()
    try:
        prepare_payloads(rows, any(t.kind == "mlserver" for t in targets))
    except subprocess.SubprocessError as err:
        reason = f"MLServer requests could not be built: {err}"
        setup_notes.append(reason)
        for t in targets:
            if t.kind == "mlserver":
                t.start, t.kind = None, "unavailable"
                t.notes.append(reason)
    expected = list(__import__("numpy").sort(
        bl.load_regressor().predict(bl.row_matrix(rows[:ROWS_PER_BIG_REQUEST]), thread_count=1),
        axis=1)[:, 1])

    loads = workloads(args)
    results: list[tuple[str, str, dict[str, Any] | str]] = []
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    checks: dict[str, str] = {}
    started = time.monotonic()
    for t in targets:
        print(f"== {t.name}: {t.description}", flush=True)
        if t.kind == "raw":
            for batch in (1, ROWS_PER_BIG_REQUEST):
                wname = f"{batch} row{'s' if batch > 1 else ''}/call"
                if args.quiet_wait > 0:
                    bl.wait_for_quiet(args.quiet_wait)
                r = measure_raw(rows, batch, args.warmup, args.duration)
                results.append((t.name, wname, r))
                by_key[(t.name, wname)] = r
                print(f"   {wname}: {r['rows_s']:,.0f} rows/s p50 {r['p50_ms']:.3f} ms",
                      flush=True)
            continue
        if t.start is None:
            results.append((t.name, "all", "; ".join(t.notes) or "unavailable"))
            continue
        try:
            running = t.start(run_dir)
        except Exception as err:
            msg = str(err).strip().splitlines()
            results.append((t.name, "all", f"did not start: {msg[0] if msg else err}"))
            print(f"   did not start: {err}", flush=True)
            continue
        try:
            checks[t.name] = check_predictions(t, running, expected)
            print(f"   predictions: {checks[t.name]}", flush=True)
            for w in loads:
                if (w.mode == "stream" and not t.streams) or (w.columns and not t.columns):
                    continue
                if not running.proc.alive():
                    results.append((t.name, w.name, "server exited"))
                    continue
                if args.quiet_wait > 0:
                    bl.wait_for_quiet(args.quiet_wait, running.proc.pid)
                try:
                    r = run_cell(t, running, w, args, run_dir)
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    results.append((t.name, w.name, f"failed: {err}"[:200]))
                    print(f"   {w.name}: failed: {err}", flush=True)
                    continue
                results.append((t.name, w.name, r))
                by_key[(t.name, w.name)] = r
                print(f"   {w.name}: {r['req_s']:,.0f} req/s p50 {r['p50_ms']:.2f} ms "
                      f"p99 {r['p99_ms']:.2f} ms errors {error_text(r)} "
                      f"{saturation_note(r)}", flush=True)
                time.sleep(0.5)  # let a backlog from the previous cell drain
        finally:
            running.proc.stop()

    table = markdown_table(COLUMNS, table_rows(results))
    checks_table = markdown_table(("target (issue 7)", "measured", "verdict"),
                                  target_checks(by_key, args))
    print()
    print(table)
    print()
    print(checks_table)
    write_results(args, machine, ml_versions, targets, table, checks_table, checks,
                  setup_notes, time.monotonic() - started, floor, results)
    print(f"\nwrote {args.results}")
    return 0


def git_revision() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=bl.ROOT,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=bl.ROOT, capture_output=True, text=True, timeout=10).stdout
        return rev + (" (work tree has uncommitted changes)" if dirty.strip() else "")
    return "unknown"


def write_results(args: argparse.Namespace, machine: dict[str, str],
                  ml_versions: dict[str, str], targets: list[Target], table: str,
                  checks_table: str, checks: dict[str, str], setup_notes: list[str],
                  elapsed: float, floor: dict[str, float],
                  results: list[tuple[str, str, dict[str, Any] | str]]) -> None:
    measured = [(s, w, r) for s, w, r in results if isinstance(r, dict)]
    cells = len(measured)
    disturbed = [f"{s} {w}" for s, w, r in measured if r.get("other_cpu_frac", 0) > 0.1]
    ours = bl.versions()
    snapshot = bl.waybill_source(args.waybill_src) if args.waybill_src else None
    src = (f"{args.waybill_src} = commit {snapshot.name.removeprefix('src-')} (git archive)"
           if snapshot else f"work tree at {git_revision()}")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run.py {' '.join(sys.argv[1:])}`".rstrip() + f" in {elapsed:.0f} s. "
        "What the columns mean, the method and the targets: [README.md](README.md).",
        "",
        f"- machine: {machine['cpu']}, nproc {machine['nproc']}; {machine['date']}",
        f"- Python {machine['python']}; project venv: "
        + ", ".join(f"{k} {v}" for k, v in ours.items()),
        "- MLServer venv: " + (", ".join(f"{k} {v}" for k, v in ml_versions.items())
                               or "not used"),
        f"- Waybill: {src}",
        f"- each cell: {args.warmup:g} s warm-up + {args.duration:g} s measured"
        + (" (--quick)" if args.quick else "")
        + f"; servers on core {bl.SERVER_CPU}, load generator on core {bl.CLIENT_CPU}; "
        f"deadline {args.timeout:g} s closed loop, {args.open_timeout:g} s open loop; "
        f"open loop drops beyond {args.max_inflight} in flight",
        "- cross-core wake-up round trip before the run (1 s socketpair ping-pong between the "
        f"two cores): p50 {floor['p50_us']:.0f} µs, p99 {floor['p99_us']:.0f} µs, "
        f"p999 {floor['p999_us']:.0f} µs, max {floor['max_us']:.0f} µs - this VM's scheduling "
        "noise, a floor under every p99 below",
        "- rows: models.datagen.generate(2000, seed=5); model "
        f"{bl.MODEL_NAME} {bl.MODEL_VERSION}",
        "",
        "## Servers",
        "",
        *[f"- **{t.name}**: {t.description}"
          + (f" - predictions on the first 64-row request: {checks[t.name]}"
             if t.name in checks else "") for t in targets],
        "",
        "## Results",
        "",
        table,
        "",
        "## Targets",
        "",
        checks_table,
        "",
    ]
    if disturbed:
        lines += ["## Caveat", "",
                  f"{len(disturbed)} of {cells} cells ran while other processes used more than "
                  "10 % of a core (`other CPU %`): " + ", ".join(disturbed)
                  + ". Their numbers understate the server; rerun on a quiet machine before "
                  "quoting them.", ""]
    if setup_notes:
        lines += ["## Setup problems", "", *[f"- {n}" for n in setup_notes], ""]
    args.results.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
