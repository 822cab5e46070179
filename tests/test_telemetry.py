"""Traces end to end: the real server exports OTLP to an in-process receiver, continues
the caller's W3C trace, names its steps, keeps health checks out, writes the trace ids
into its log lines; a dead collector costs requests nothing and does not hold shutdown.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc
from waybill_client import WaybillClient

from server.telemetry import export as telemetry
from server.telemetry.observe import Histogram, Observer, begin_call, bounded_field
from tests.harness import ServerProcess
from tests.otlp_receiver import (
    SERVER_KIND,
    STATUS_ERROR,
    STATUS_UNSET,
    Receiver,
    Span,
)
from tests.routing_fixtures import routing_text
from tests.test_server_predict import struct_rows

PREDICT = "waybill.v1.PredictionService/Predict"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def traced(registry: Path, receiver: Receiver,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("traced")
    routing = workdir / "routing.toml"
    # Every request is also shadow-scored, so the shadow span is always there.
    routing.write_text(routing_text([("1.1.0", 100, "stable")], stable="1.1.0",
                                    shadow=("1.0.0", 1.0)))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_SAMPLER": "always_on",
           "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "300",
           "OTEL_SERVICE_NAME": "waybill-under-test"}
    with ServerProcess(workdir, "--registry", str(registry), "--routing", str(routing),
                       env=env) as proc:
        yield proc


def new_trace() -> tuple[str, str, str]:
    """A caller's trace id, span id and its sampled W3C traceparent."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def predict(server: ServerProcess, rows: list[dict[str, object]],
            metadata: tuple[tuple[str, str], ...] = ()) -> pb.PredictResponse:
    stub = pb_grpc.PredictionServiceStub(server.channel())
    reply: pb.PredictResponse = stub.Predict(
        pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows)), metadata=metadata,
        timeout=10)
    return reply


def server_span(receiver: Receiver, trace_id: str) -> Span:
    return receiver.wait(
        lambda: next((s for s in receiver.spans(trace_id) if s.name == PREDICT), None),
        f"the server span of trace {trace_id}")


def children(receiver: Receiver, trace_id: str, names: set[str]) -> dict[str, Span]:
    def found() -> dict[str, Span] | None:
        spans = {s.name: s for s in receiver.spans(trace_id)}
        return spans if names <= spans.keys() else None

    return receiver.wait(found, f"spans {sorted(names)} of trace {trace_id}")


def test_the_server_span_continues_the_callers_trace(
        traced: ServerProcess, receiver: Receiver, rows: list[dict[str, object]]) -> None:
    trace_id, caller_span, traceparent = new_trace()
    reply = predict(traced, rows[:3], (("traceparent", traceparent),
                                       ("x-model-version", "1.1.0")))
    assert reply.version == "1.1.0"
    span = server_span(receiver, trace_id)
    assert span.parent_span_id == caller_span
    assert span.kind == SERVER_KIND
    assert span.status_code == STATUS_UNSET
    assert span.resource["service.name"] == "waybill-under-test"
    assert span.attributes == {
        "rpc.system": "grpc", "rpc.service": "waybill.v1.PredictionService",
        "rpc.method": "Predict", "rpc.grpc.status_code": 0,
        "waybill.model": "delivery_eta", "waybill.version": "1.1.0",
        "waybill.route": "pinned", "waybill.rows": 3,
    }
    spans = children(receiver, trace_id, {"waybill.route", "waybill.validate",
                                          "waybill.predict", "waybill.batch",
                                          "waybill.shadow"})
    for name in ("waybill.route", "waybill.validate", "waybill.predict", "waybill.shadow"):
        assert spans[name].parent_span_id == span.span_id, name
    assert spans["waybill.batch"].parent_span_id == spans["waybill.predict"].span_id
    assert spans["waybill.route"].attributes["waybill.route"] == "pinned"
    assert spans["waybill.batch"].attributes["waybill.batch.rows"] >= 3
    assert spans["waybill.shadow"].attributes["waybill.version"] == "1.0.0"
    assert spans["waybill.shadow"].attributes["waybill.shadow.outcome"] == "compared"
    # The steps happen inside the request, in order.
    assert span.start_ns <= spans["waybill.route"].start_ns
    assert spans["waybill.route"].end_ns <= spans["waybill.validate"].start_ns
    assert spans["waybill.validate"].end_ns <= spans["waybill.predict"].start_ns
    assert spans["waybill.predict"].end_ns <= span.end_ns


