"""Routing files and a small concurrent gRPC load loop for the routing tests."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from waybill.v1 import admin_pb2, admin_pb2_grpc
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.test_server_predict import struct_rows

Route = tuple[str, int, str | None]


def routing_text(routes: Sequence[Route], stable: str = "1.0.0",
                 shadow: tuple[str, float] | None = None, comment: str = "") -> str:
    lines = [f"# {comment}", "version = 1", "", "[models.delivery_eta]",
             f'stable = "{stable}"', "routes = ["]
    for version, weight, label in routes:
        label_part = f', label = "{label}"' if label else ""
        lines.append(f'  {{ version = "{version}", weight = {weight}{label_part} }},')
    lines.append("]")
    if shadow is not None:
        lines.append(f'shadow = {{ version = "{shadow[0]}", fraction = {shadow[1]} }}')
    return "\n".join(lines) + "\n"


def split(canary: int) -> list[Route]:
    return [("1.0.0", 100 - canary, "stable"), ("1.1.0", canary, "canary")]


def admin(target: str, token: str | None = None) -> admin_pb2_grpc.AdminServiceStub:
    channel = grpc.insecure_channel(target)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    if token is None:
        return stub

    class WithToken:
        def __getattr__(self, name: str) -> Callable[..., object]:
            method = getattr(stub, name)
            return lambda request, **kw: method(
                request, metadata=(("authorization", f"Bearer {token}"),), **kw)

    return WithToken()  # type: ignore[return-value]


def reload(target: str) -> admin_pb2.ReloadConfigResponse:
    return admin(target).ReloadConfig(admin_pb2.ReloadConfigRequest(), timeout=30)


def routing(target: str) -> admin_pb2.GetRoutingResponse:
    return admin(target).GetRouting(admin_pb2.GetRoutingRequest(), timeout=5)


def run_calls(target: str, row: dict[str, object], keys: Sequence[str | None],
              concurrency: int = 32) -> list[str]:
    request = pb.PredictRequest(model="delivery_eta", rows=struct_rows([row]))

    async def go() -> list[str]:
        out: list[str] = [""] * len(keys)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            next_index = iter(range(len(keys)))

            async def worker() -> None:
                for i in next_index:
                    key = keys[i]
                    metadata = (("x-routing-key", key),) if key is not None else ()
                    try:
                        reply = await stub.Predict(request, metadata=metadata, timeout=10)
                        out[i] = reply.version
                    except grpc.aio.AioRpcError as err:
                        out[i] = f"error:{err.code().name}"

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return out

    return asyncio.run(go())


def count(versions: Sequence[str]) -> Counter[str]:
    return Counter(versions)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
