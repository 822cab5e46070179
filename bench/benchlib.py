"""Shared pieces of the benchmarks: rows, payloads, server processes, CPU accounting.

Runs in the project venv (numpy, catboost, the Waybill stubs). Nothing here talks to
anything but 127.0.0.1, and every process started here is stopped by its owner.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RUN_DIR = BENCH / "run"  # scratch: payloads, logs, per-cell results (git-ignored)
VENV_PY = ROOT / ".venv" / "bin" / "python"
MODEL_NAME = "delivery_eta"
MODEL_VERSION = "1.1.0"
MODEL_DIR = ROOT / "models" / MODEL_NAME / MODEL_VERSION
MODEL_FILE = MODEL_DIR / "model.cbm"
HOST = "127.0.0.1"  # the only address any benchmark talks to
SERVER_CPU = "0"  # taskset list for servers
CLIENT_CPU = "1"  # taskset list for the load generator / clients
ROW_COUNT = 2000
ROW_SEED = 5
PREDICT_METHOD = "/waybill.v1.PredictionService/Predict"
PIN_METADATA = (("x-model-version", MODEL_VERSION),)


# ---------------------------------------------------------------- rows and matrices
def manifest() -> dict[str, Any]:
    return json.loads((MODEL_DIR / "model.json").read_text())


def features() -> list[dict[str, Any]]:
    """Every request feature, in manifest order (the date field included)."""
    return list(manifest()["features"])


def model_features() -> list[dict[str, Any]]:
    """The features CatBoost sees, in CatBoost column order (dates are not model inputs)."""
    return [f for f in features() if f["type"] != "date"]


def load_rows(n: int = ROW_COUNT, seed: int = ROW_SEED) -> list[dict[str, Any]]:
    """Realistic request rows (JSON values); a missing optional number leaves its key out."""
    from models import datagen  # the project's seeded generator

    frame = datagen.generate(n, seed=seed)
    names = [f["name"] for f in features()]
    rows = []
    for record in frame[names].to_dict("records"):
        row: dict[str, Any] = {}
        for key, value in record.items():
            if isinstance(value, float) and math.isnan(value):
                continue
            row[key] = value.item() if hasattr(value, "item") else value
        rows.append(row)
    return rows


def row_values(row: dict[str, Any], feats: Sequence[dict[str, Any]]) -> list[Any]:
    """One row as CatBoost input values, the way Waybill's validator builds them."""
    out: list[Any] = []
    for f in feats:
        value = row.get(f["name"])
        if value is None:
            out.append("" if f["type"] == "categorical" else math.nan)
        elif f["type"] == "boolean":
            out.append(1.0 if value else 0.0)
        elif f["type"] == "categorical":
            out.append(value)
        else:
            out.append(float(value))
    return out


def row_matrix(rows: Sequence[dict[str, Any]]) -> Any:
    """(rows, model features) numpy object array in CatBoost column order."""
    import numpy as np

    feats = model_features()
    matrix = np.empty((len(rows), len(feats)), dtype=object)
    for i, row in enumerate(rows):
        matrix[i] = row_values(row, feats)
    return matrix


def load_regressor() -> Any:
    from catboost import CatBoostRegressor

    model = CatBoostRegressor()
    model.load_model(str(MODEL_FILE), format="cbm")
    return model


