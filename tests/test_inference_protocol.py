"""The Open Inference Protocol (KServe V2) beside waybill.v1, on one real server.

tritonclient (in its own venv: tests/tritonclient_venv.py) calls it through
tests/tritonclient_script.py, and every answer must equal waybill.v1's Predict for the
same rows and version, number for number. The error cases call it in process with
Waybill's generated ``inference`` stubs.

The server serves the shipped models (models/delivery_eta 1.0.0 and 1.1.0) with a
routing file that splits unpinned traffic 50/50 (labels stable and canary), so a routing
key has something to stick to.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from inference import open_inference_grpc_pb2 as oip
from inference import open_inference_grpc_pb2_grpc as oip_grpc
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from models import datagen
from models.artifact import FeatureType, ModelKind, OutputSpec, Unit
from router.table import RouteReason
from server.serving.errors import BadRequest
from server.serving.predictor import PredictOutcome
from server.transport import inference_convert
from tests import tritonclient_venv
from tests.harness import ROOT, ServerProcess

MODEL = "delivery_eta"
MANIFEST = json.loads((ROOT / "models" / MODEL / "1.1.0" / "model.json").read_text())
FEATURES = [f["name"] for f in MANIFEST["features"]]
SCRIPT = ROOT / "tests" / "tritonclient_script.py"
ROUTING = """version = 1

[models.delivery_eta]
stable = "1.1.0"
routes = [
  { version = "1.1.0", weight = 50, label = "stable" },
  { version = "1.0.0", weight = 50, label = "canary" },
]
"""
# What the delivery models answer (a MultiQuantile regression counted from order_date).
OUTPUT_NAMES = ["prediction_id", "value", "transit_days", "lower", "upper", "delivery_date",
                "latest_delivery_date"]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def orders() -> list[dict[str, Any]]:
    """1,000 orders with every feature of 1.1.0; a missing weight_kg is left out."""
    frame = datagen.generate(1000, seed=23)
    out = []
    for record in frame[FEATURES].to_dict("records"):
        row: dict[str, Any] = {}
        for key, value in record.items():
            if isinstance(value, float) and math.isnan(value):
                continue
            row[key] = value.item() if hasattr(value, "item") else value
        out.append(row)
    assert any("weight_kg" not in row for row in out), "some orders miss weight_kg"
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("oip")
    routing = workdir / "routing.toml"
    routing.write_text(ROUTING)
    with ServerProcess(workdir, "--registry", str(ROOT / "models"), "--routing",
                       str(routing)) as proc:
        yield proc


@pytest.fixture(scope="module")
def v2(server: ServerProcess) -> oip_grpc.GRPCInferenceServiceStub:
    return oip_grpc.GRPCInferenceServiceStub(server.channel())


@pytest.fixture(scope="module")
def v1(server: ServerProcess) -> pb_grpc.PredictionServiceStub:
    return pb_grpc.PredictionServiceStub(server.channel())


@pytest.fixture(scope="module")
def triton_python() -> Path:
    return tritonclient_venv.ensure()


def run_in_triton_venv(python: Path, *args: str, timeout: float = 180) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of Waybill
    result = subprocess.run([str(python), *args], capture_output=True, text=True,
                            timeout=timeout, env=env, cwd=ROOT / "tests", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# ---------------------------------------------------------------------------- waybill.v1
def v1_columns(rows: Sequence[dict[str, Any]]) -> list[pb.Column]:
    """The rows as waybill.v1 columns; a value a row leaves out is listed as missing."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    out = []
    for name in names:
        values = [row.get(name) for row in rows]
        column = pb.Column(name=name, missing=[i for i, v in enumerate(values) if v is None])
        present = next(v for v in values if v is not None)
        if isinstance(present, bool):
            column.booleans.extend(bool(v) for v in values)
        elif isinstance(present, str):
            column.strings.extend(v or "" for v in values)
        else:
            column.numbers.extend(0.0 if v is None else float(v) for v in values)
        out.append(column)
    return out