def test_a_big_request_traces_the_steps_it_ran_off_the_event_loop(
        traced: ServerProcess, receiver: Receiver, rows: list[dict[str, object]]) -> None:
    trace_id, _, traceparent = new_trace()
    predict(traced, rows[:40], (("traceparent", traceparent),))
    span = server_span(receiver, trace_id)
    assert span.attributes["waybill.rows"] == 40
    assert span.attributes["waybill.route"] == "default"
    spans = children(receiver, trace_id, {"waybill.validate", "waybill.predict"})
    assert spans["waybill.validate"].end_ns <= spans["waybill.predict"].start_ns
    assert spans["waybill.predict"].parent_span_id == span.span_id


def test_a_refused_request_is_traced_with_its_status_and_the_failing_step(
        traced: ServerProcess, receiver: Receiver, rows: list[dict[str, object]]) -> None:
    trace_id, _, traceparent = new_trace()
    with pytest.raises(grpc.RpcError) as caught:
        predict(traced, [{**rows[0], "distance_km": -1.0}], (("traceparent", traceparent),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    span = server_span(receiver, trace_id)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.status_code == STATUS_UNSET  # the caller's mistake is not a server error
    validate = children(receiver, trace_id, {"waybill.validate"})["waybill.validate"]
    assert validate.status_code == STATUS_ERROR
    assert validate.attributes["error.type"] == "ValidationFailed"


def test_health_checks_are_not_traced_and_log_lines_carry_the_trace(
        traced: ServerProcess, receiver: Receiver, rows: list[dict[str, object]]) -> None:
    health_trace, _, health_parent = new_trace()
    health = health_pb2_grpc.HealthStub(traced.channel())
    for _ in range(3):
        status = health.Check(health_pb2.HealthCheckRequest(),
                              metadata=(("traceparent", health_parent),), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    # A traced call after the checks: once its span is in, the checks' would be too.
    trace_id, _, traceparent = new_trace()
    predict(traced, rows[:1], (("traceparent", traceparent),))
    span = server_span(receiver, trace_id)
    assert receiver.spans(health_trace) == []
    access = [e for e in traced.log_events()
              if e.get("event") == "rpc" and e.get("trace_id") == trace_id]
    assert len(access) == 1
    assert access[0]["span_id"] == span.span_id
    assert access[0]["code"] == "OK"


def test_the_python_client_propagates_the_callers_trace(
        traced: ServerProcess, receiver: Receiver, rows: list[dict[str, object]]) -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("caller")
    with tracer.start_as_current_span("checkout") as caller, \
            WaybillClient(traced.target, timeout=10) as client:
        result = client.predict("delivery_eta", rows[:2])
    assert result.version == "1.1.0"
    context = caller.get_span_context()
    span = server_span(receiver, format(context.trace_id, "032x"))
    assert span.parent_span_id == format(context.span_id, "016x")
    assert span.attributes["waybill.rows"] == 2
    provider.shutdown()


def test_metrics_are_exported_over_otlp_too(
        traced: ServerProcess, receiver: Receiver, rows: list[dict[str, object]]) -> None:
    predict(traced, rows[:1])

    def seen() -> set[str] | None:
        names = {m.name for _, m in receiver.metrics()}
        wanted = {"waybill.requests", "rpc.server.call.duration", "process.cpu.time",
                  "waybill.prediction.transit_days"}
        return names if wanted <= names else None

    receiver.wait(seen, "OTLP metrics", timeout=20)
    resource, duration = next((r, m) for r, m in receiver.metrics()
                              if m.name == "rpc.server.call.duration")
    assert resource["service.name"] == "waybill-under-test"
    assert duration.unit == "s"
    assert any(p.attributes and p.count for p in duration.histogram.data_points)


# --------------------------------------------------------------------------- dead collector

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


def median_latency(server: ServerProcess, row: dict[str, object], calls: int) -> float:
    stub = pb_grpc.PredictionServiceStub(server.channel())
    request = pb.PredictRequest(model="delivery_eta", rows=struct_rows([row]))
    _, _, traceparent = new_trace()
    for _ in range(20):  # warm up: connection, first batches
        stub.Predict(request, timeout=10)
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        stub.Predict(request, metadata=(("traceparent", traceparent),), timeout=10)
        took.append(time.perf_counter() - started)
    return statistics.median(took)


def test_a_dead_collector_adds_no_latency_and_does_not_hold_shutdown(
        registry: Path, tmp_path: Path, rows: list[dict[str, object]]) -> None:
    grace = 4.0
    dead = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "OTEL_TRACES_SAMPLER": "always_on", "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "200"}
    plain = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    (tmp_path / "dead").mkdir()
    (tmp_path / "plain").mkdir()
    exporting = ServerProcess(tmp_path / "dead", "--registry", str(registry),
                              "--grace", str(grace), env=dead)
    quiet = ServerProcess(tmp_path / "plain", "--registry", str(registry))
    quiet.env = plain  # no OTEL_* at all, whatever this process has
    with exporting, quiet:
        without = median_latency(quiet, rows[0], 200)
        with_dead = median_latency(exporting, rows[0], 200)
        # A behaviour check, not a benchmark: spans queue and drop, requests do not wait.
        assert with_dead <= 1.5 * without + 0.002, (with_dead, without)
        started = time.monotonic()
        exporting.signal(signal.SIGTERM)
        assert exporting.wait(timeout=30) == 0
        took = time.monotonic() - started
    assert took < grace, f"shutdown took {took:.2f}s with a grace of {grace}s"
    events = exporting.log_events()
    assert any(e.get("event") == "stopped" for e in events)


# --------------------------------------------------------------------------- in process

def test_nothing_is_traced_or_exported_when_otel_variables_are_unset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    wired = telemetry.Telemetry(os.environ, prometheus=False)
    try:
        assert wired.tracer is None and wired.tracer_provider is None
        assert wired.plan == telemetry.OtlpPlan(None, None, None)
    finally:
        assert wired.shutdown(1.0)


@pytest.mark.parametrize(("environ", "traces", "metrics"), [
    ({}, None, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "grpc", "grpc"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces",
      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http/protobuf", None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"},
     None, "grpc"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_METRICS_EXPORTER": "none"},
     "grpc", None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"},
     None, None),
])
def test_the_otel_variables_decide_what_is_exported(
        environ: dict[str, str], traces: str | None, metrics: str | None) -> None:
    found = telemetry.plan(environ)
    assert (found.traces, found.metrics) == (traces, metrics)


@pytest.mark.parametrize(("environ", "description"), [
    ({}, "ParentBased{root:TraceIdRatioBased{0.01}"),
    ({"OTEL_TRACES_SAMPLER_ARG": "0.25"}, "ParentBased{root:TraceIdRatioBased{0.25}"),
    ({"OTEL_TRACES_SAMPLER": "always_on"}, "AlwaysOnSampler"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
     "TraceIdRatioBased{0.5}"),
])
def test_the_sampler_defaults_to_a_hundredth_of_new_traces(
        environ: dict[str, str], description: str) -> None:
    assert telemetry.sampler_from(environ).description.startswith(description)


def _observed(environ: dict[str, str]) -> tuple[Observer, InMemorySpanExporter]:
    sampling = telemetry.sampler_from(environ)
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampling.sdk)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    observer = Observer(tracer=provider.get_tracer("t"), root_ratio=sampling.root_ratio)
    observer._coin = random.Random(7).random  # a fixed seed: the counts below never vary
    return observer, exported


def _calls(observer: Observer, metadata: tuple[tuple[str, str], ...], n: int) -> int:
    """Start and end n server spans; returns how many calls got any span at all."""
    rpc = observer.rpc_method("waybill.v1.PredictionService", "Predict")
    spanned = 0
    for _ in range(n):
        call = begin_call({})
        started = observer.start_span(rpc, metadata, call)
        spanned += started is not None
        observer.end_span(started, call, "OK", 0, None)
    return spanned


@pytest.mark.parametrize(("environ", "low", "high"), [
    ({}, 4, 40),  # 0.01 of 2000: 20 expected; bounds far outside the binomial spread
    ({"OTEL_TRACES_SAMPLER_ARG": "0.25"}, 400, 600),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, 0, 0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, 2000, 2000),
])
def test_a_new_trace_the_sampler_drops_costs_no_span_at_all(
        environ: dict[str, str], low: int, high: int) -> None:
    observer, exported = _observed(environ)
    spanned = _calls(observer, (), 2000)
    # Every call that got a span was recorded and exported: nothing was made to be dropped.
    assert low <= spanned <= high
    assert len(exported.get_finished_spans()) == spanned


