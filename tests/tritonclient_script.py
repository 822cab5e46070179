"""Call an Open Inference Protocol (KServe V2) gRPC server with tritonclient, as a Triton
or KServe client would. Runs in tritonclient's own venv (tests/tritonclient_venv.py),
never in Waybill's: it imports nothing of Waybill.

    python tests/tritonclient_script.py PLAN.json     # prints the answers as JSON

PLAN is {"target": "HOST:PORT", "model": NAME, "cases": [CASE, ...]}; a CASE is
{"name": ..., "rows": [{feature: value or null, ...}, ...]} and optionally "version",
"routing_key" (a request parameter), "headers", "outputs" (names to request),
"contents" ("raw": tritonclient's InferInput, the default; "typed": a ModelInferRequest
with InferTensorContents, sent through tritonclient's generated stub), "shape" ("N" or
"N1": [N] or [N, 1]) and "datatypes" ({feature: datatype} over the model's metadata).

Each input's datatype comes from ModelMetadata, as a client discovers it. A null value is
NaN in a floating-point input (the server's convention for a missing value). The answer
holds the health and metadata calls and, per case, the served version, the route reason,
the request id and every output as a list, or the error's status and message.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

NUMPY = {"BYTES": np.object_, "FP64": np.float64, "FP32": np.float32, "INT64": np.int64,
         "INT32": np.int32, "BOOL": np.bool_}
TYPED = {"BYTES": "bytes_contents", "FP64": "fp64_contents", "FP32": "fp32_contents",
         "INT64": "int64_contents", "INT32": "int_contents", "BOOL": "bool_contents"}


def column(rows: list[dict[str, Any]], name: str, datatype: str) -> np.ndarray:
    values = [row.get(name) for row in rows]
    if datatype == "BYTES":
        return np.array([str(v).encode() for v in values], dtype=np.object_)
    if datatype in ("FP64", "FP32"):
        return np.array([math.nan if v is None else v for v in values], dtype=NUMPY[datatype])
    return np.array(values, dtype=NUMPY[datatype])


def inputs_of(case: dict[str, Any], datatypes: dict[str, str]) -> list[tuple[str, str, Any]]:
    rows = case["rows"]
    names = list(dict.fromkeys(name for row in rows for name in row))
    chosen = {**datatypes, **case.get("datatypes", {})}
    out = []
    for name in names:
        datatype = chosen.get(name, "FP64")
        array = column(rows, name, datatype)
        if case.get("shape") == "N1":
            array = array.reshape(len(rows), 1)
        out.append((name, datatype, array))
    return out


def decoded(values: Any) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(values).ravel().tolist()]


def raw_case(client: triton.InferenceServerClient, model: str, case: dict[str, Any],
             datatypes: dict[str, str]) -> dict[str, Any]:
    inputs = []
    for name, datatype, array in inputs_of(case, datatypes):
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = ([triton.InferRequestedOutput(n) for n in case["outputs"]]
               if case.get("outputs") else None)
    key = case.get("routing_key")
    try:
        result = client.infer(model, inputs, model_version=case.get("version", ""),
                              request_id=case["name"], outputs=outputs,
                              parameters={"routing_key": key} if key else None,
                              headers=case.get("headers"))
    except InferenceServerException as err:
        return {"error": {"status": err.status(), "message": err.message()}}
    response = result.get_response()
    return {
        "version": response.model_version,
        "route_reason": response.parameters["route_reason"].string_param,
        "id": response.id,
        "raw_outputs": len(response.raw_output_contents),
        "outputs": {o.name: decoded(result.as_numpy(o.name)) for o in response.outputs},
        "shapes": {o.name: list(o.shape) for o in response.outputs},
    }


def typed_case(stub: service_pb2_grpc.GRPCInferenceServiceStub, model: str,
               case: dict[str, Any], datatypes: dict[str, str]) -> dict[str, Any]:
    request = service_pb2.ModelInferRequest(model_name=model, id=case["name"],
                                            model_version=case.get("version", ""))
    if case.get("routing_key"):
        request.parameters["routing_key"].string_param = case["routing_key"]
    for name, datatype, array in inputs_of(case, datatypes):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        getattr(tensor.contents, TYPED[datatype]).extend(array.ravel().tolist())
    for name in case.get("outputs") or ():
        request.outputs.add(name=name)
    try:
        response = stub.ModelInfer(request, metadata=tuple((case.get("headers") or {}).items()),
                                   timeout=30)
    except grpc.RpcError as err:
        return {"error": {"status": str(err.code()), "message": err.details()}}
    return {
        "version": response.model_version,
        "route_reason": response.parameters["route_reason"].string_param,
        "id": response.id,
        "raw_outputs": len(response.raw_output_contents),
        "outputs": {o.name: decoded(getattr(o.contents, TYPED[o.datatype]))
                    for o in response.outputs},
        "shapes": {o.name: list(o.shape) for o in response.outputs},
    }


def status_of(call: Any) -> str:
    try:
        call()
    except InferenceServerException as err:
        return str(err.status())
    return "OK"


def answer_or_status(call: Any) -> Any:
    """The call's answer, or its error's status (servers differ on what is an error)."""
    try:
        return call()
    except InferenceServerException as err:
        return str(err.status())


def main(plan_path: str) -> None:
    with open(plan_path) as handle:
        plan = json.load(handle)
    target, model = plan["target"], plan["model"]
    client = triton.InferenceServerClient(target)
    metadata = client.get_model_metadata(model, as_json=True)
    datatypes = {t["name"]: t["datatype"] for t in metadata["inputs"]}
    answer: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "unknown_model_ready": answer_or_status(lambda: client.is_model_ready("no_such_model")),
        "server": client.get_server_metadata(as_json=True),
        "metadata": metadata,
        # Triton's own calls beyond the protocol: not served.
        "model_config": status_of(lambda: client.get_model_config(model)),
        "cases": {},
    }
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for case in plan["cases"]:
            answer["cases"][case["name"]] = (
                typed_case(stub, model, case, datatypes) if case.get("contents") == "typed"
                else raw_case(client, model, case, datatypes))
    client.close()
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
