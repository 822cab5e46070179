"""The same tritonclient script against Waybill's Open Inference Protocol service and against
MLServer's, serving the same model: do they answer the same?

    .venv/bin/python bench/oip_mlserver.py

MLServer 1.7.1 (bench/.venvs/mlserver, installed on first use as bench/run.py does) serves
delivery_eta 1.0.0 and 1.1.0 with bench/mlserver/waybill_v2_runtime.py: Waybill's own model
code (validation, CatBoost, the delivery-date rule) behind MLServer's V2 gRPC endpoint, with
the model's inputs and outputs declared in its model settings. `waybill serve` (no routing
file: every version, 1.1.0 the default) serves the same registry. tests/tritonclient_script.py,
unchanged, runs the same plan against each from tritonclient's own venv (the tests'
tests/.venvs/tritonclient): health, metadata, typed and raw ModelInfer with 1 and 1,000 rows,
pinned versions, FP32/INT32 inputs, requested outputs, a bad value, an unknown output and an
unknown version. Then every answer is compared, number for number (prediction ids aside:
each server makes its own), and the run fails (exit 1) on a difference that KNOWN does not
list. Waybill's routing (labels, routing keys, route reasons) has no MLServer counterpart
and is left out of the plan. Nothing is timed; about 10 s once both venvs exist (MLServer's
takes a few minutes to install, tritonclient's about 15 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

SCRIPT = bl.ROOT / "tests" / "tritonclient_script.py"
MLSERVER_RUNTIME = "waybill_v2_runtime.WaybillV2Runtime"
VERSIONS = ("1.0.0", "1.1.0")
# Where the two servers are known to differ, and why; any other difference fails the run.
KNOWN = {
    "unknown_model_ready": "for a model it does not have, MLServer 1.7.1 answers ModelReady "
                           "with an error (UNKNOWN, 'Unexpected ModelNotFound'), Waybill with "
                           "ready = false",
}


def plan(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bad = [dict(row) for row in rows[:5]]
    bad[3]["distance_km"] = -5.0
    narrow = {"distance_km": "FP32", "weight_kg": "FP32", "hour": "INT32",
              "day_of_week": "INT32"}
    return [
        {"name": "one_raw", "rows": rows[:1], "version": "1.1.0"},
        {"name": "one_typed", "rows": rows[:1], "version": "1.1.0", "contents": "typed"},
        {"name": "many_raw", "rows": rows[:1000], "version": "1.1.0", "shape": "N1"},
        {"name": "many_typed", "rows": rows[:1000], "version": "1.1.0", "contents": "typed"},
        {"name": "older_version", "rows": rows[:64], "version": "1.0.0"},
        {"name": "some_outputs", "rows": rows[:4], "version": "1.1.0",
         "outputs": ["transit_days", "delivery_date"]},
        {"name": "narrow_types", "rows": rows[:50], "version": "1.1.0", "datatypes": narrow},
        {"name": "bad_value", "rows": bad, "version": "1.1.0"},
        {"name": "unknown_output", "rows": rows[:1], "version": "1.1.0", "outputs": ["eta"]},
        {"name": "unknown_version", "rows": rows[:1], "version": "9.9.9"},
    ]


def mlserver_repo(workdir: Path, grpc_port: int) -> Path:
    repo = workdir / "mlserver"
    ports = {"http_port": bl.free_port(), "grpc_port": grpc_port,
             "metrics_port": bl.free_port()}
    repo.mkdir()
    (repo / "settings.json").write_text(json.dumps({"debug": False, "host": bl.HOST, **ports}))
    for version in VERSIONS:
        directory = bl.ROOT / "models" / bl.MODEL_NAME / version
        manifest = json.loads((directory / "model.json").read_text())
        inputs = [{"name": f["name"], "datatype": bl.V2_DATATYPES[f["type"]], "shape": [-1]}
                  for f in manifest["features"]]
        outputs = [{"name": name, "datatype": "FP64" if name in ("value", "transit_days",
                                                                 "lower", "upper") else "BYTES",
                    "shape": [-1]}
                   for name in ("prediction_id", "value", "transit_days", "lower", "upper",
                                "delivery_date", "latest_delivery_date")]
        settings = {"name": bl.MODEL_NAME, "implementation": MLSERVER_RUNTIME,
                    "parameters": {"uri": str(directory), "version": version},
                    "inputs": inputs, "outputs": outputs}
        (repo / version).mkdir()
        (repo / version / "model-settings.json").write_text(json.dumps(settings, indent=1))
    return repo


def wait_ready(port: int, timeout: float) -> None:
    """Both versions ready, asked through the protocol itself."""
    import grpc
    from inference import open_inference_grpc_pb2 as oip
    from inference import open_inference_grpc_pb2_grpc as oip_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"{bl.HOST}:{port}") as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                if all(stub.ModelReady(oip.ModelReadyRequest(name=bl.MODEL_NAME, version=v),
                                       timeout=2).ready for v in VERSIONS):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"MLServer not ready in {timeout}s")


def run_script(python: Path, target: str, cases: list[dict[str, Any]], workdir: Path,
               name: str) -> dict[str, Any]:
    path = workdir / f"{name}.plan.json"
    path.write_text(json.dumps({"target": target, "model": bl.MODEL_NAME, "cases": cases}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), str(SCRIPT), str(path)], capture_output=True,
                            text=True, timeout=300, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the tritonclient script failed against {name}:\n"
                           f"{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout))


def compare(waybill: dict[str, Any], mlserver: dict[str, Any]) -> list[tuple[str, str, str,
                                                                             bool]]:
    """(what, Waybill's answer, MLServer's, the same?) per check."""
    rows = []
    for key in ("live", "ready", "model_ready", "unknown_model_ready", "model_config"):
        rows.append((key, str(waybill[key]), str(mlserver[key]), waybill[key] == mlserver[key]))
    for part in ("inputs", "outputs"):
        ours = [(t["name"], t["datatype"]) for t in waybill["metadata"][part]]
        theirs = [(t["name"], t["datatype"]) for t in mlserver["metadata"].get(part, [])]
        rows.append((f"metadata {part}", f"{len(ours)} tensors", f"{len(theirs)} tensors",
                     ours == theirs))
    for case, ours in waybill["cases"].items():
        theirs = mlserver["cases"][case]
        if "error" in ours or "error" in theirs:
            a = ours.get("error", {}).get("status", "answered")
            b = theirs.get("error", {}).get("status", "answered")
            rows.append((case, a, b, a == b))
            continue
        same = list(ours["outputs"]) == list(theirs["outputs"]) and all(
            ours["outputs"][n] == theirs["outputs"][n] for n in ours["outputs"]
            if n != "prediction_id") and len(ours["outputs"].get("prediction_id", [])) == len(
            theirs["outputs"].get("prediction_id", []))
        rows.append((case, _described(ours), _described(theirs), same))
    return rows


def _described(answer: dict[str, Any]) -> str:
    n_rows = len(next(iter(answer["outputs"].values())))
    return (f"{answer['version']}, {n_rows} rows, {len(answer['outputs'])} outputs"
            f"{', raw' if answer['raw_outputs'] else ''}")


def main() -> int:
    import run  # bench/run.py: MLServer's venv

    sys.path.insert(0, str(bl.ROOT))
    from tests import tritonclient_venv

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the servers
    run.ensure_mlserver()
    python = tritonclient_venv.ensure()
    cases = plan(bl.load_rows())
    with tempfile.TemporaryDirectory(prefix="waybill-oip-mlserver-") as tmp:
        workdir = Path(tmp)
        grpc_port = bl.free_port()
        repo = mlserver_repo(workdir, grpc_port)
        path = os.pathsep.join([str(bl.BENCH / "mlserver"), str(bl.ROOT)])
        mlserver = bl.Proc("mlserver", [run.MLSERVER_VENV / "bin" / "mlserver", "start", repo],
                           None, workdir / "mlserver.log", cwd=repo,
                           env={"PYTHONPATH": path}).start()
        waybill: bl.Proc | None = None
        try:
            waybill, port = bl.start_waybill("waybill-off", workdir)
            wait_ready(grpc_port, 180)
            ours = run_script(python, f"{bl.HOST}:{port}", cases, workdir, "waybill")
            theirs = run_script(python, f"{bl.HOST}:{grpc_port}", cases, workdir, "mlserver")
        except BaseException:
            print(mlserver.tail(40), file=sys.stderr)
            raise
        finally:
            mlserver.stop()
            if waybill is not None:
                waybill.stop()
    versions = run.mlserver_versions()
    print(f"tests/tritonclient_script.py against Waybill (waybill-off) and MLServer "
          f"{versions.get('mlserver')} (catboost {versions.get('catboost')}, "
          f"bench/mlserver/waybill_v2_runtime.py), the same plan:")
    checks = compare(ours, theirs)
    table = [("check", "Waybill", "MLServer", "same")] + [
        (what, a, b, "yes" if same else ("no (known)" if what in KNOWN else "NO"))
        for what, a, b, same in checks]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for n, r in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for case in ("bad_value", "unknown_output", "unknown_version"):
        print(f"{case}: Waybill {ours['cases'][case].get('error', {}).get('message', '')!r}; "
              f"MLServer {theirs['cases'][case].get('error', {}).get('message', '')!r}")
    for what, why in KNOWN.items():
        print(f"known difference, {what}: {why}")
    unexpected = [what for what, _, _, same in checks if not same and what not in KNOWN]
    if unexpected:
        print(f"DIFFERENT: {', '.join(unexpected)}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
