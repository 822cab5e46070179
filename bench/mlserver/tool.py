"""MLServer side of the benchmark; runs in bench/.venvs/mlserver (protobuf < 7).

    python tool.py payloads ROWS.json FEATURES.json SPEC.json    # pre-serialize requests
    python tool.py check PORT PAYLOAD_FILE [--wait S]            # one call, print predictions

Requests are V2 (KServe) ModelInferRequest for model "delivery_eta", encoded as a pandas
request (content_type "pd"): one input per model feature in CatBoost column order, strings
as BYTES (content_type "str"), numbers and booleans as FP64 (booleans 0/1, missing weight
NaN) - the only encoding that keeps the model's string categories (NumpyCodec decodes
BYTES as fixed-width bytes, and integer category codes would be unseen categories).
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path

import grpc
from mlserver import types
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter

MODEL = "delivery_eta"
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def columns(rows: list[dict], feats: list[dict]) -> list[tuple[str, str, list]]:
    cols = []
    for f in feats:
        name, kind = f["name"], f["type"]
        if kind == "categorical":
            cols.append((name, "BYTES", [str(r.get(name, "")).encode() for r in rows]))
        elif kind == "boolean":
            cols.append((name, "FP64", [1.0 if r.get(name) else 0.0 for r in rows]))
        else:
            cols.append((name, "FP64", [float(r[name]) if r.get(name) is not None else math.nan
                                        for r in rows]))
    return cols


def request_bytes(rows: list[dict], feats: list[dict]) -> bytes:
    """What PandasCodec.encode_request builds (it cannot encode pandas 3 string columns)."""
    inputs = [
        types.RequestInput(name=name, datatype=dtype, shape=[len(values), 1], data=values,
                           parameters=types.Parameters(content_type="str")
                           if dtype == "BYTES" else None)
        for name, dtype, values in columns(rows, feats)
    ]
    req = types.InferenceRequest(model_name=MODEL, inputs=inputs,
                                 parameters=types.Parameters(content_type="pd"))
    return ModelInferRequestConverter.from_types(req, model_name=MODEL).SerializeToString()


def write(path: Path, payloads: list[bytes]) -> None:
    with path.open("wb") as out:
        for p in payloads:
            out.write(struct.pack("<I", len(p)) + p)


def first_payload(path: Path) -> bytes:
    data = path.read_bytes()
    (size,) = struct.unpack_from("<I", data, 0)
    return data[4:4 + size]


def main(argv: list[str]) -> int:
    if argv[0] == "payloads":
        rows = json.loads(Path(argv[1]).read_text())
        feats = json.loads(Path(argv[2]).read_text())
        spec = json.loads(Path(argv[3]).read_text())  # {"out file": rows per request, ...}
        for out, size in spec.items():
            chunks = [rows[i:i + size] for i in range(0, len(rows) - size + 1, size)]
            write(Path(out), [request_bytes(c, feats) for c in chunks])
        return 0
    if argv[0] == "check":
        port, payload = int(argv[1]), first_payload(Path(argv[2]))
        wait = float(argv[4]) if len(argv) > 4 and argv[3] == "--wait" else 0.0
        deadline = time.monotonic() + wait
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(METHOD)
            while True:
                try:
                    raw = call(payload, timeout=5)
                    break
                except grpc.RpcError as err:
                    if time.monotonic() > deadline:
                        print(f"check failed: {err.code()} {err.details()}", file=sys.stderr)
                        return 1
                    time.sleep(0.25)
        resp = ModelInferResponseConverter.to_types(pb.ModelInferResponse.FromString(raw))
        out = resp.outputs[0]
        values = out.data.root if hasattr(out.data, "root") else out.data
        print(json.dumps({"shape": out.shape, "values": list(values)}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