@pytest.mark.parametrize(("flags", "recorded"), [("01", 50), ("00", 0)])
def test_a_callers_trace_decides_whatever_the_root_ratio(flags: str, recorded: int) -> None:
    observer, exported = _observed({"OTEL_TRACES_SAMPLER": "parentbased_always_off"})
    trace_id = secrets.token_hex(16)
    parent = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"),)
    assert _calls(observer, parent, 50) == 50  # the caller's context is always continued
    spans = exported.get_finished_spans()
    assert len(spans) == recorded
    assert all(format(s.context.trace_id, "032x") == trace_id for s in spans)


def test_a_malformed_traceparent_is_a_new_trace_for_the_root_ratio() -> None:
    observer, exported = _observed({"OTEL_TRACES_SAMPLER": "parentbased_always_off"})
    assert _calls(observer, (("traceparent", "00-not-a-trace-01"),), 50) == 0
    assert exported.get_finished_spans() == ()


@pytest.mark.parametrize("name", ["always_on", "always_off", "traceidratio"])
def test_samplers_that_are_not_parent_based_decide_in_the_sdk(name: str) -> None:
    sampling = telemetry.sampler_from({"OTEL_TRACES_SAMPLER": name})
    assert sampling.root_ratio is None
    assert sampling.sdk.get_description() == sampling.description