def v1_predict(stub: pb_grpc.PredictionServiceStub, rows: Sequence[dict[str, Any]],
               version: str) -> dict[str, list[Any]]:
    answer = stub.Predict(pb.PredictRequest(model=MODEL, version=version,
                                            columns=v1_columns(rows)), timeout=30)
    assert answer.version == version
    c = answer.columns
    return {"prediction_id": list(c.prediction_id), "value": list(c.value),
            "transit_days": list(c.transit_days),
            "lower": list(c.lower), "upper": list(c.upper),
            "delivery_date": list(c.delivery_date),
            "latest_delivery_date": list(c.latest_delivery_date)}


def assert_same_as_v1(outputs: dict[str, list[Any]], expected: dict[str, list[Any]],
                      names: Sequence[str] = OUTPUT_NAMES) -> None:
    assert list(outputs) == list(names)
    for name in names:
        if name == "prediction_id":  # new ids each call: as many, and well formed
            ids = outputs[name]
            assert len(ids) == len(expected[name]) == len(set(ids))
            assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids[:3]
        else:
            assert outputs[name] == expected[name], name  # exactly, every number


# ---------------------------------------------------------------------------- tritonclient
@pytest.fixture(scope="module")
def triton(triton_python: Path, server: ServerProcess, orders: list[dict[str, Any]],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the tritonclient script against the server: every case's answer."""
    bad = [dict(row) for row in orders[:5]]
    bad[3]["distance_km"] = -5.0
    narrow = {"distance_km": "FP32", "weight_kg": "FP32", "hour": "INT32",
              "day_of_week": "INT32"}
    cases = [
        {"name": "one_raw", "rows": orders[:1], "version": "1.1.0"},
        {"name": "one_typed", "rows": orders[:1], "version": "1.1.0", "contents": "typed"},
        {"name": "many_raw", "rows": orders, "version": "1.0.0", "shape": "N1"},
        {"name": "many_typed", "rows": orders, "version": "1.1.0", "contents": "typed"},
        {"name": "label", "rows": orders[:3], "version": "canary"},
        {"name": "sticky_1", "rows": orders[:2], "routing_key": "customer-17"},
        {"name": "sticky_2", "rows": orders[:2], "routing_key": "customer-17",
         "contents": "typed"},
        {"name": "sticky_header", "rows": orders[:2],
         "headers": {"x-routing-key": "customer-17"}},
        {"name": "some_outputs", "rows": orders[:4], "version": "1.1.0",
         "outputs": ["transit_days", "delivery_date"]},
        {"name": "narrow_types", "rows": orders[:50], "version": "1.1.0",
         "datatypes": narrow},
        {"name": "bad_value", "rows": bad, "version": "1.1.0"},
        {"name": "bad_value_typed", "rows": bad, "version": "1.1.0", "contents": "typed"},
        {"name": "unknown_output", "rows": orders[:1], "outputs": ["eta"]},
        {"name": "unknown_version", "rows": orders[:1], "version": "9.9.9"},
    ]
    plan = tmp_path_factory.mktemp("triton") / "plan.json"
    plan.write_text(json.dumps({"target": server.target, "model": MODEL, "cases": cases}))
    return dict(json.loads(run_in_triton_venv(triton_python, str(SCRIPT), str(plan))))


def test_tritonclient_health_and_metadata(triton: dict[str, Any]) -> None:
    assert triton["live"] is True
    assert triton["ready"] is True
    assert triton["model_ready"] is True
    assert triton["unknown_model_ready"] is False
    assert triton["server"]["name"] == "waybill"
    assert triton["server"]["version"]
    metadata = triton["metadata"]
    assert metadata["name"] == MODEL
    assert metadata["versions"] == ["1.0.0", "1.1.0"]
    assert metadata["platform"] == "catboost_cbm"
    types = {"date": "BYTES", "categorical": "BYTES", "numeric": "FP64", "integer": "INT64",
             "boolean": "BOOL"}
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        (f["name"], types[f["type"]], ["-1"]) for f in MANIFEST["features"]]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("prediction_id", "BYTES", ["-1"]), ("value", "FP64", ["-1"]),
        ("transit_days", "FP64", ["-1"]), ("lower", "FP64", ["-1"]), ("upper", "FP64", ["-1"]),
        ("delivery_date", "BYTES", ["-1"]), ("latest_delivery_date", "BYTES", ["-1"])]
    # Triton's calls beyond the protocol are not served.
    assert triton["model_config"] == "StatusCode.UNIMPLEMENTED"


