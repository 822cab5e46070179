"""PredictStream on the real server: one answer per request, in order, the same answer a
unary Predict gives, errors as answers that do not end the stream."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc
from waybill_client import AsyncWaybillClient, InvalidArgument, PredictResult, WaybillClient

from server.transport.prediction_service import PredictionService
from server.transport.streams import Expiry
from tests.harness import ServerProcess
from tests.test_server_predict import struct_rows


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> pb_grpc.PredictionServiceStub:
    return pb_grpc.PredictionServiceStub(server.channel())


def request(rows: list[dict[str, object]], version: str = "",
            model: str = "delivery_eta") -> pb.PredictRequest:
    return pb.PredictRequest(model=model, rows=struct_rows(rows), version=version)


def stream(stub: pb_grpc.PredictionServiceStub, requests: list[pb.PredictRequest],
           metadata: tuple[tuple[str, str], ...] = ()) -> list[pb.PredictStreamResponse]:
    messages = (pb.PredictStreamRequest(request=r) for r in requests)
    return list(stub.PredictStream(messages, metadata=metadata, timeout=30))


def test_every_request_gets_the_answer_a_unary_predict_gives_in_order(
        stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]) -> None:
    requests = [request(rows[i:i + 1 + i % 5], version="1.0.0" if i % 3 == 0 else "")
                for i in range(40)]
    answers = stream(stub, requests)
    assert len(answers) == len(requests)
    for sent, answer in zip(requests, answers, strict=True):
        assert answer.WhichOneof("result") == "response", answer
        unary = stub.Predict(sent, timeout=10)
        got = answer.response
        assert got.version == unary.version
        assert got.route_reason == unary.route_reason
        assert len(got.predictions) == len(sent.rows)
        assert [p.transit_days for p in got.predictions] == pytest.approx(
            [p.transit_days for p in unary.predictions])
        assert [p.delivery_date for p in got.predictions] == [
            p.delivery_date for p in unary.predictions]
        assert len({p.prediction_id for p in got.predictions}) == len(sent.rows)


def test_a_failed_request_is_answered_with_its_error_and_the_stream_goes_on(
        stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]) -> None:
    good = request(rows[:2])
    requests = [
        good,
        request([rows[0], {**rows[1], "distance_km": -3.0}]),
        request(rows[:1], model="no_such_model"),
        request(rows[:1], version="9.9.9"),
        request([]),
        good,
    ]
    answers = stream(stub, requests)
    kinds = [a.WhichOneof("result") for a in answers]
    assert kinds == ["response", "error", "error", "error", "error", "response"]
    bad_value, bad_model, bad_version, empty = (a.error for a in answers[1:5])
    assert bad_value.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in bad_value.field_violations] == ["rows[1].distance_km"]
    assert bad_model.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "no_such_model" in bad_model.message
    assert bad_version.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in empty.field_violations] == ["rows"]


def test_the_calls_metadata_pins_every_request_and_a_disagreeing_field_is_refused(
        stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]) -> None:
    answers = stream(stub, [request(rows[:1]), request(rows[1:3]),
                            request(rows[:1], version="1.1.0")],
                     metadata=(("x-model-version", "1.0.0"),))
    assert [a.response.version for a in answers[:2]] == ["1.0.0", "1.0.0"]
    assert all(a.response.route_reason == pb.ROUTE_REASON_PINNED for a in answers[:2])
    conflict = answers[2].error
    assert conflict.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in conflict.field_violations] == ["version"]


def test_more_requests_than_the_in_flight_bound_are_all_answered_in_order(
        stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]) -> None:
    # Each request carries its own row count (1..4), so order mix-ups would show.
    requests = [request(rows[: 1 + i % 4]) for i in range(300)]
    answers = stream(stub, requests)
    assert [len(a.response.predictions) for a in answers] == [len(r.rows) for r in requests]


def test_stream_requests_are_counted_like_predicts(
        server: ServerProcess, stub: pb_grpc.PredictionServiceStub,
        rows: list[dict[str, object]]) -> None:
    def served(code: str) -> float:
        text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
        pattern = re.compile(r'^waybill_requests_total\{([^}]*)\} (\S+)$', re.M)
        return sum(float(value) for labels, value in pattern.findall(text)
                   if f'code="{code}"' in labels and 'version="1.0.0"' in labels)

    ok, refused = served("OK"), served("INVALID_ARGUMENT")
    stream(stub, [request(rows[:1], version="1.0.0")] * 7
           + [request([{**rows[0], "distance_km": -3.0}], version="1.0.0")] * 2)
    assert served("OK") - ok == 7
    assert served("INVALID_ARGUMENT") - refused == 2


def test_a_draining_server_answers_what_it_read_and_ends_an_idle_stream_unavailable(
        registry: Path, tmp_path: Path, rows: list[dict[str, object]]) -> None:
    with ServerProcess(tmp_path, "--registry", str(registry), "--grace", "10") as proc:
        stub = pb_grpc.PredictionServiceStub(proc.channel())
        answered, finished = threading.Event(), threading.Event()

        def requests() -> Iterator[pb.PredictStreamRequest]:
            yield pb.PredictStreamRequest(request=request(rows[:1]))
            answered.wait(10)
            proc.signal(signal.SIGTERM)  # the server drains while the caller sends nothing
            finished.wait(30)

        call = stub.PredictStream(requests(), timeout=30)
        try:
            first = next(call)
            assert first.WhichOneof("result") == "response"
            answered.set()
            # The reader is cut at once (no waiting for a next request or for the grace
            # period): the call ends UNAVAILABLE, so the caller resends the rest elsewhere.
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            finished.set()
        assert proc.wait(30) == 0


def test_a_caller_that_leaves_mid_stream_costs_the_server_nothing(
        server: ServerProcess, stub: pb_grpc.PredictionServiceStub,
        rows: list[dict[str, object]]) -> None:
    finished = threading.Event()

    def requests() -> Iterator[pb.PredictStreamRequest]:
        for i in range(5):
            yield pb.PredictStreamRequest(request=request(rows[i:i + 1]))
        finished.wait(30)

    call = stub.PredictStream(requests(), timeout=30)
    try:
        assert [next(call).WhichOneof("result") for _ in range(2)] == ["response"] * 2
        call.cancel()
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
        assert caught.value.code() == grpc.StatusCode.CANCELLED
    finally:
        finished.set()
    assert stub.Predict(request(rows[:1]), timeout=10).predictions
    assert not [e for e in server.log_events()
                if e.get("event") == "unhandled error" and e.get("method") == "PredictStream"]


def test_the_python_client_streams_and_returns_errors_as_answers(
        server: ServerProcess, rows: list[dict[str, object]]) -> None:
    batches = [rows[:1], rows[1:4], [{**rows[4], "carrier": 7}], rows[5:6]]
    with WaybillClient(server.target) as client:  # a stream has no deadline by default
        answers = list(client.predict_stream("delivery_eta", iter(batches), version="1.0.0"))
        unary = [client.predict("delivery_eta", b, version="1.0.0")
                 for b in (batches[0], batches[1], batches[3])]
    assert [type(a).__name__ for a in answers] == [
        "PredictResult", "PredictResult", "InvalidArgument", "PredictResult"]
    error = answers[2]
    assert isinstance(error, InvalidArgument)
    assert [v.field for v in error.violations] == ["rows[0].carrier"]
    for got, expected in zip((answers[0], answers[1], answers[3]), unary, strict=True):
        assert isinstance(got, PredictResult)
        assert got.version == expected.version == "1.0.0"
        assert [p.transit_days for p in got.predictions] == pytest.approx(
            [p.transit_days for p in expected.predictions])


def test_a_malformed_message_ends_the_stream_invalid_argument_and_the_server_serves_on(
        server: ServerProcess, stub: pb_grpc.PredictionServiceStub,
        rows: list[dict[str, object]]) -> None:
    raw = server.channel().stream_stream("/waybill.v1.PredictionService/PredictStream")
    with pytest.raises(grpc.RpcError) as caught:
        list(raw(iter([b"\xff\xff\xff"]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in (caught.value.details() or "")
    assert stream(stub, [request(rows[:1])])[0].WhichOneof("result") == "response"


def test_the_python_client_raises_unsendable_rows_after_the_answers_before_them(
        server: ServerProcess, rows: list[dict[str, object]]) -> None:
    batches = [rows[:1], rows[1:2], [{**rows[2], "carrier": {"nested": 1}}], rows[3:4]]
    answers: list[object] = []
    with (WaybillClient(server.target) as client,
          pytest.raises(TypeError, match=r"rows\[0\]\.carrier")):
        for answer in client.predict_stream("delivery_eta", iter(batches)):
            answers.append(answer)
    assert [type(a).__name__ for a in answers] == ["PredictResult", "PredictResult"]


def test_the_asyncio_client_streams_an_async_iterable(
        server: ServerProcess, rows: list[dict[str, object]]) -> None:
    async def batches() -> AsyncIterator[list[dict[str, object]]]:
        for i in range(6):
            yield rows[i:i + 1 + i % 3]
        yield [{**rows[0], "distance_km": -1.0}]

    async def run() -> tuple[list[object], list[PredictResult]]:
        async with AsyncWaybillClient(server.target) as client:
            got = [a async for a in client.predict_stream("delivery_eta", batches())]
            unary = [await client.predict("delivery_eta", rows[i:i + 1 + i % 3])
                     for i in range(6)]
        return got, unary

    answers, unary = asyncio.run(run())
    assert [type(a).__name__ for a in answers] == ["PredictResult"] * 6 + ["InvalidArgument"]
    for got, expected in zip(answers, unary, strict=False):
        assert isinstance(got, PredictResult)
        assert [p.transit_days for p in got.predictions] == pytest.approx(
            [p.transit_days for p in expected.predictions])


# -- each message's deadline (server.transport.streams.Expiry) -----------------------------


def test_messages_expire_in_order_with_one_timer_and_answered_ones_never_do() -> None:
    """Three messages with a 50 ms budget: the quick one answers, the two slow ones are
    cancelled with ``expired`` set, and the stream's own end cancels nothing it did not."""
    async def run() -> list[tuple[bool, bool, bool]]:
        expiry = Expiry(0.05)
        gate = asyncio.Event()

        async def slow() -> None:
            await gate.wait()

        async def quick() -> None:
            return None

        tasks = [asyncio.ensure_future(f()) for f in (quick, slow, slow)]
        watched = [expiry.watch(t) for t in tasks]
        assert watched[0].deadline <= watched[1].deadline <= watched[2].deadline
        await asyncio.wait(tasks, timeout=5)
        expiry.close()
        return [(w.expired, t.cancelled(), t.done()) for w, t in zip(watched, tasks,
                                                                      strict=True)]

    assert asyncio.run(run()) == [(False, False, True), (True, True, True), (True, True, True)]


def test_a_stream_message_past_its_deadline_is_answered_deadline_exceeded() -> None:
    """The message's answer says DEADLINE_EXCEEDED; the stream itself goes on (a predictor
    that never answers stands in for a stuck prediction, which a real model cannot be
    made to do on demand)."""
    class Stuck:
        async def predict(self, query: object) -> object:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    async def run() -> pb.PredictStreamResponse:
        service = PredictionService(Stuck(), None, 0.05)  # type: ignore[arg-type]
        expiry = Expiry(0.05)
        try:
            return await asyncio.ensure_future(service._answer(
                pb.PredictRequest(model="delivery_eta"), metadata=(), stream=None,
                expiry=expiry))
        finally:
            expiry.close()

    answer = asyncio.run(run())
    assert answer.WhichOneof("result") == "error"
    assert answer.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
