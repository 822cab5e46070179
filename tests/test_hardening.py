"""What an attack run found, each on a real server: junk bytes, over-deep messages, callers
that leave, floods of streams, overload, and SIGTERM under load (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from server.serving.admission import SAMPLE, Admission
from server.serving.errors import Overloaded
from server.transport.streams import StreamBudget
from tests.harness import ServerProcess
from tests.test_server_predict import struct_rows

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


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def nested_struct_request(depth: int) -> bytes:
    """A PredictRequest whose one row holds a Struct nested ``depth`` deep, written by hand
    (the protobuf runtime refuses to build one that deep)."""
    value = b"\x11" + struct.pack("<d", 1.0)  # Value.number_value = 1.0
    for _ in range(depth):
        entry = field(1, b"a") + field(2, value)  # Struct.fields map entry {"a": value}
        value = field(5, field(1, entry))  # Value.struct_value = Struct{fields: [entry]}
    row = field(1, field(1, b"x") + field(2, value))
    return field(1, b"delivery_eta") + field(2, row)


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


# ------------------------------------------------------------------------- overload, memory

def predict_request(rows: list[dict[str, object]], model: str = "delivery_eta",
                    ) -> pb.PredictRequest:
    return pb.PredictRequest(model=model, rows=struct_rows(rows))


def test_admission_refuses_what_cannot_finish_before_its_deadline() -> None:
    clock = [0.0]
    admission = Admission(max_inflight=100, clock=lambda: clock[0])

    def busy(concurrent: int, every_s: float) -> None:
        """SAMPLE predictions finishing one every ``every_s`` with ``concurrent`` in flight."""
        for _ in range(concurrent):
            admission.admit(None)
        for _ in range(SAMPLE):
            clock[0] += every_s
            admission.done()
            admission.admit(None)
        for _ in range(concurrent):
            admission.done()

    busy(1, 0.5)  # one at a time: each one's latency, not the server's throughput
    assert admission.per_prediction_s is None
    busy(8, 0.004)  # eight at a time, one done every 4 ms
    assert admission.per_prediction_s == pytest.approx(0.004, rel=0.3)
    admission.admit(0.001)  # nothing in flight: admitted, whatever the deadline
    admission.admit(1.0)  # 1 ahead: ~8 ms of work for a 1 s deadline
    with pytest.raises(Overloaded, match="deadline is 10 ms away"):
        admission.admit(0.010)  # ~12 ms of work is more than half of 10 ms
    assert admission.refused == 1
    admission.admit(None)  # a caller without a deadline waits its turn
    clock[0] += 60  # idle a minute: the estimate is forgotten, nothing refused on it
    assert admission.per_prediction_s is None
    admission.admit(0.010)
    full = Admission(max_inflight=1)
    full.admit(None)
    with pytest.raises(Overloaded, match="the limit is 1"):
        full.admit(None)


def test_streams_past_the_budget_are_refused_at_once(registry: Path,
                                                     tmp_path: Path) -> None:
    done = threading.Event()

    def hold() -> Iterator[pb.PredictStreamRequest]:
        done.wait(30)  # sends nothing, keeps the stream open
        return
        yield

    with ServerProcess(tmp_path, "--registry", str(registry), "--no-routing",
                       "--max-streams", "2") as server:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        held = [stub.PredictStream(hold(), timeout=30) for _ in range(2)]
        try:
            deadline = time.monotonic() + 20
            while True:  # both streams open on the server: a third is refused
                refused = stub.PredictStream(iter([pb.PredictStreamRequest()]), timeout=5)
                try:
                    list(refused)
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        assert "the limit is 2" in err.details()
                        break
                    raise
                assert time.monotonic() < deadline, "a third stream was never refused"
        finally:
            done.set()
            for call in held:
                call.cancel()


def test_the_stream_budget_holds_readers_back_until_answers_free_rows() -> None:
    async def run() -> list[object]:
        budget = StreamBudget(max_streams=4, max_rows=10)
        first = await budget.take(8)
        waiting = asyncio.ensure_future(budget.take(5))
        await asyncio.sleep(0.01)
        held = not waiting.done()
        budget.give(first)
        taken = await asyncio.wait_for(waiting, 5)
        # A message bigger than the whole budget waits for all of it, then goes alone.
        huge = asyncio.ensure_future(budget.take(10_000))
        await asyncio.sleep(0.01)
        huge_held = not huge.done()
        budget.give(taken)
        return [held, taken, huge_held, await asyncio.wait_for(huge, 5), budget.rows]

    held, taken, huge_held, huge, rows = asyncio.run(run())
    assert (held, taken, huge_held, huge, rows) == (True, 5, True, 10, 10)
    budget = StreamBudget(max_streams=1, max_rows=10)
    budget.opened()
    with pytest.raises(Overloaded, match="the limit is 1"):
        budget.opened()
    budget.closed()
    budget.opened()


def test_a_call_whose_deadline_already_passed_is_not_computed(hardened: ServerProcess,
                                                              rows: list[dict[str, object]],
                                                              ) -> None:
    stub = pb_grpc.PredictionServiceStub(hardened.channel())
    codes = set()
    for timeout in (0.0005, 0.001, 0.002):
        try:
            stub.Predict(predict_request(rows[:200]), timeout=timeout)
            codes.add("OK")
        except grpc.RpcError as err:
            codes.add(err.code().name)
    assert codes <= {"OK", "DEADLINE_EXCEEDED"}


def test_callers_that_leave_or_expire_are_never_server_errors(
        hardened: ServerProcess, rows: list[dict[str, object]]) -> None:
    internal = grpc.StatusCode.INTERNAL.value[0]
    before = (rpc_count(hardened, "Predict", internal),
              rpc_count(hardened, "PredictStream", internal))
    start = hardened.log_path.stat().st_size
    request = predict_request(rows[:64])
    with grpc.insecure_channel(hardened.target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        futures = [stub.Predict.future(request, timeout=0.0005 * (i % 40 + 1))
                   for i in range(400)]
        for future in futures:
            with contextlib.suppress(grpc.RpcError):
                future.result()
    assert (rpc_count(hardened, "Predict", internal),
            rpc_count(hardened, "PredictStream", internal)) == before
    assert "unhandled error" not in hardened.log_path.read_bytes()[start:].decode()


@pytest.mark.parametrize(("what", "request_of"), [
    ("model name", lambda rows: predict_request(rows[:1], model="m" * 16_000)),
    ("field name", lambda rows: predict_request([{**rows[0], "f" * 8_000: 1.0}])),
    ("many long fields", lambda rows: predict_request(
        [{**rows[0], **{f"{i:03d}" + "g" * 2_000: 1.0 for i in range(40)}}])),
    # 3 bytes a character, 9 once percent-encoded in grpc-message
    ("many long non-ASCII fields", lambda rows: predict_request(
        [{**rows[0], **{f"{i:03d}" + "字" * 600: 1.0 for i in range(40)}}])),
])
def test_error_messages_echo_a_bounded_amount_of_caller_input(
        hardened: ServerProcess, rows: list[dict[str, object]], what: str,
        request_of: Any) -> None:
    stub = pb_grpc.PredictionServiceStub(hardened.channel())
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request_of(rows), timeout=5)
    assert caught.value.code() in (grpc.StatusCode.NOT_FOUND,
                                   grpc.StatusCode.INVALID_ARGUMENT), what
    assert len(caught.value.details()) < 1_000
    trailer = sum(len(k) + len(v) for k, v in caught.value.trailing_metadata() or ())
    assert trailer < 8_192


def test_a_huge_prediction_id_is_refused_with_a_short_message(
        hardened: ServerProcess) -> None:
    stub = pb_grpc.PredictionServiceStub(hardened.channel())
    with pytest.raises(grpc.RpcError) as caught:
        stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[pb.Outcome(
            prediction_id="p" * 100_000, transit_days=2.0)]), timeout=5)
    assert caught.value.code() in (grpc.StatusCode.NOT_FOUND,
                                   grpc.StatusCode.INVALID_ARGUMENT)
    assert len(caught.value.details()) < 1_000


def test_sigterm_under_load_cancels_no_accepted_call(registry: Path, tmp_path: Path,
                                                     rows: list[dict[str, object]]) -> None:
    server = ServerProcess(tmp_path, "--registry", str(registry), "--no-routing").start()
    request = predict_request(rows[:1])
    seen: list[str] = []
    stop = threading.Event()

    def caller() -> None:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.Predict(request, timeout=2)
                    code = "OK"
                except grpc.RpcError as err:
                    code = err.code().name
                if server_stopping.is_set():
                    seen.append(code)
                    if code == "UNAVAILABLE":
                        time.sleep(0.01)  # back off, as a client does

    server_stopping = threading.Event()
    threads = [threading.Thread(target=caller) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while rpc_count(server, "Predict", 0) < 200:  # the callers are in full swing
            assert time.monotonic() < deadline
        server_stopping.set()
        assert server.stop() == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        server.stop()
    assert seen, "no call was made during the drain"
    assert set(seen) <= {"OK", "UNAVAILABLE"}, sorted(set(seen))


def stream_of(requests: list[pb.PredictRequest], done: threading.Event,
              ) -> Iterator[pb.PredictStreamRequest]:
    for request in requests:
        yield pb.PredictStreamRequest(request=request)
    done.wait(30)  # then keep the stream open without sending


def test_streams_that_never_read_their_answers_do_not_starve_others(
        registry: Path, tmp_path: Path, rows: list[dict[str, object]]) -> None:
    big = predict_request(rows[:200])
    done = threading.Event()
    with ServerProcess(tmp_path, "--registry", str(registry), "--no-routing",
                       "--stream-rows", "400") as server:
        greedy = pb_grpc.PredictionServiceStub(server.channel())
        # Each sends 300 messages of 200 rows and never reads an answer.
        held = [greedy.PredictStream(stream_of([big] * 300, done), timeout=60)
                for _ in range(3)]
        try:
            with grpc.insecure_channel(server.target) as other:
                stub = pb_grpc.PredictionServiceStub(other)
                answers = list(stub.PredictStream(
                    iter([pb.PredictStreamRequest(request=big)]), timeout=10))
            assert len(answers) == 1 and answers[0].HasField("response")
        finally:
            done.set()
            for call in held:
                call.cancel()


def test_a_stream_cancelled_mid_answer_is_not_a_server_error(
        registry: Path, tmp_path: Path, rows: list[dict[str, object]]) -> None:
    big = predict_request(rows[:200])
    done = threading.Event()
    with ServerProcess(tmp_path, "--registry", str(registry), "--no-routing") as server:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        for _ in range(10):
            call = stub.PredictStream(stream_of([big] * 100, done), timeout=30)
            next(call)  # answers are flowing; the rest pile up unread
            call.cancel()
        deadline = time.monotonic() + 10
        while rpc_count(server, "PredictStream", grpc.StatusCode.CANCELLED.value[0]) < 10:
            assert time.monotonic() < deadline, "the cancelled streams were not recorded"
        done.set()
        assert rpc_count(server, "PredictStream", grpc.StatusCode.INTERNAL.value[0]) == 0
        assert "unhandled error" not in server.log_text()


def test_calls_held_by_a_drain_are_answered_before_their_deadline(
        registry: Path, tmp_path: Path, rows: list[dict[str, object]]) -> None:
    """An open-loop caller (a call every 10 ms, 500 ms deadlines, whatever the answers):
    calls that arrive while the server drains get UNAVAILABLE, never DEADLINE_EXCEEDED."""
    server = ServerProcess(tmp_path, "--registry", str(registry), "--no-routing",
                           "--grace", "20").start()
    request = predict_request(rows[:1])
    after: list[str] = []
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        stub.Predict(request, timeout=5)
        pending: list[tuple[bool, Any]] = []
        stopping = False
        for i in range(300):
            if i == 100:
                server.signal(signal.SIGTERM)
                stopping = True
            pending.append((stopping, stub.Predict.future(request, timeout=0.5)))
            time.sleep(0.01)
        for sent_after, future in pending:
            try:
                future.result()
                code = "OK"
            except grpc.RpcError as err:
                code = err.code().name
            if sent_after:
                after.append(code)
    assert server.stop() == 0
    assert after and set(after) <= {"OK", "UNAVAILABLE"}, sorted(set(after))