@pytest.mark.parametrize(("case", "rows", "raw"), [
    ("one_raw", 1, True), ("one_typed", 1, False), ("many_raw", 1000, True),
    ("many_typed", 1000, False)])
def test_tritonclient_infer_equals_predict(triton: dict[str, Any], case: str, rows: int,
                                           raw: bool, orders: list[dict[str, Any]],
                                           v1: pb_grpc.PredictionServiceStub) -> None:
    answer = triton["cases"][case]
    assert "error" not in answer, answer
    assert answer["id"] == case
    assert answer["route_reason"] == "pinned"
    # The answer is raw exactly when the request was (tritonclient always sends raw).
    assert answer["raw_outputs"] == (len(OUTPUT_NAMES) if raw else 0)
    assert set(map(tuple, answer["shapes"].values())) == {(rows,)}
    assert_same_as_v1(answer["outputs"], v1_predict(v1, orders[:rows], answer["version"]))


def test_tritonclient_label_and_routing_key(triton: dict[str, Any]) -> None:
    cases = triton["cases"]
    assert (cases["label"]["version"], cases["label"]["route_reason"]) == ("1.0.0", "label")
    sticky = [cases[name] for name in ("sticky_1", "sticky_2", "sticky_header")]
    assert {(a["version"], a["route_reason"]) for a in sticky} == {
        (sticky[0]["version"], "sticky")}


def test_tritonclient_requested_outputs(triton: dict[str, Any], orders: list[dict[str, Any]],
                                        v1: pb_grpc.PredictionServiceStub) -> None:
    answer = triton["cases"]["some_outputs"]
    assert answer["raw_outputs"] == 2
    assert_same_as_v1(answer["outputs"], v1_predict(v1, orders[:4], "1.1.0"),
                      ["transit_days", "delivery_date"])


def test_tritonclient_fp32_and_int32_inputs(triton: dict[str, Any],
                                            orders: list[dict[str, Any]],
                                            v1: pb_grpc.PredictionServiceStub) -> None:
    """FP32 values are the float32 numbers: waybill.v1 gets the same ones."""
    rounded = [{k: float(np.float32(v)) if k in ("distance_km", "weight_kg") else v
                for k, v in row.items()} for row in orders[:50]]
    assert_same_as_v1(triton["cases"]["narrow_types"]["outputs"],
                      v1_predict(v1, rounded, "1.1.0"))


def test_tritonclient_errors(triton: dict[str, Any]) -> None:
    cases = triton["cases"]
    for name in ("bad_value", "bad_value_typed"):
        error = cases[name]["error"]
        assert error["status"] == "StatusCode.INVALID_ARGUMENT"
        assert error["message"].startswith("inputs.distance_km[3]: -5 is outside [0, 8000]")
    assert cases["unknown_output"]["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert cases["unknown_output"]["error"]["message"].startswith("outputs.eta: not an output")
    error = cases["unknown_version"]["error"]
    assert error["status"] == "StatusCode.NOT_FOUND"
    assert "9.9.9" in error["message"] and "1.1.0" in error["message"]


def test_the_readme_tritonclient_example_runs(triton_python: Path, server: ServerProcess,
                                              tmp_path: Path) -> None:
    """README's tritonclient block, as written, against this server (its other blocks run
    in tests/test_doc_commands.py, in Waybill's venv)."""
    blocks = re.findall(r"^```python\n(.*?)^```\n", (ROOT / "README.md").read_text(),
                        re.MULTILINE | re.DOTALL)
    examples = [block for block in blocks if "import tritonclient" in block]
    assert examples, "README shows calling Waybill with tritonclient"
    script = tmp_path / "example.py"
    script.write_text("\n".join(examples).replace("127.0.0.1:50051", server.target))
    out = run_in_triton_venv(triton_python, str(script))
    assert re.search(r"^1\.1\.0 pinned \[\d", out, re.MULTILINE), out


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("WAYBILL_TEST_MLSERVER"),
                    reason="opt-in (WAYBILL_TEST_MLSERVER=1): installs MLServer into "
                           "bench/.venvs/mlserver on first use, a minute or more")
