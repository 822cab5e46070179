"""What an attack run found, each on a real server: junk bytes, over-deep messages, callers
that leave, floods of streams, overload, and SIGTERM under load (issue 14)."""

from __future__ import annotations

import json
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ServerProcess

PREDICT = "/waybill.v1.PredictionService/Predict"
STREAM = "/waybill.v1.PredictionService/PredictStream"
LIST_EVENTS = "/waybill.v1.AdminService/ListEvents"


@pytest.fixture(scope="module")
def hardened(registry: Path, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("hardened")
    with ServerProcess(workdir, "--registry", str(registry), "--no-routing",
                       "--access-log", "all") as proc:
        yield proc


def rpc_count(server: ServerProcess, method: str, code: int) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "rpc_server_call_duration_seconds_count"
                    and labels.get("rpc_method") == method
                    and labels.get("rpc_grpc_status_code") == str(code)):
                return float(sample.value)
    return 0.0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested_struct_request(depth: int) -> bytes:
    """A PredictRequest whose one row holds a Struct nested ``depth`` deep, written by hand
    (the protobuf runtime refuses to build one that deep)."""
    value = b"\x11" + struct.pack("<d", 1.0)  # Value.number_value = 1.0
    for _ in range(depth):
        entry = _field(1, b"a") + _field(2, value)  # Struct.fields map entry {"a": value}
        value = _field(5, _field(1, entry))  # Value.struct_value = Struct{fields: [entry]}
    row = _field(1, _field(1, b"x") + _field(2, value))
    return _field(1, b"delivery_eta") + _field(2, row)


@pytest.mark.parametrize(("name", "payload"), [
    ("junk", b"\xde"),
    ("truncated", b"\x0a\x10delivery"),
    ("deep", nested_struct_request(120)),
])
def test_a_message_that_does_not_decode_is_invalid_argument(
        hardened: ServerProcess, name: str, payload: bytes) -> None:
    before = rpc_count(hardened, "Predict", grpc.StatusCode.INVALID_ARGUMENT.value[0])
    with grpc.insecure_channel(hardened.target) as channel:
        call = channel.unary_unary(PREDICT)
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    assert caught.value.details() == "malformed message: not a waybill.v1.PredictRequest"
    after = rpc_count(hardened, "Predict", grpc.StatusCode.INVALID_ARGUMENT.value[0])
    assert after == before + 1


def test_a_stream_message_that_does_not_decode_ends_the_stream_invalid_argument(
        hardened: ServerProcess) -> None:
    before = rpc_count(hardened, "PredictStream", grpc.StatusCode.INVALID_ARGUMENT.value[0])
    with grpc.insecure_channel(hardened.target) as channel:
        call = channel.stream_stream(STREAM)
        with pytest.raises(grpc.RpcError) as caught:
            list(call(iter([b"\xde"]), timeout=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "malformed message: not a waybill.v1.PredictStreamRequest"
    assert rpc_count(hardened, "PredictStream",
                     grpc.StatusCode.INVALID_ARGUMENT.value[0]) == before + 1


def test_the_admin_port_refuses_junk_the_same_way(hardened: ServerProcess) -> None:
    with (grpc.insecure_channel(hardened.admin_target) as channel,
          pytest.raises(grpc.RpcError) as caught):
        channel.unary_unary(LIST_EVENTS)(b"\xff\xff", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_flood_of_junk_writes_a_bounded_log(hardened: ServerProcess) -> None:
    log = hardened.log_path
    start = log.stat().st_size
    with grpc.insecure_channel(hardened.target) as channel:
        call = channel.unary_unary(PREDICT)
        for _ in range(300):
            with pytest.raises(grpc.RpcError):
                call(b"\xde", timeout=5)
        # Once the log has room again, the next junk line says how many were left out.
        deadline = time.monotonic() + 10
        while not any(entry.get("suppressed", 0) > 0 for entry in junk_lines(log, start)):
            assert time.monotonic() < deadline, "no line counts the junk left out"
            with pytest.raises(grpc.RpcError):
                call(b"\xde", timeout=5)
    lines = log.read_bytes()[start:].decode().splitlines()
    junk = junk_lines(log, start)
    assert 0 < len(junk) < 150, len(junk)
    assert len(junk) + sum(entry.get("suppressed", 0) for entry in junk) <= rpc_count(
        hardened, "Predict", grpc.StatusCode.INVALID_ARGUMENT.value[0])
    assert not any("Traceback" in line for line in lines)


def junk_lines(log: Path, start: int) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_bytes()[start:].decode().splitlines()
            if '"malformed message' in line]
