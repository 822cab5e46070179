"""The only module that wires the OpenTelemetry SDK: providers, samplers, readers and
exporters. The composition root (:mod:`server.runtime.app`) calls it; every other module uses
the API through :class:`server.telemetry.observe.Observer`.

What is switched on, by the standard ``OTEL_*`` environment variables:

- **Traces** only when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_ENDPOINT``) and ``OTEL_TRACES_EXPORTER`` is not ``none``; otherwise
  there is no tracer at all and the request path does no span work. The sampler is
  ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``; unset, it is
  ``parentbased_traceidratio`` at 0.01 (a recorded request costs more than the rest of
  it, see docs/observability.md). A new trace the sampler would drop gets no span at all.
- **Metrics** always: a Prometheus ``/metrics`` endpoint on its own port (a Waybill
  setting), plus OTLP every ``OTEL_METRIC_EXPORT_INTERVAL`` when an endpoint is set
  (``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` or the generic one) and
  ``OTEL_METRICS_EXPORTER`` is not ``none``.
- ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL``: ``grpc`` (the default here, as in
  the Python SDK) or ``http/protobuf``. ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``
  name the service (``waybill`` when unset). ``OTEL_SDK_DISABLED=true`` turns OTLP off.

A collector that is down or slow never reaches a request: spans go to a bounded queue
(``OTEL_BSP_MAX_QUEUE_SIZE``, 2048; full means dropped) that a background thread exports,
metrics are read and exported by their own threads, and :meth:`Telemetry.shutdown`
gives the final flush a bounded time and then abandons it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, start_http_server

from server.telemetry.observe import Histogram as OwnHistogram
from server.telemetry.observe import HistogramSource

log = logging.getLogger("waybill.telemetry")

SERVICE_NAME = "waybill"
DEFAULT_SAMPLE_RATIO = 0.01
PROTOCOLS = ("grpc", "http/protobuf")
# The final flush at shutdown gets the rest of the grace period, but never more than this:
# a dead collector must not hold a stopping process for the whole grace.
FLUSH_MAX_S = 2.0

try:
    VERSION = importlib.metadata.version("waybill")
except importlib.metadata.PackageNotFoundError:  # running from a bare checkout
    VERSION = "0"


class TelemetryError(Exception):
    """An OTEL_* variable has a value Waybill cannot honour; names the variable."""


@dataclass(frozen=True, slots=True)
class OtlpPlan:
    """What the environment asks for; ``None`` means that signal is not exported."""

    traces: str | None  # the protocol
    metrics: str | None
    sampling: Sampling | None


@dataclass(frozen=True, slots=True)
class Sampling:
    """The configured sampler, split so that a request it would drop costs nothing.

    ``root_ratio`` is the share of requests *without* a caller's trace context that get a
    span at all: :class:`server.telemetry.observe.Observer` draws it before any span work, and
    ``sdk`` (which the SDK then applies) samples every root that got that far. With a
    caller's context ``sdk`` decides alone, exactly as the configured sampler would.
    ``None``: the SDK decides everything (samplers that are not parent-based).
    """

    sdk: Sampler
    root_ratio: float | None
    description: str  # the configured sampler, as the SDK would describe it


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _exporters(environ: Mapping[str, str], name: str) -> set[str]:
    value = environ.get(name, "otlp")
    return {v.strip().lower() for v in value.split(",") if v.strip()} or {"otlp"}


def _signal(environ: Mapping[str, str], signal: str) -> str | None:
    """The OTLP protocol for ``signal`` (TRACES or METRICS), or None when not exported."""
    if _flag(environ, "OTEL_SDK_DISABLED"):
        return None
    endpoint = (environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    exporters = _exporters(environ, f"OTEL_{signal}_EXPORTER")
    if not endpoint or "none" in exporters or "otlp" not in exporters:
        unknown = exporters - {"otlp", "none", "prometheus"}
        if unknown:
            log.warning("unsupported exporter ignored", extra={"fields": {
                "variable": f"OTEL_{signal}_EXPORTER", "value": sorted(unknown)}})
        return None
    variable = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    protocol = environ.get(variable) or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol not in PROTOCOLS:
        shown = variable if environ.get(variable) else "OTEL_EXPORTER_OTLP_PROTOCOL"
        raise TelemetryError(f"{shown}={protocol!r}: Waybill exports OTLP over "
                             f"{' or '.join(PROTOCOLS)}")
    return protocol


def sampler_from(environ: Mapping[str, str]) -> Sampling:
    """OTEL_TRACES_SAMPLER/_ARG; unset means parentbased_traceidratio at 0.01."""
    name = (environ.get("OTEL_TRACES_SAMPLER") or "parentbased_traceidratio").strip().lower()
    raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    ratio = DEFAULT_SAMPLE_RATIO
    if name.endswith("traceidratio") and raw:
        try:
            ratio = float(raw)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise TelemetryError(f"OTEL_TRACES_SAMPLER_ARG={raw!r}: not a ratio in [0, 1]")
    # A parent-based sampler's root decision for a new trace is a coin with the ratio
    # (TraceIdRatioBased reads random trace id bits): the Observer tosses it, up front.
    parent_based: dict[str, tuple[Sampler, float]] = {
        "parentbased_always_on": (ALWAYS_ON, 1.0),
        "parentbased_always_off": (ALWAYS_OFF, 0.0),
        "parentbased_traceidratio": (TraceIdRatioBased(ratio), ratio),
    }
    alone: dict[str, Callable[[], Sampler]] = {
        "always_on": lambda: ALWAYS_ON,
        "always_off": lambda: ALWAYS_OFF,
        "traceidratio": lambda: TraceIdRatioBased(ratio),
    }
    if name in parent_based:
        root, root_ratio = parent_based[name]
        return Sampling(ParentBased(ALWAYS_ON), root_ratio,
                        ParentBased(root).get_description())  # type: ignore[no-untyped-call]
    if name not in alone:
        raise TelemetryError(f"OTEL_TRACES_SAMPLER={name!r}: use one of "
                             f"{sorted([*parent_based, *alone])}")
    sampler = alone[name]()
    return Sampling(sampler, None, sampler.get_description())


def plan(environ: Mapping[str, str]) -> OtlpPlan:
    traces = _signal(environ, "TRACES")
    return OtlpPlan(traces, _signal(environ, "METRICS"),
                    sampler_from(environ) if traces else None)


def _span_exporter(protocol: str) -> SpanExporter:
    # The exporters read endpoint, headers, certificates, compression and timeout from
    # the same OTEL_EXPORTER_OTLP_* variables themselves.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )
    return HttpSpanExporter()


def _metric_exporter(protocol: str) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        return OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )
    return HttpMetricExporter()


def resource_from_environment() -> Resource:
    resource = Resource.create({"service.version": VERSION})
    name = str(resource.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    return resource


# --------------------------------------------------------------------------- histograms

class _Histograms:
    """Turns the request path's own histograms into SDK metric data at collection time.

    The SDK has no asynchronous histogram, and its synchronous one costs 9-20 us per
    record here (see server.telemetry.observe); so readers get these added to what they collect.
    """

    def __init__(self) -> None:
        self._sources: list[Callable[[], Sequence[HistogramSource | OwnHistogram]]] = []
        self.scope = InstrumentationScope(SERVICE_NAME, VERSION)

    def add(self, sources: Callable[[], Sequence[HistogramSource | OwnHistogram]]) -> None:
        self._sources.append(sources)

    def metrics(self) -> list[Metric]:
        now = time.time_ns()
        out: list[Metric] = []
        for sources in self._sources:
            for source in sources():
                bounds = list(source.bounds)
                points = [
                    HistogramDataPoint(
                        attributes=dict(p.attributes), start_time_unix_nano=p.start_ns,
                        time_unix_nano=now, count=p.count, sum=p.sum,
                        bucket_counts=list(p.counts),
                        explicit_bounds=list(p.bounds) if p.bounds else bounds,
                        min=p.min, max=p.max)
                    for p in source.points() if p.count
                ]
                if points:
                    out.append(Metric(source.name, source.description, source.unit,
                                      Histogram(points, AggregationTemporality.CUMULATIVE)))
        return out

    def merged(self, data: MetricsData, resource: Resource) -> MetricsData:
        extra = self.metrics()
        if not extra:
            return data
        if not data.resource_metrics:
            return MetricsData([ResourceMetrics(resource, [ScopeMetrics(self.scope, extra, "")],
                                                "")])
        first, *rest = data.resource_metrics
        # Into the meter's own scope: exporters group by scope, a second one would replace it.
        scopes = list(first.scope_metrics)
        for i, scope in enumerate(scopes):
            if scope.scope.name == self.scope.name:
                scopes[i] = ScopeMetrics(scope.scope, [*scope.metrics, *extra], scope.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(self.scope, extra, ""))
        return MetricsData([ResourceMetrics(first.resource, scopes, first.schema_url), *rest])


class _PrometheusReader(PrometheusMetricReader):
    def __init__(self, registry: CollectorRegistry, histograms: _Histograms,
                 resource: Resource) -> None:
        super().__init__(scope_info_enabled=False, registry=registry)
        self._histograms = histograms
        self._resource = resource

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                         **kwargs: Any) -> None:
        super()._receive_metrics(self._histograms.merged(metrics_data, self._resource),
                                 timeout_millis, **kwargs)


class _OtlpReader(PeriodicExportingMetricReader):
    def __init__(self, exporter: MetricExporter, histograms: _Histograms,
                 resource: Resource) -> None:
        super().__init__(exporter)
        self._histograms = histograms
        self._resource = resource

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                         **kwargs: Any) -> None:
        super()._receive_metrics(self._histograms.merged(metrics_data, self._resource),
                                 timeout_millis, **kwargs)


# --------------------------------------------------------------------------- wiring

def _quietly(stop: Callable[[], None]) -> Callable[[], None]:
    """A shutdown step for a thread: its failure is logged, never raised into the thread."""
    def run() -> None:
        try:
            stop()
        except Exception:
            log.warning("telemetry shutdown step failed", exc_info=True,
                        extra={"fields": {"step": stop.__name__}})
    return run


class Telemetry:
    """Providers for one process. ``tracer`` is None when traces are not exported."""

    def __init__(self, environ: Mapping[str, str], *, prometheus: bool = True) -> None:
        self.plan = plan(environ)
        self.resource = resource_from_environment()
        self.histograms = _Histograms()
        self.metrics_port: int | None = None
        self._http: Any = None
        self._span_exporter: SpanExporter | None = None
        self._metric_exporter: MetricExporter | None = None
        self.tracer_provider: TracerProvider | None = None
        self.tracer: trace.Tracer | None = None
        self.root_ratio: float | None = None
        if self.plan.traces is not None and self.plan.sampling is not None:
            self.root_ratio = self.plan.sampling.root_ratio
            # shutdown_on_exit=False: an atexit flush would not be bounded; shutdown() is.
            self.tracer_provider = TracerProvider(sampler=self.plan.sampling.sdk,
                                                  resource=self.resource,
                                                  shutdown_on_exit=False)
            self._span_exporter = _span_exporter(self.plan.traces)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(self._span_exporter))
            self.tracer = self.tracer_provider.get_tracer(SERVICE_NAME, VERSION)
        readers: list[MetricReader] = []
        self.registry: CollectorRegistry | None = None
        if prometheus:
            self.registry = CollectorRegistry(auto_describe=True)
            readers.append(_PrometheusReader(self.registry, self.histograms, self.resource))
        if self.plan.metrics is not None:
            self._metric_exporter = _metric_exporter(self.plan.metrics)
            readers.append(_OtlpReader(self._metric_exporter, self.histograms, self.resource))
        self.meter_provider = MeterProvider(metric_readers=readers, resource=self.resource,
                                            shutdown_on_exit=False)
        self.meter: Meter = self.meter_provider.get_meter(SERVICE_NAME, VERSION)
        log.info("telemetry", extra={"fields": {
            "traces": self.plan.traces or "off",
            "sampler": self.plan.sampling.description if self.plan.sampling else None,
            "otlp_metrics": self.plan.metrics or "off", "prometheus": prometheus,
            "service_name": self.resource.attributes.get("service.name")}})

    def serve_metrics(self, host: str, port: int) -> int:
        """Start the Prometheus endpoint (a daemon thread); returns the bound port."""
        if self.registry is None:
            raise TelemetryError("the Prometheus endpoint is disabled")
        httpd, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = httpd
        self.metrics_port = int(httpd.server_port)
        return self.metrics_port

    def shutdown(self, timeout_s: float) -> bool:
        """Flush and stop within ``timeout_s``; True when everything finished in time."""
        timeout_s = max(0.0, timeout_s)
        deadline = time.monotonic() + timeout_s
        tracer_provider, meter_provider = self.tracer_provider, self.meter_provider

        def stop_traces() -> None:
            if tracer_provider is not None:
                tracer_provider.shutdown()

        def stop_metrics() -> None:
            meter_provider.shutdown(timeout_millis=max(1.0, timeout_s * 1000))

        workers = [threading.Thread(target=_quietly(stop), name=f"telemetry-{stop.__name__}",
                                    daemon=True) for stop in (stop_traces, stop_metrics)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        finished = not any(w.is_alive() for w in workers)
        if not finished:
            # Abort exports still retrying against a collector that is down: the exporters'
            # shutdown interrupts their backoff and closes their channels.
            for exporter in (self._span_exporter, self._metric_exporter):
                if exporter is not None:
                    try:
                        exporter.shutdown()
                    except Exception:  # already shut down, or closing failed: nothing to keep
                        log.debug("exporter shutdown failed", exc_info=True)
            log.warning("telemetry flush timed out", extra={"fields": {
                "timeout_s": round(timeout_s, 3)}})
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        return finished