def test_mlserver_answers_the_same_script_alike() -> None:
    """bench/oip_mlserver.py: the same model behind MLServer's V2 endpoint answers the
    same tritonclient script with the same numbers (its known differences aside)."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "oip_mlserver.py")],
                            capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


# ---------------------------------------------------------------------------- in process
DATATYPES = {"date": "BYTES", "categorical": "BYTES", "numeric": "FP64", "integer": "INT64",
             "boolean": "BOOL"}
TYPE_OF = {f["name"]: DATATYPES[f["type"]] for f in MANIFEST["features"]}
CONTENTS = {"BYTES": "bytes_contents", "FP64": "fp64_contents", "FP32": "fp32_contents",
            "INT64": "int64_contents", "INT32": "int_contents", "BOOL": "bool_contents"}
PACK = {"FP64": "<d", "FP32": "<f", "INT64": "<q", "INT32": "<i", "BOOL": "<?"}


def encode(datatype: str, values: Sequence[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values))
    return b"".join(struct.pack(PACK[datatype], v) for v in values)


def infer_request(rows: Sequence[dict[str, Any]], *, raw: bool = False, version: str = "1.1.0",
                  datatypes: dict[str, str] | None = None, shape: Sequence[int] | None = None,
                  ) -> oip.ModelInferRequest:
    """One tensor per feature the rows carry (a value a row leaves out is NaN), pinned to
    1.1.0 unless ``version`` says otherwise."""
    request = oip.ModelInferRequest(model_name=MODEL, model_version=version)
    types = {**TYPE_OF, **(datatypes or {})}
    for name in dict.fromkeys(name for row in rows for name in row):
        datatype = types.get(name, "FP64")
        values = [row.get(name, math.nan) for row in rows]
        if datatype.startswith("INT"):
            values = [int(v) for v in values]
        tensor = request.inputs.add(name=name, datatype=datatype,
                                    shape=list(shape or [len(rows)]))
        if raw:
            request.raw_input_contents.append(encode(datatype, values))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in values)
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(values)
    return request


def tensor(request: oip.ModelInferRequest, name: str) -> oip.ModelInferRequest.InferInputTensor:
    return next(t for t in request.inputs if t.name == name)


def outputs_of(answer: oip.ModelInferResponse) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for index, output in enumerate(answer.outputs):
        if answer.raw_output_contents:
            data = answer.raw_output_contents[index]
            if output.datatype == "FP64":  # flattened: rows x classes for probabilities
                out[output.name] = np.frombuffer(data, "<f8").tolist()
            else:
                items, at = [], 0
                while at < len(data):
                    (size,) = struct.unpack_from("<I", data, at)
                    items.append(data[at + 4:at + 4 + size].decode())
                    at += 4 + size
                out[output.name] = items
        elif output.datatype == "FP64":
            out[output.name] = list(output.contents.fp64_contents)
        else:
            out[output.name] = [b.decode() for b in output.contents.bytes_contents]
    return out


def refused(stub: oip_grpc.GRPCInferenceServiceStub, request: oip.ModelInferRequest,
            code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
            ) -> tuple[str, list[tuple[str, str]]]:
    """The status message and the field violations of a refused ModelInfer."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    err = caught.value
    assert err.code() == code, err.details()
    found: list[tuple[str, str]] = []
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        found.extend((v.field, v.description) for v in bad.field_violations)
    return err.details() or "", found


