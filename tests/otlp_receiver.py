"""A tiny in-process OTLP/gRPC receiver (traces and metrics) for tests.

Nothing installable here accepts OTLP, so this implements the collector's two export
services with grpcio and ``opentelemetry-proto``; the standard OTLP gRPC exporters talk
to it as to a real collector.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

T = TypeVar("T")


def value_of(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def attributes(items: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in items}


@dataclass(frozen=True)
class Span:
    """One received span, with ids as lowercase hex like W3C traceparent."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    links: tuple[tuple[str, str], ...]
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


class Receiver(trace_service_pb2_grpc.TraceServiceServicer,
               metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._spans: list[Span] = []
        self._metrics: list[tuple[dict[str, Any], metrics_pb2.Metric]] = []
        self._server = grpc.server(ThreadPoolExecutor(4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self._add_spans(request)
            return trace_service_pb2.ExportTraceServiceResponse()
        self._add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def _add_spans(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received.append(Span(
                        s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                        s.kind, attributes(s.attributes), s.status.code,
                        tuple((link.trace_id.hex(), link.span_id.hex()) for link in s.links),
                        resource, s.start_time_unix_nano, s.end_time_unix_nano))
        with self._lock:
            self._spans.extend(received)
            self._lock.notify_all()

    def _add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        received = []
        for rm in request.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                received.extend((resource, m) for m in sm.metrics)
        with self._lock:
            self._metrics.extend(received)
            self._lock.notify_all()

    def spans(self, trace_id: str | None = None) -> list[Span]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def metrics(self) -> list[tuple[dict[str, Any], metrics_pb2.Metric]]:
        with self._lock:
            return list(self._metrics)

    def wait(self, probe: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
        """Wait (on arrivals, not on a clock) until ``probe()`` returns something truthy."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = probe()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._lock.wait(left)

    def close(self) -> None:
        self._server.stop(0).wait(5)


def spans_named(spans: list[Span], name: str) -> Iterator[Span]:
    return (s for s in spans if s.name == name)


SERVER_KIND = trace_pb2.Span.SPAN_KIND_SERVER
STATUS_ERROR = trace_pb2.Status.STATUS_CODE_ERROR
STATUS_UNSET = trace_pb2.Status.STATUS_CODE_UNSET