def chunks(rows: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [rows[i:i + size] for i in range(0, len(rows) - size + 1, size)]


# ---------------------------------------------------------------- Waybill payloads
def waybill_request_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    from google.protobuf import struct_pb2
    from waybill.v1 import prediction_pb2 as pb

    request = pb.PredictRequest(model=MODEL_NAME)
    for row in rows:
        s = struct_pb2.Struct()
        s.update(row)
        request.rows.append(s)
    return request.SerializeToString()


def waybill_columns_request_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """The rows as a columnar PredictRequest; a value a row leaves out is listed as missing."""
    from waybill.v1 import prediction_pb2 as pb

    request = pb.PredictRequest(model=MODEL_NAME)
    names = dict.fromkeys(name for row in rows for name in row)
    for name in names:
        values = [row.get(name) for row in rows]
        column = request.columns.add(name=name)
        column.missing.extend(i for i, v in enumerate(values) if v is None)
        kind = type(next(v for v in values if v is not None))
        if kind is bool:
            column.booleans.extend(bool(v) for v in values)
        elif kind is str:
            column.strings.extend(v or "" for v in values)
        else:
            column.numbers.extend(0.0 if v is None else float(v) for v in values)
    return request.SerializeToString()


# The Open Inference Protocol's datatype for each feature type (ModelMetadata's).
V2_DATATYPES = {"date": "BYTES", "categorical": "BYTES", "numeric": "FP64", "integer": "INT64",
                "boolean": "BOOL"}
V2_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def v2_raw_request_bytes(rows: Sequence[dict[str, Any]], version: str = MODEL_VERSION) -> bytes:
    """The rows as a ModelInferRequest with raw_input_contents: one tensor per feature,
    little-endian, BYTES length-prefixed; a number a row leaves out is NaN (any other
    value a row leaves out: the input's "missing" parameter lists it)."""
    import numpy as np
    from inference import open_inference_grpc_pb2 as oip

    request = oip.ModelInferRequest(model_name=MODEL_NAME, model_version=version)
    kinds = {f["name"]: V2_DATATYPES[f["type"]] for f in features()}
    names = dict.fromkeys(name for row in rows for name in row)
    for name in names:
        datatype = kinds[name]
        values = [row.get(name) for row in rows]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        absent = [i for i, v in enumerate(values) if v is None]
        if datatype == "BYTES":
            items = [str(v or "").encode() for v in values]
            raw = b"".join(struct.pack("<I", len(b)) + b for b in items)
        elif datatype == "FP64":
            raw = np.array([math.nan if v is None else v for v in values], "<f8").tobytes()
            absent = []
        else:
            dtype = "<i8" if datatype == "INT64" else "u1"
            raw = np.array([v or 0 for v in values], dtype).tobytes()
        if absent:
            tensor.parameters["missing"].string_param = ",".join(map(str, absent))
        request.raw_input_contents.append(raw)
    return request.SerializeToString()


def stream_message(request: bytes) -> bytes:
    """A PredictStreamRequest holding ``request`` (field 1, length-delimited)."""
    size, varint = len(request), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        varint.append(byte | (0x80 if size else 0))
        if not size:
            return b"\x0a" + bytes(varint) + request


def write_payloads(path: Path, payloads: Iterable[bytes]) -> None:
    """Length-prefixed byte strings: the load generator sends them as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for p in payloads:
            out.write(struct.pack("<I", len(p)))
            out.write(p)


def read_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        pos += 4
        out.append(data[pos:pos + size])
        pos += size
    return out


# ---------------------------------------------------------------- CPU accounting
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from "state" on


def descendants(pid: int) -> list[int]:
    """pid and every live descendant (MLServer runs its inference in child processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its live descendants, from /proc/<pid>/stat."""
    total = 0
    for p in descendants(pid):
        fields = _stat_fields(p)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / CLK_TCK


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) seconds summed over all cores since boot, from /proc/stat.

    busy = user + nice + system (what processes were charged); steal = time the
    hypervisor ran something else while a vCPU wanted to run."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    return (ticks[0] + ticks[1] + ticks[2]) / CLK_TCK, ticks[7] / CLK_TCK


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------- statistics
def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(latencies_ns: Iterable[int]) -> dict[str, float]:
    values = sorted(latencies_ns)
    return {
        "n": len(values),
        "p50_ms": percentile(values, 0.50) / 1e6,
        "p99_ms": percentile(values, 0.99) / 1e6,
        "p999_ms": percentile(values, 0.999) / 1e6,
    }


# ---------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return True
        time.sleep(0.05)
    return False


class Proc:
    """A child in its own process group, pinned with taskset; stop() ends the whole group."""

    def __init__(self, name: str, cmd: Sequence[str], cpus: str | None, log: Path,
                 env: dict[str, str] | None = None, cwd: Path = ROOT,
                 companion: Proc | None = None) -> None:
        self.name = name
        self.companion = companion  # stopped after this one (e.g. its OTLP sink)
        self.cmd = (["taskset", "-c", cpus] if cpus is not None else []) + [str(c) for c in cmd]
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None:
            return
        pgid = self.popen.pid  # start_new_session: the group id is the child's pid
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Whatever is left in the group (workers of a server that exited) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        if self.companion is not None:
            self.companion.stop(timeout)


def pingpong(seconds: float = 1.0, cpus: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """Round trips of one byte between two processes on the two cores (a socketpair):
    the machine's own wake-up latency, a floor under every cross-core latency here."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echoing child: bounded by the parent closing its end
        try:
            os.sched_setaffinity(0, {cpus[0]})
            while (data := b.recv(8)) and data != b"q":
                b.send(data)
        finally:
            os._exit(0)
    before = os.sched_getaffinity(0)
    latencies: list[int] = []
    try:
        os.sched_setaffinity(0, {cpus[1]})
        end = time.perf_counter_ns() + int(seconds * 1e9)
        while len(latencies) < 1_000_000:
            t0 = time.perf_counter_ns()
            if t0 >= end:
                break
            a.send(b"x")
            a.recv(8)
            latencies.append(time.perf_counter_ns() - t0)
    finally:
        with contextlib.suppress(OSError):
            a.send(b"q")
        a.close()
        os.waitpid(pid, 0)
        b.close()
        os.sched_setaffinity(0, before)
    values = sorted(latencies)
    return {"n": len(values), "p50_us": percentile(values, 0.5) / 1e3,
            "p99_us": percentile(values, 0.99) / 1e3, "p999_us": percentile(values, 0.999) / 1e3,
            "max_us": values[-1] / 1e3 if values else math.nan}


def wait_for_quiet(max_wait: float, server_pid: int | None = None, threshold: float = 0.15,
                   sample: float = 0.5) -> float:
    """Wait (at most max_wait s) until processes other than ours and the server use less
    than ``threshold`` of a core; return the last sample's foreign load (share of a core)."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, ours0 = machine_cpu_seconds()[0], self_cpu_seconds()
        srv0 = tree_cpu_seconds(server_pid) if server_pid else 0.0
        t0 = time.monotonic()
        time.sleep(sample)
        busy1, ours1 = machine_cpu_seconds()[0], self_cpu_seconds()
        srv1 = tree_cpu_seconds(server_pid) if server_pid else 0.0
        foreign = max(0.0, (busy1 - busy0) - (ours1 - ours0) - (srv1 - srv0))
        foreign /= time.monotonic() - t0
        if foreign < threshold or time.monotonic() >= deadline:
            return foreign


def pin_self(cpus: set[int]) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, cpus)


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("catboost", "grpcio", "protobuf", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {"nproc": nproc or str(os.cpu_count()), "cpu": model,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "python": platform.python_version()}


def waybill_source(ref: str | None) -> Path:
    """Where the server's code comes from: the work tree (None) or a git ref, extracted
    read-only with `git archive` into bench/run/src-<commit> (for a stable baseline while
    the work tree is being edited)."""
    if not ref:
        return ROOT
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.strip()
    dest = RUN_DIR / f"src-{commit[:12]}"
    if not (dest / ".complete").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        (dest / ".complete").write_text(commit + "\n")
    for old in RUN_DIR.glob("src-*"):  # one snapshot is enough
        if old != dest:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def with_flags(config: str, flags: str, name: str | None = None) -> str:
    """A configuration that is ``config`` with more ``waybill serve`` flags (split on
    spaces), registered as ``name`` (by default one made from the flags); ``config``
    itself when there are no flags and no name."""
    if not flags and name is None:
        return config
    from waybill_configs import WAYBILL_CONFIGS

    name = name or f"{config}+" + re.sub(r"[^A-Za-z0-9.-]+", "_", flags.strip("- "))[:60]
    base = WAYBILL_CONFIGS[config]
    WAYBILL_CONFIGS[name] = {**base, "args": [*base["args"], *flags.split()]}
    return name


_POSTGRES: list[Any] = []  # the one cluster of this process, once started


def postgres_url() -> str:
    """A fresh database on this process's throwaway PostgreSQL cluster (tests/pgcluster.py:
    127.0.0.1, a free port, a temporary directory), started on first use, its processes on
    the load generator's core (like the OTLP sink: a database runs on other machines than
    the server), stopped at exit. fsync stays on: the log's own commits are asynchronous
    (server/storage/postgres.py), outcomes' and events' are not."""
    if not _POSTGRES:
        import atexit
        import sys

        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.pgcluster import Cluster, unavailable

        reason = unavailable()
        if reason is not None:
            raise RuntimeError(f"a configuration needs PostgreSQL: {reason}")
        cluster = Cluster({"fsync": "on", "full_page_writes": "on"})
        atexit.register(cluster.close)
        cluster.start()
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        for pid in descendants(postmaster):  # backends forked later inherit the mask
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, {int(CLIENT_CPU)})
        _POSTGRES.append(cluster)
    url: str = _POSTGRES[0].database()
    return url


def start_waybill(config: str, workdir: Path, src: Path = ROOT,
                  timeout: float = 90.0) -> tuple[Proc, int]:
    """Start one named configuration of `waybill serve`; ready when its port file appears.

    Runs the CLI module (``server.runtime.cli``, ``server.cli`` before server/ had rooms)
    from ``src`` (the work tree or a snapshot), so the snapshot's packages win over the
    editable install.
    """
    from waybill_configs import WAYBILL_CONFIGS

    spec = WAYBILL_CONFIGS[config]
    port_file = workdir / f"{config}.port"
    port_file.unlink(missing_ok=True)
    args = [a.replace("{workdir}", str(workdir)) for a in spec["args"]]
    if any("{postgres}" in a for a in args):  # a fresh database for each start
        url = postgres_url()
        args = [a.replace("{postgres}", url) for a in args]
    for stale in workdir.glob("waybill.db*"):  # each run starts with an empty log
        stale.unlink()
    cli = "server.runtime.cli" if (src / "server" / "runtime" / "cli.py").exists() else "server.cli"
    cmd = [VENV_PY, "-m", cli, "serve", "--host", HOST, "--port", "0",
           "--port-file", port_file, "--registry", src / "models", *args]
    # A snapshot's own stubs: protos/python, or clients/python in commits from before it.
    stubs = [str(src / "protos" / "python"), str(src / "clients" / "python")]
    env = {"PYTHONPATH": os.pathsep.join(stubs)} if src != ROOT else {}
    sink: Proc | None = None
    if spec.get("otlp"):
        sink, sink_port = start_otlp_sink(workdir)
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{HOST}:{sink_port}",
                   OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    proc = Proc(config, cmd, spec["cpus"], workdir / f"{config}.log", env=env, cwd=src,
                companion=sink).start()
    deadline = time.monotonic() + timeout
    try:
        while not port_file.exists():
            if not proc.alive():
                raise RuntimeError(f"{config} exited early:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{config} not ready in {timeout}s:\n{proc.tail()}")
            time.sleep(0.05)
        port = read_port_file(port_file)
    except BaseException:
        proc.stop()
        raise
    return proc, port


def start_otlp_sink(workdir: Path) -> tuple[Proc, int]:
    """bench/otlp_sink.py on the load generator's core; stopped with its server."""
    port_file = workdir / "otlp-sink.port"
    port_file.unlink(missing_ok=True)
    sink = Proc("otlp-sink", [VENV_PY, BENCH / "otlp_sink.py", "--port-file", port_file],
                CLIENT_CPU, workdir / "otlp-sink.log").start()
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        if not sink.alive() or time.monotonic() > deadline:
            sink.stop()
            raise RuntimeError(f"the OTLP sink did not start:\n{sink.tail()}")
        time.sleep(0.05)
    return sink, int(port_file.read_text())


def read_port_file(path: Path) -> int:
    """A bare port number, or JSON with a "port" key (the gRPC port)."""
    text = path.read_text().strip()
    return int(json.loads(text)["port"]) if text.startswith("{") else int(text)