def test_typed_and_raw_answers_equal_predict(v2: oip_grpc.GRPCInferenceServiceStub,
                                             v1: pb_grpc.PredictionServiceStub,
                                             orders: list[dict[str, Any]]) -> None:
    expected = v1_predict(v1, orders[:64], "1.0.0")
    for raw in (False, True):
        answer, call = v2.ModelInfer.with_call(
            infer_request(orders[:64], raw=raw, version="1.0.0"), timeout=10)
        assert (answer.model_name, answer.model_version) == (MODEL, "1.0.0")
        assert answer.parameters["route_reason"].string_param == "pinned"
        assert dict(call.initial_metadata()) == {"x-model-version": "1.0.0",
                                                 "x-route-reason": "pinned"}
        assert bool(answer.raw_output_contents) is raw
        assert all(list(o.shape) == [64] for o in answer.outputs)
        assert_same_as_v1(outputs_of(answer), expected)


def test_missing_values_of_an_optional_feature(v2: oip_grpc.GRPCInferenceServiceStub,
                                               v1: pb_grpc.PredictionServiceStub,
                                               orders: list[dict[str, Any]]) -> None:
    """NaN, the "missing" parameter and a left-out tensor all mean what waybill.v1's
    missing values do."""
    rows = [dict(row) for row in orders[:6]]
    for row in rows[::2]:
        row.pop("weight_kg", None)
    expected = v1_predict(v1, rows, "1.1.0")
    for raw in (False, True):  # NaN (infer_request's placeholder for a left-out value)
        assert_same_as_v1(outputs_of(v2.ModelInfer(
            infer_request(rows, raw=raw, version="1.1.0"), timeout=10)), expected)
    # The "missing" parameter: placeholders (here 0.0) at the rows it lists.
    request = infer_request([{**r, "weight_kg": r.get("weight_kg", 0.0)} for r in rows],
                            version="1.1.0")
    tensor(request, "weight_kg").parameters["missing"].string_param = "0,2,4"
    assert_same_as_v1(outputs_of(v2.ModelInfer(request, timeout=10)), expected)
    # No weight_kg tensor: every row misses it.
    no_weight = [{k: v for k, v in row.items() if k != "weight_kg"} for row in rows]
    assert_same_as_v1(outputs_of(v2.ModelInfer(infer_request(no_weight, version="1.1.0"),
                                               timeout=10)),
                      v1_predict(v1, no_weight, "1.1.0"))


def test_required_features_refuse_every_missing_value(
        v2: oip_grpc.GRPCInferenceServiceStub, orders: list[dict[str, Any]]) -> None:
    rows = [dict(row) for row in orders[:3]]
    rows[1]["distance_km"] = math.nan
    for raw in (False, True):
        _, violations = refused(v2, infer_request(rows, raw=raw))
        assert violations == [("inputs.distance_km[1]", "is required")]
    rows[1]["distance_km"] = math.inf
    assert refused(v2, infer_request(rows))[1] == [("inputs.distance_km[1]",
                                                   "must be finite, got inf")]
    request = infer_request(orders[:3])
    tensor(request, "zip_code").parameters["missing"].string_param = "2"
    assert refused(v2, request)[1] == [("inputs.zip_code[2]", "is required")]
    request = infer_request([{k: v for k, v in r.items() if k != "zip_code"}
                             for r in orders[:3]])
    assert refused(v2, request)[1] == [("inputs.zip_code", "is required")]


def test_shapes(v2: oip_grpc.GRPCInferenceServiceStub, orders: list[dict[str, Any]]) -> None:
    v2.ModelInfer(infer_request(orders[:3], shape=[3, 1]), timeout=10)
    assert refused(v2, infer_request(orders[:4], shape=[2, 2]))[1] == [
        ("inputs.order_date.shape", "must be [N] or [N, 1], got [2, 2]")]
    request = infer_request(orders[:3])
    tensor(request, "hour").shape[0] = 2
    assert refused(v2, request)[1] == [("inputs.hour.shape",
                                        "has 2 rows; inputs.order_date has 3")]
    request = infer_request(orders[:3])
    tensor(request, "hour").contents.int64_contents.append(4)
    assert refused(v2, request)[1] == [("inputs.hour.contents",
                                        "int64_contents has 4 values; the shape says 3")]


