"""The clients over real gRPC, against a small scripted servicer on 127.0.0.1.

This is not the Waybill server: it checks the client's side of the wire (metadata, deadlines,
retries, rich error trailers, channel ownership) for the sync and asyncio clients. Retries are
gRPC's own (the retry policy in the channel's service config, ``waybill_client._channel``):
the stand-in answers UNAVAILABLE to its next ``unavailable`` calls, then answers, and counts
the attempts that reached it, so these tests see what gRPC core does with the policy.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from waybill.v1 import prediction_pb2, prediction_pb2_grpc
from waybill_client import (
    MAX_RETRIES,
    AsyncWaybillClient,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    WaybillClient,
    retry_options,
)


@dataclass
class Seen:
    metadata: dict[str, str]
    time_remaining: float | None
    rows: list[dict[str, object]]
    authorizations: list[str] = field(default_factory=list)  # every value, in order
    at: float = field(default_factory=time.monotonic)  # when the attempt reached the server


@dataclass
class ScriptedService(prediction_pb2_grpc.PredictionServiceServicer):
    """Fails the next ``unavailable`` calls with UNAVAILABLE, then answers."""

    unavailable: int = 0
    sleep: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, request: object, context: grpc.ServicerContext) -> dict[str, str]:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        authorizations = [str(v) for k, v in context.invocation_metadata()
                          if k == "authorization"]
        rows = [json_format.MessageToDict(r) for r in getattr(request, "rows", [])]
        with self.lock:
            self.seen.append(Seen(metadata, context.time_remaining(), rows, authorizations))
            fail = self.unavailable > 0
            self.unavailable -= fail
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "server is not ready")
        if self.sleep:
            time.sleep(self.sleep)
        return metadata

    def Predict(
        self, request: prediction_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.PredictResponse:
        metadata = self._record(request, context)
        if request.model != "delivery_eta":
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model!r}")
        missing = [i for i, row in enumerate(request.rows) if "zip_code" not in row.fields]
        if missing:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=f"rows[{i}].zip_code", description="required feature is missing"
                    )
                    for i in missing
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(bad)
            status = status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT, message="invalid rows", details=[packed]
            )
            context.abort_with_status(rpc_status.to_status(status))
        version = metadata.get("x-model-version", "1.0.0")
        reason = (
            prediction_pb2.ROUTE_REASON_PINNED
            if "x-model-version" in metadata
            else prediction_pb2.ROUTE_REASON_STICKY
            if "x-routing-key" in metadata
            else prediction_pb2.ROUTE_REASON_DEFAULT
        )
        return prediction_pb2.PredictResponse(
            model=request.model,
            version=version,
            route_reason=reason,
            predictions=[
                prediction_pb2.Prediction(
                    prediction_id=f"p-{i}",
                    transit_days=2.5,
                    interval=prediction_pb2.Interval(lower=2.0, upper=3.2, coverage=0.8),
                    delivery_date="2026-11-29",
                    latest_delivery_date="2026-11-30",
                )
                for i in range(len(request.rows))
            ],
        )

    def ListModels(
        self, request: prediction_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.ListModelsResponse:
        self._record(request, context)
        return prediction_pb2.ListModelsResponse(
            models=[
                prediction_pb2.ModelSummary(
                    name="delivery_eta",
                    default_version="1.0.0",
                    versions=[prediction_pb2.VersionSummary(version="1.0.0", labels=["stable"])],
                )
            ]
        )

    def GetModel(
        self, request: prediction_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.GetModelResponse:
        self._record(request, context)
        return prediction_pb2.GetModelResponse(
            model_version=prediction_pb2.ModelVersion(
                name=request.model, version=request.version or "1.0.0"
            )
        )

    def ReportOutcome(
        self, request: prediction_pb2.ReportOutcomeRequest, context: grpc.ServicerContext
    ) -> prediction_pb2.ReportOutcomeResponse:
        self._record(request, context)
        return prediction_pb2.ReportOutcomeResponse(recorded=len(request.outcomes))

    def PredictStream(
        self, requests: Iterator[prediction_pb2.PredictStreamRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[prediction_pb2.PredictStreamResponse]:
        first = next(requests, None)  # the stream reached the server with a request
        self._record(first, context)
        for _ in requests:
            yield prediction_pb2.PredictStreamResponse()


@pytest.fixture
def served() -> Iterator[tuple[ScriptedService, str]]:
    service = ScriptedService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


ROWS = [{"zip_code": "94107", "day_of_week": 3, "express": True}]


def test_predict_sends_pin_routing_key_and_deadline(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    with WaybillClient(target, timeout=1.5, metadata=[("authorization", "Bearer t")]) as client:
        result = client.predict("delivery_eta", ROWS, version="1.1.0", routing_key="cust-7")
    assert (result.version, result.route_reason) == ("1.1.0", "pinned")
    assert result.predictions[0].prediction_id == "p-0"
    (seen,) = service.seen
    assert seen.rows == ROWS
    assert seen.metadata["x-model-version"] == "1.1.0"
    assert seen.metadata["x-routing-key"] == "cust-7"
    assert seen.metadata["authorization"] == "Bearer t"
    # gRPC core rounds the grpc-timeout header up to a coarser unit (for HPACK), so the
    # server can see a few milliseconds more than the client's 1.5 s, never a second more.
    assert seen.time_remaining is not None and 0 < seen.time_remaining <= 1.5 + 0.05


def test_outcome_token_goes_on_outcome_reports_only(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    base = [("authorization", "Bearer proxy"), ("x-team", "eta")]
    with WaybillClient(target, metadata=base, outcome_token="0utc0me") as client:
        client.predict("delivery_eta", ROWS)
        client.list_models()
        assert client.report_outcomes([("p-0", 3)]).recorded == 1

    async def scenario() -> None:
        async with AsyncWaybillClient(target, metadata=base, outcome_token="0utc0me") as client:
            await client.predict("delivery_eta", ROWS)
            await client.list_models()
            assert (await client.report_outcomes([("p-0", 3)])).recorded == 1

    asyncio.run(scenario())
    with WaybillClient(target, metadata=base) as plain:  # no token: the metadata as given
        plain.report_outcomes([("p-0", 3)])
    assert len(service.seen) == 7
    for first in (0, 3):  # sync, then asyncio
        predict, listing, outcome = service.seen[first:first + 3]
        assert predict.authorizations == listing.authorizations == ["Bearer proxy"]
        # In place of the client's authorization, not beside it.
        assert outcome.authorizations == ["Bearer 0utc0me"]
        assert predict.metadata["x-team"] == outcome.metadata["x-team"] == "eta"
    assert service.seen[6].authorizations == ["Bearer proxy"]
    # A token the server would refuse at start is refused here, before any call.
    for bad in ("", " 0utc0me", "0utc0me\n", "0utc0mé"):
        with pytest.raises(ValueError, match="outcome_token"):
            WaybillClient(target, outcome_token=bad)
    with pytest.raises(TypeError, match="outcome_token"):
        WaybillClient(target, outcome_token=b"0utc0me")  # type: ignore[arg-type]


def test_routing_key_alone_is_sticky(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    with WaybillClient(target) as client:
        result = client.predict("delivery_eta", ROWS, routing_key="cust-7")
    assert result.route_reason == "sticky"
    assert "x-model-version" not in service.seen[0].metadata


def test_unavailable_is_retried_until_it_succeeds(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    service.unavailable = 2
    with WaybillClient(target, retries=3, backoff=0.01) as client:
        result = client.predict("delivery_eta", ROWS)
    assert result.route_reason == "default"
    assert len(service.seen) == 3


def test_unavailable_gives_up_after_the_retries(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    service.unavailable = 100
    with WaybillClient(target, retries=2, backoff=0.01) as client, pytest.raises(Unavailable):
        client.list_models()
    assert len(service.seen) == 3
    service.seen.clear()
    with WaybillClient(target, retries=0) as client, pytest.raises(Unavailable):
        client.list_models()
    assert len(service.seen) == 1


def test_invalid_argument_is_decoded_and_not_retried(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    with WaybillClient(target) as client, pytest.raises(InvalidArgument) as raised:
        client.predict("delivery_eta", [ROWS[0], {"day_of_week": 1}, {}])
    assert raised.value.violations == (
        FieldViolation("rows[1].zip_code", "required feature is missing"),
        FieldViolation("rows[2].zip_code", "required feature is missing"),
    )
    assert raised.value.message == "invalid rows"
    assert isinstance(raised.value.__cause__, grpc.RpcError)
    assert len(service.seen) == 1


def test_not_found(served: tuple[ScriptedService, str]) -> None:
    _, target = served
    with WaybillClient(target) as client, pytest.raises(NotFound, match="unknown model 'nope'"):
        client.predict("nope", ROWS)


def test_deadline_exceeded_is_not_retried(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    service.sleep = 0.5
    with WaybillClient(target, timeout=5.0) as client, pytest.raises(DeadlineExceeded):
        client.predict("delivery_eta", ROWS, timeout=0.1)
    assert len(service.seen) == 1


def test_unreachable_server_fails_within_the_deadline() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with (
        WaybillClient(f"127.0.0.1:{port}", timeout=0.5, retries=MAX_RETRIES,
                      backoff=0.01) as client,
        pytest.raises((Unavailable, DeadlineExceeded)),
    ):
        client.list_models()
    assert time.monotonic() - start < 0.5 + 0.4


def test_pauses_grow_from_backoff_to_max_backoff(served: tuple[ScriptedService, str]) -> None:
    # gRPC waits min(max_backoff, backoff * 2**n), times a jitter in [0.8, 1.2], before
    # retry n. The gaps between attempts as the server saw them are at least 0.8 times that
    # (a timer does not fire early) and, on a loaded machine, somewhat more than 1.2 times.
    service, target = served
    service.unavailable = 3
    with WaybillClient(target, timeout=10, retries=3, backoff=0.1, max_backoff=0.15) as client:
        client.list_models()
    times = [seen.at for seen in service.seen]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    for gap, pause in zip(gaps, (0.1, 0.15, 0.15), strict=True):
        assert 0.8 * pause - 0.01 <= gap <= 1.2 * pause + 0.25, gaps


def test_a_pause_past_the_deadline_ends_the_call_at_the_deadline(
    served: tuple[ScriptedService, str]
) -> None:
    # The policy works inside the call's deadline: a retry whose pause (about 1 s) outlasts
    # the 0.3 s deadline is never made; the call ends with DEADLINE_EXCEEDED at the deadline.
    service, target = served
    service.unavailable = 100
    start = time.monotonic()
    with WaybillClient(target, timeout=0.3, retries=2, backoff=1.0) as client, \
            pytest.raises(DeadlineExceeded):
        client.list_models()
    assert time.monotonic() - start < 0.3 + 0.4
    assert len(service.seen) == 1


def test_a_big_request_is_retried_too(served: tuple[ScriptedService, str]) -> None:
    # Past gRPC's default retry buffer (256 KiB) a call would not be retried: the client
    # raises it, so a Predict of many rows is retried like a small one.
    service, target = served
    service.unavailable = 1
    rows = [{"zip_code": "94107", "note": "x" * 400} for _ in range(1000)]
    with WaybillClient(target, timeout=10, backoff=0.01) as client:
        result = client.predict("delivery_eta", rows, columns=False)
    assert len(result.predictions) == 1000
    assert len(service.seen) == 2
    assert sum(len(r["note"]) for r in service.seen[1].rows) > 256 * 1024


def test_predict_stream_is_not_retried(served: tuple[ScriptedService, str]) -> None:
    # The policy names the unary methods only: a stream refused UNAVAILABLE raises at once.
    service, target = served
    service.unavailable = 1
    with WaybillClient(target, retries=3, backoff=0.01) as client, pytest.raises(Unavailable):
        list(client.predict_stream("delivery_eta", [ROWS, ROWS]))
    assert len(service.seen) == 1


def test_a_given_channel_retries_as_its_options_say(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    service.unavailable = 1
    with grpc.insecure_channel(target, options=retry_options(backoff=0.01)) as channel, \
            WaybillClient(target, channel=channel) as client:
        client.list_models()
    assert len(service.seen) == 2  # retried once by the channel's policy
    service.seen.clear()
    service.unavailable = 1
    with grpc.insecure_channel(target, options=[("grpc.enable_retries", 0)]) as channel, \
            WaybillClient(target, channel=channel) as client, pytest.raises(Unavailable):
        client.list_models()
    assert len(service.seen) == 1
    # The client cannot put a policy on a channel it did not make: refused, not ignored.
    with grpc.insecure_channel(target) as channel, pytest.raises(ValueError, match="retry_options"):
        WaybillClient(target, channel=channel, retries=1)


def test_list_and_get_model(served: tuple[ScriptedService, str]) -> None:
    _, target = served
    with WaybillClient(target) as client:
        (summary,) = client.list_models()
        assert summary.name == "delivery_eta" and list(summary.versions[0].labels) == ["stable"]
        assert client.get_model("delivery_eta").version == "1.0.0"
        assert client.get_model("delivery_eta", "stable").version == "stable"


def test_given_channel_is_left_open(served: tuple[ScriptedService, str]) -> None:
    _, target = served
    channel = grpc.insecure_channel(target)
    try:
        with WaybillClient(target, channel=channel) as client:
            client.list_models()
        with pytest.raises(RuntimeError, match="closed"):
            client.list_models()
        # the caller still owns the channel and can keep using it
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        assert stub.ListModels(prediction_pb2.ListModelsRequest(), timeout=2).models
    finally:
        channel.close()
    with pytest.raises(ValueError, match="credentials and options"):
        WaybillClient(target, channel=channel, options=[("grpc.enable_retries", 0)])


def test_async_client_matches_the_sync_client(served: tuple[ScriptedService, str]) -> None:
    service, target = served
    service.unavailable = 1

    async def scenario() -> None:
        async with AsyncWaybillClient(target, backoff=0.01) as client:
            result = await client.predict("delivery_eta", ROWS, version="canary")
            assert (result.version, result.route_reason) == ("canary", "pinned")
            assert result.predictions[0].latest_delivery_date is not None
            with pytest.raises(InvalidArgument) as raised:
                await client.predict("delivery_eta", [{}])
            assert raised.value.violations[0].field == "rows[0].zip_code"
            (summary,) = await client.list_models()
            assert summary.default_version == "1.0.0"
            assert (await client.get_model("delivery_eta")).version == "1.0.0"
        with pytest.raises(RuntimeError, match="closed"):
            await client.list_models()

    asyncio.run(scenario())
    assert len(service.seen) == 5  # one UNAVAILABLE retried, then four calls
    assert service.seen[1].metadata["x-model-version"] == "canary"