@pytest.mark.parametrize(("environ", "named"), [
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER='sometimes'"),
    ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG='2'"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"),
])
def test_a_bad_otel_variable_is_refused_by_name(environ: dict[str, str], named: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", **environ}
    with pytest.raises(telemetry.TelemetryError, match=named.replace("(", r"\(")):
        telemetry.plan(env)


class _OtlpHttp(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: Any) -> None:
        pass


def test_otlp_over_http_protobuf_when_the_protocol_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _OtlpHttp.received = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpHttp)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{http.server_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    wired = telemetry.Telemetry(os.environ, prometheus=False)
    try:
        assert wired.tracer is not None
        wired.tracer.start_span("probe").end()
        assert wired.shutdown(5.0)  # the final flush sends it
    finally:
        http.shutdown()
        http.server_close()
    (path, body), = _OtlpHttp.received
    assert path == "/v1/traces"
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    assert request.resource_spans[0].scope_spans[0].spans[0].name == "probe"


def test_histograms_bin_like_prometheus_and_fields_stay_bounded() -> None:
    histogram = Histogram("h", ("version",), "s", "", (1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 3.0):
        histogram.record(("1.0.0",), value)
    (point,) = histogram.points()
    assert point.counts == (2, 1, 1)  # (-inf, 1], (1, 2], (2, +inf)
    assert (point.count, point.sum, point.min, point.max) == (4, 6.0, 0.5, 3.0)
    schema = frozenset({"zip_code", "distance_km"})
    assert bounded_field("rows[12].zip_code", schema) == "zip_code"
    assert bounded_field("rows[0].made_up_by_a_caller", schema) == "_unknown"
    assert bounded_field("columns.zip_code[3]", schema) == "zip_code"
    assert bounded_field("columns.distance_km", schema) == "distance_km"
    assert bounded_field("columns.made_up[1]", schema) == "_unknown"
    assert bounded_field("routing_key", schema) == "routing_key"
    assert bounded_field("rows", schema) == "rows"
    assert bounded_field("columns", schema) == "columns"  # too many rows sent as columns
    assert bounded_field("anything_else", schema) == "_unknown"
    assert Observer().tracer is None  # unit use: aggregation only, no spans, no export