def test_datatypes(v2: oip_grpc.GRPCInferenceServiceStub, orders: list[dict[str, Any]]) -> None:
    request = infer_request([{k: v for k, v in r.items() if k != "zip_code"}
                             for r in orders[:2]])
    request.inputs.add(name="zip_code", datatype="FP64", shape=[2],
                       contents=oip.InferTensorContents(fp64_contents=[30301.0, 98101.0]))
    assert refused(v2, request)[1] == [("inputs.zip_code.datatype",
                                        "FP64 does not fit a categorical feature: send BYTES")]
    assert refused(v2, infer_request(orders[:2], datatypes={"after_cutoff": "INT64"}))[1] == [
        ("inputs.after_cutoff.datatype", "INT64 does not fit a boolean feature: send BOOL")]
    request = infer_request(orders[:2])
    tensor(request, "hour").datatype = "UINT8"
    message, _ = refused(v2, request)
    assert message.startswith("inputs.hour.datatype: 'UINT8' is not one of BOOL, INT32")
    request = infer_request(orders[:2])
    hour = tensor(request, "hour")
    hour.contents.int_contents.extend(hour.contents.int64_contents)
    del hour.contents.int64_contents[:]
    assert refused(v2, request)[1] == [(
        "inputs.hour.contents", "INT64 values go in int64_contents, not int_contents")]
    request = infer_request(orders[:2], raw=True)
    index = [t.name for t in request.inputs].index("after_cutoff")
    request.raw_input_contents[index] = bytes([1, 2])
    assert refused(v2, request)[1] == [("inputs.after_cutoff[1]",
                                        "a BOOL element is one byte, 0 or 1; got 2")]
    request = infer_request(orders[:2])
    tensor(request, "carrier").contents.bytes_contents[1] = b"\xff\xfe"
    assert refused(v2, request)[1] == [("inputs.carrier[1]",
                                        "BYTES elements of categories and dates must be UTF-8")]


def test_raw_contents(v2: oip_grpc.GRPCInferenceServiceStub,
                      orders: list[dict[str, Any]]) -> None:
    request = infer_request(orders[:3], raw=True)
    index = [t.name for t in request.inputs].index("distance_km")
    request.raw_input_contents[index] = request.raw_input_contents[index][:-8]
    assert refused(v2, request)[1] == [("inputs.distance_km",
                                        f"raw_input_contents[{index}] holds 16 bytes; "
                                        "3 FP64 elements take 24")]
    request = infer_request(orders[:3], raw=True)
    request.raw_input_contents[0] = request.raw_input_contents[0][:-1]  # order_date, BYTES
    assert refused(v2, request)[1][0][0] == "inputs.order_date"
    request = infer_request(orders[:3], raw=True)
    request.raw_input_contents[0] += b"\x00"
    assert refused(v2, request)[1] == [("inputs.order_date",
                                        "raw contents hold 1 bytes past their 3 elements")]
    request = infer_request(orders[:3], raw=True)
    del request.raw_input_contents[-1]
    assert refused(v2, request)[1][0][0] == "raw_input_contents"
    request = infer_request(orders[:3], raw=True)
    tensor(request, "hour").contents.int64_contents.extend([1, 2, 3])
    assert refused(v2, request)[1] == [("inputs.hour.contents",
                                        "the request has raw_input_contents: no input may "
                                        "have contents too")]


def test_names(v2: oip_grpc.GRPCInferenceServiceStub, orders: list[dict[str, Any]]) -> None:
    """An unknown input is refused as waybill.v1 refuses an unknown column."""
    rows = [{**row, "colour": 3.0} for row in orders[:2]]
    assert refused(v2, infer_request(rows))[1] == [
        ("inputs.colour", "not a feature of any served version of this model (see GetModel)")]
    request = infer_request(orders[:2])
    request.inputs.append(request.inputs[0])
    assert refused(v2, request)[1] == [("inputs.order_date", "sent twice")]
    request = infer_request(orders[:2])
    request.inputs[0].name = ""
    assert refused(v2, request)[1] == [("inputs[0].name", "every input needs its feature name")]
    request = infer_request(orders[:2])
    request.outputs.add(name="transit_days")
    request.outputs.add(name="eta")
    assert refused(v2, request)[1][0][0] == "outputs.eta"


def test_parameters_pins_and_limits(v2: oip_grpc.GRPCInferenceServiceStub,
                                    orders: list[dict[str, Any]]) -> None:
    request = infer_request(orders[:1])
    request.parameters["routing_key"].int64_param = 17
    assert refused(v2, request)[1][0][0] == "parameters.routing_key"
    request = infer_request(orders[:1])
    tensor(request, "weight_kg").parameters["missing"].string_param = "0,x"
    assert refused(v2, request)[1][0][0] == "inputs.weight_kg.parameters.missing"
    tensor(request, "weight_kg").parameters["missing"].string_param = "1"
    assert refused(v2, request)[1] == [("inputs.weight_kg.parameters.missing",
                                        "row 1 is not a row of this request (0 to 0)")]
    # model_version and x-model-version must agree, as version and its header do.
    with pytest.raises(grpc.RpcError) as caught:
        v2.ModelInfer(infer_request(orders[:1], version="1.0.0"),
                      metadata=(("x-model-version", "1.1.0"),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    answer = v2.ModelInfer(infer_request(orders[:1], version=""),
                           metadata=(("x-model-version", "canary"),), timeout=10)
    assert (answer.model_version, answer.parameters["route_reason"].string_param) == (
        "1.0.0", "label")
    assert refused(v2, oip.ModelInferRequest(model_name=MODEL))[1] == [
        ("inputs", "at least one row is required")]
    message, _ = refused(v2, infer_request(orders + orders[:1]))
    assert message == "inputs: 1001 rows exceed the limit of 1000 per request"
    request = infer_request(orders[:1])
    request.model_name = "nope"
    message, _ = refused(v2, request, grpc.StatusCode.NOT_FOUND)
    assert MODEL in message


def test_health_metadata_reflection_and_unimplemented(server: ServerProcess,
                                                      v2: oip_grpc.GRPCInferenceServiceStub,
                                                      ) -> None:
    assert v2.ServerLive(oip.ServerLiveRequest(), timeout=5).live
    assert v2.ServerReady(oip.ServerReadyRequest(), timeout=5).ready
    assert v2.ModelReady(oip.ModelReadyRequest(name=MODEL, version="canary"), timeout=5).ready
    assert not v2.ModelReady(oip.ModelReadyRequest(name=MODEL, version="7.0.0"),
                             timeout=5).ready
    metadata = v2.ModelMetadata(oip.ModelMetadataRequest(name=MODEL, version="1.0.0"),
                                timeout=5)
    old = json.loads((ROOT / "models" / MODEL / "1.0.0" / "model.json").read_text())
    assert [t.name for t in metadata.inputs] == [f["name"] for f in old["features"]]
    with pytest.raises(grpc.RpcError) as caught:
        v2.ModelMetadata(oip.ModelMetadataRequest(name="nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    health = health_pb2_grpc.HealthStub(server.channel())
    assert health.Check(health_pb2.HealthCheckRequest(
        service="inference.GRPCInferenceService"), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if Path(grpcurl).exists():  # reflection lists the service
        listed = subprocess.run([grpcurl, "-plaintext", server.target, "list"],
                                capture_output=True, text=True, timeout=30, check=True)
        assert "inference.GRPCInferenceService" in listed.stdout.split()
    # A Triton call the protocol does not define.
    config = server.channel().unary_unary("/inference.GRPCInferenceService/ModelConfig")
    with pytest.raises(grpc.RpcError) as caught:
        config(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_same_path_as_predict(server: ServerProcess, v2: oip_grpc.GRPCInferenceServiceStub,
                                  orders: list[dict[str, Any]]) -> None:
    """Logged (an outcome joins a ModelInfer's prediction id) and measured like Predict."""
    answer = v2.ModelInfer(infer_request(orders[:2], version="1.1.0"), timeout=10)
    prediction_id = outputs_of(answer)["prediction_id"][0]
    stub = pb_grpc.PredictionServiceStub(server.channel())
    request = pb.ReportOutcomeRequest(outcomes=[pb.Outcome(prediction_id=prediction_id,
                                                           transit_days=3.0)])
    for _ in range(40):  # the log's writer flushes every 0.2 s
        try:
            assert stub.ReportOutcome(request, timeout=5).recorded == 1
            break
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
            time.sleep(0.1)
    else:
        pytest.fail(f"prediction {prediction_id} never reached the prediction log")
    metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert re.search(r'rpc_server_call_duration_seconds_count\{[^}]*'
                     r'rpc_method="ModelInfer"[^}]*rpc_service="inference.GRPCInferenceService"',
                     metrics), "ModelInfer calls are measured"
    assert re.search(r'waybill_requests_total\{[^}]*model="delivery_eta"', metrics)


# ---------------------------------------------------------------------------- pure
def test_conversion_reads_values_lazily_and_as_the_validator_expects() -> None:
    request = oip.ModelInferRequest(model_name=MODEL)
    weight = request.inputs.add(name="weight_kg", datatype="FP32", shape=[3])
    weight.contents.fp32_contents.extend([1.5, math.nan, 2.0])
    zips = request.inputs.add(name="zip_code", datatype="BYTES", shape=[3, 1])
    zips.contents.bytes_contents.extend([b"30301", b"\xff", b"98101"])
    zips.parameters["missing"].string_param = "1"
    facts = inference_convert.ModelFacts(
        {"weight_kg": frozenset({FeatureType.NUMERIC}),
         "zip_code": frozenset({FeatureType.CATEGORICAL})}, ("prediction_id", "value"),
        {"weight_kg": frozenset({"FP64", "FP32"}), "zip_code": frozenset({"BYTES"})})
    query, plan = inference_convert.infer_query(request, (("x-routing-key", "k"),), facts)
    assert (query.n_rows, query.columnar, query.rows_field, plan.raw) == (3, True, "inputs",
                                                                         False)
    assert query.headers == {"x-routing-key": "k"}
    columns = query.read()
    assert columns.values["weight_kg"] == [1.5, None, 2.0]
    assert columns.values["zip_code"] == ["30301", None, "98101"]
    assert columns.field("zip_code", 1) == "inputs.zip_code[1]"


@pytest.mark.parametrize("raw", [False, True])
def test_a_classifier_answers_labels_and_probabilities(raw: bool) -> None:
    """Each kind answers its own outputs (models/kinds.py): a classifier's label and
    probabilities, rows x classes, the class names as the tensor's parameter."""
    spec = OutputSpec(kind=ModelKind.CLASSIFICATION, classes=("late", "on_time"),
                      unit=Unit.NONE, target="on_time")
    outcome = PredictOutcome(MODEL, "2.0.0", RouteReason.PINNED, spec, True, ["a", "b"],
                             labels=["on_time", "late"],
                             probabilities=np.array([[0.25, 0.75], [0.5, 0.5]]))
    answer = inference_convert.infer_response(
        outcome, inference_convert.InferPlan("r", None, raw=raw))
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
        ("prediction_id", "BYTES", [2]), ("label", "BYTES", [2]),
        ("probabilities", "FP64", [2, 2])]
    probabilities = answer.outputs[2]
    assert json.loads(probabilities.parameters["classes"].string_param) == ["late", "on_time"]
    assert outputs_of(answer)["probabilities"] == [0.25, 0.75, 0.5, 0.5]
    assert outputs_of(answer)["label"] == ["on_time", "late"]
    with pytest.raises(BadRequest, match=r"outputs\.value: version 2\.0\.0 does not answer it"):
        inference_convert.infer_response(
            outcome, inference_convert.InferPlan("r", ("label", "value"), raw=raw))
