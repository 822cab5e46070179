"""What the request path records: spans, counters and histograms, cheaply.

This module uses only the OpenTelemetry *API*; :mod:`server.telemetry.export` (called by the
composition root) wires the SDK and hands an :class:`Observer` its tracer and meter.
Without them (unit tests, ``Observer()``) every record still works and nothing is exported.

Costs, measured on the project's 2-core machine (docs/observability.md): an SDK
synchronous instrument call costs 9-20 us (attribute cleaning, hashing, locking), and a
Predict records seven values: 60-140 us, a third to over half of the ~220 us budget.
So the hot path aggregates in process, the way the SDK's own aggregation does after its
checks: :class:`Counter` and :class:`Histogram` bin and add under a short lock (~0.4 us).
Counters reach the SDK as observable counters (read at collection time); histograms, which
the API has no asynchronous form of, are read by :mod:`server.telemetry.export` at collection
time and exported as cumulative explicit-bucket histograms.

Spans cost more: about 25-30 us each to record and 40+ us each to encode for OTLP here.
So children are made only when the request's server span records (is sampled), and no
span work at all is done when tracing is not configured (``tracer is None``).

Label values are bounded: models and versions come from the loaded snapshot, anything a
caller made up is ``_unknown``; validation fields are the version's schema fields or
``_unknown``; routes are the router's reasons; codes are gRPC status names.
"""

from __future__ import annotations

import bisect
import contextvars
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.propagators.textmap import Getter

if TYPE_CHECKING:
    from models.validation import Violation

UNKNOWN = "_unknown"
NO_ROUTE = "none"  # the request failed before a version was chosen
# Request-level fields a Predict or a ModelInfer can break (server.serving.predictor,
# server.transport.convert, server.transport.inference_convert).
REQUEST_FIELDS = frozenset({"model", "rows", "columns", "inputs", "version", "routing_key"})
# rows[3].zip_code, columns.zip_code[3] and columns.zip_code (inputs.zip_code[3] and
# inputs.zip_code, a ModelInfer's) all name the feature zip_code.
_ROW_FIELD = re.compile(r"^(?:rows\[\d+\]\.(.+)|(?:columns|inputs)\.([^\[]+)(?:\[\d+\])?)$")

DURATION_BOUNDS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0)
ROW_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 5000)
BATCH_REQUEST_BOUNDS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
TRANSIT_DAY_BOUNDS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 14.0,
                      21.0)

# Server-side gRPC codes that mark a span as an error (OpenTelemetry RPC conventions);
# the caller's mistakes (INVALID_ARGUMENT, NOT_FOUND, ...) are not server errors.
SERVER_ERROR_CODES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL",
                                "UNAVAILABLE", "DATA_LOSS"})


# --------------------------------------------------------------------------- aggregation

class Counter:
    """A monotonic sum per label tuple; exported as an observable counter."""

    __slots__ = ("_lock", "_values", "description", "labels", "name", "unit")

    def __init__(self, name: str, labels: tuple[str, ...], unit: str, description: str) -> None:
        self.name = name
        self.labels = labels
        self.unit = unit
        self.description = description
        self._lock = threading.Lock()
        self._values: dict[tuple[Any, ...], int] = {}

    def add(self, key: tuple[Any, ...], amount: int = 1) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def values(self) -> dict[tuple[Any, ...], int]:
        with self._lock:
            return dict(self._values)

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        labels = self.labels
        return [Observation(v, dict(zip(labels, k, strict=True)))
                for k, v in self.values().items()]


class _Point:
    __slots__ = ("bounds", "counts", "max", "min", "start_ns", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.start_ns = time.time_ns()


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """One label set of a cumulative explicit-bucket histogram, as read at collection."""

    attributes: Mapping[str, Any]
    counts: tuple[int, ...]  # len(bounds) + 1; the last bucket is (bounds[-1], +inf)
    sum: float
    min: float
    max: float
    start_ns: int
    # This label set's own bucket bounds; empty: the histogram's.
    bounds: tuple[float, ...] = ()

    @property
    def count(self) -> int:
        return sum(self.counts)


class Histogram:
    """Explicit-bucket histogram per label tuple: the hot path bins and adds under a
    short lock; :meth:`points` copies the state out for export."""

    __slots__ = ("_lock", "_points", "bounds", "description", "labels", "name", "unit")

    def __init__(self, name: str, labels: tuple[str, ...], unit: str, description: str,
                 bounds: Sequence[float]) -> None:
        self.name = name
        self.labels = labels
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(b) for b in bounds)
        self._lock = threading.Lock()
        self._points: dict[tuple[Any, ...], _Point] = {}

    def record(self, key: tuple[Any, ...], value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)  # buckets are (lower, upper]
        with self._lock:
            point = self._points.get(key)
            if point is None:
                point = self._points[key] = _Point(self.bounds)
            point.counts[index] += 1
            point.sum += value
            if value < point.min:
                point.min = value
            if value > point.max:
                point.max = value

    def record_many(self, key: tuple[Any, ...], values: Iterable[float],
                    bounds: tuple[float, ...] | None = None) -> None:
        """``bounds``: this label set's own buckets, fixed by its first record (a model
        version's values in its own unit and range); None: the histogram's."""
        with self._lock:
            point = self._points.get(key)
            if point is None:
                point = self._points[key] = _Point(self.bounds if bounds is None else bounds)
            bounds = point.bounds
            counts = point.counts
            for value in values:
                counts[bisect.bisect_left(bounds, value)] += 1
                point.sum += value
                if value < point.min:
                    point.min = value
                if value > point.max:
                    point.max = value

    def points(self) -> list[HistogramPoint]:
        labels = self.labels
        with self._lock:
            copied = [(k, tuple(p.counts), p.sum, p.min, p.max, p.start_ns, p.bounds)
                      for k, p in self._points.items()]
        return [HistogramPoint(dict(zip(labels, k, strict=True)), counts, total, low, high,
                               start, () if bounds == self.bounds else bounds)
                for k, counts, total, low, high, start, bounds in copied]


class HistogramSource:
    """Anything :mod:`server.telemetry.export` exports as a histogram: a name and its points."""

    name: str
    unit: str
    description: str
    bounds: tuple[float, ...]

    def points(self) -> list[HistogramPoint]:
        raise NotImplementedError


class HistogramFunction(HistogramSource):
    """A histogram whose cumulative points something else keeps (e.g. shadow tallies)."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float],
                 read: Callable[[], list[HistogramPoint]]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(b) for b in bounds)
        self._read = read

    def points(self) -> list[HistogramPoint]:
        return self._read()


class Instrumented(Protocol):
    """Anything that owns metrics: it registers them, read at collection time."""

    def register_metrics(self, observer: Observer) -> None: ...


# --------------------------------------------------------------------------- one call

class Call:
    """What one RPC gathers for its access-log line, its span and its metrics."""

    __slots__ = ("context", "deadline", "fields", "model", "route", "schema", "span",
                 "version")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields  # the access-log line
        self.span: trace.Span | None = None  # the server span, only while it records
        self.context: Context | None = None  # the context holding that span (for children)
        # Bounded metric labels; model stays None for calls that are not predictions.
        self.model: str | None = None
        self.version = UNKNOWN
        self.route = NO_ROUTE
        self.schema: frozenset[str] = frozenset()  # the chosen version's feature names
        self.deadline: float | None = None  # event-loop time by which the caller must have it


_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
    "waybill_call", default=None)


def current_call() -> Call | None:
    return _current.get()


def begin_call(fields: dict[str, Any]) -> Call:
    call = Call(fields)
    _current.set(call)
    return call


@dataclass(frozen=True, slots=True)
class RpcMethod:
    """Per-method constants, built once: the span's name and its starting attributes."""

    service: str
    method: str
    span_name: str
    span_attributes: Mapping[str, str]


# --------------------------------------------------------------------------- observer

Metadata = Sequence[tuple[str, str | bytes]]


class _Carrier(Getter[Metadata]):
    """Reads gRPC invocation metadata (a sequence of key/value pairs) for propagators."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        found = [v for k, v in carrier if k == key and isinstance(v, str)]
        return found or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _Carrier()
# What start_span hands back to end_span: the context token to detach (None for a span
# that was never made current, such as a stream request's) and the span.
Started = tuple["contextvars.Token[Context] | None", trace.Span]


class Observer:
    """Everything the request path records, with pre-built label keys.

    ``tracer`` is None when tracing is not configured: then no span work is done at all.
    ``meter`` is None in unit tests: aggregation still happens, nothing is exported.
    ``root_ratio`` (see :class:`server.telemetry.export.Sampling`): the share of calls without a
    caller's trace that get a span; the others do no span work either.
    """

    def __init__(self, meter: Meter | None = None, tracer: trace.Tracer | None = None,
                 root_ratio: float | None = None) -> None:
        self.tracer = tracer
        self._root_ratio = root_ratio
        self._coin = random.Random().random
        self._meter = meter
        # The metadata keys the configured propagators read (traceparent, tracestate, ...).
        self._trace_fields = frozenset(propagate.get_global_textmap().fields)
        self._methods: dict[tuple[str, str], RpcMethod] = {}
        self.rpc_duration = Histogram(
            "rpc.server.call.duration",
            ("rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code"), "s",
            "Duration of RPCs handled by the server (OpenTelemetry RPC semantic conventions)",
            DURATION_BOUNDS_S)
        self.requests = Counter(
            "waybill.requests", ("model", "version", "route", "code"), "{request}",
            "Predict calls by model, served version, route reason and gRPC status code")
        self.request_duration = Histogram(
            "waybill.request.duration", ("model", "version"), "s",
            "Predict call duration by model and served version", DURATION_BOUNDS_S)
        self.rows = Histogram(
            "waybill.rows", ("model", "version"), "{row}", "Rows per Predict request",
            ROW_BOUNDS)
        self.transit_days = Histogram(
            "waybill.prediction.transit_days", ("model", "version"), "d",
            "Predicted transit days (the median) per row, by served version",
            TRANSIT_DAY_BOUNDS)
        self.prediction_values = Histogram(
            "waybill.prediction.value", ("model", "version"), "",
            "Predicted value per row in the model's unit (a classifier: the class index); "
            "each version's buckets are the bin edges of its training predictions", ())
        self.validation_failures = Counter(
            "waybill.validation.failures", ("model", "version", "field", "rule"),
            "{violation}",
            "Request fields that broke a rule; field is a schema field, a request field "
            "or _unknown")
        self.batch_rows = Histogram(
            "waybill.batch.size", ("model", "version"), "{row}",
            "Rows per CatBoost call (one micro-batch)", ROW_BOUNDS)
        self.batch_requests = Histogram(
            "waybill.batch.requests", ("model", "version"), "{request}",
            "Requests that shared one CatBoost call", BATCH_REQUEST_BOUNDS)
        self.outcomes = Counter(
            "waybill.outcomes.reported", ("model", "version"), "{outcome}",
            "Outcomes newly recorded by ReportOutcome, by the version that predicted")
        self._histograms: list[HistogramSource | Histogram] = [
            self.rpc_duration, self.request_duration, self.rows, self.transit_days,
            self.prediction_values,
            self.batch_rows, self.batch_requests]
        if meter is not None:
            for counter in (self.requests, self.validation_failures, self.outcomes):
                meter.create_observable_counter(counter.name, [counter.observe],
                                                unit=counter.unit,
                                                description=counter.description)

    # ----------------------------------------------------------------- registration
    @property
    def meter(self) -> Meter | None:
        return self._meter

    def histograms(self) -> list[HistogramSource | Histogram]:
        return list(self._histograms)

    def add_histogram(self, source: HistogramSource | Histogram) -> None:
        self._histograms.append(source)

    def observe_counter(self, name: str, unit: str, description: str,
                        read: Callable[[], Iterable[tuple[int | float, Mapping[str, Any]]]],
                        ) -> None:
        """An observable counter whose values ``read()`` returns at collection time."""
        if self._meter is not None:
            self._meter.create_observable_counter(name, [_callback(read)], unit=unit,
                                                  description=description)

    def observe_gauge(self, name: str, unit: str, description: str,
                      read: Callable[[], Iterable[tuple[int | float, Mapping[str, Any]]]],
                      *, up_down: bool = False) -> None:
        """An observable gauge (or up-down counter, for sizes such as memory)."""
        if self._meter is None:
            return
        if up_down:
            self._meter.create_observable_up_down_counter(name, [_callback(read)], unit=unit,
                                                          description=description)
        else:
            self._meter.create_observable_gauge(name, [_callback(read)], unit=unit,
                                                description=description)

    # ----------------------------------------------------------------- per RPC
    def rpc_method(self, service: str, method: str) -> RpcMethod:
        key = (service, method)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = RpcMethod(
                service, method, f"{service}/{method}",
                {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method})
        return found

    def start_span(self, rpc: RpcMethod, metadata: Metadata | None,
                   call: Call) -> Started | None:
        """Start the server span continuing the caller's W3C trace and make it current."""
        tracer = self.tracer
        if tracer is None:
            return None
        parent = None
        if metadata:
            fields = self._trace_fields
            if any(k in fields for k, _ in metadata):
                parent = propagate.extract(metadata, getter=_GETTER)
        root_ratio = self._root_ratio
        if (root_ratio is not None and root_ratio < 1.0 and self._coin() >= root_ratio
                and (parent is None
                     or not trace.get_current_span(parent).get_span_context().is_valid)):
            return None  # a new trace the sampler drops: no span, no context
        span = tracer.start_span(rpc.span_name, context=parent, kind=trace.SpanKind.SERVER,
                                 attributes=rpc.span_attributes)
        context = trace.set_span_in_context(span, parent)
        if span.is_recording():
            call.span, call.context = span, context
        token = otel_context.attach(context)
        return token, span

    def end_span(self, started: Started | None, call: Call, code: str, code_value: int,
                 error: BaseException | None) -> None:
        if started is None:
            return
        token, span = started
        try:
            self.close_span(span, call, code, code_value, error)
        finally:
            if token is not None:
                otel_context.detach(token)

    def close_span(self, span: trace.Span, call: Call, code: str, code_value: int,
                   error: BaseException | None) -> None:
        """Set a call's outcome on its span (when the call records) and end it."""
        if call.span is not None:
            attributes: dict[str, Any] = {"rpc.grpc.status_code": code_value}
            if call.model is not None:
                attributes.update({"waybill.model": call.model,
                                   "waybill.version": call.version,
                                   "waybill.route": call.route})
            rows = call.fields.get("rows")
            if isinstance(rows, int):
                attributes["waybill.rows"] = rows
            span.set_attributes(attributes)
            if code in SERVER_ERROR_CODES:
                if error is not None and code == "INTERNAL":
                    span.record_exception(error)
                span.set_status(trace.StatusCode.ERROR, code)
        span.end()

    def finish(self, rpc: RpcMethod, call: Call, code: str, code_value: int,
               seconds: float) -> None:
        self.rpc_duration.record(("grpc", rpc.service, rpc.method, code_value), seconds)
        self.request_done(call, code, seconds)

    def request_done(self, call: Call, code: str, seconds: float) -> None:
        """A prediction request ended: a unary Predict, or one message of a stream."""
        if call.model is not None:
            self.requests.add((call.model, call.version, call.route, code))
            self.request_duration.record((call.model, call.version), seconds)

    # ----------------------------------------------------------------- predictions
    def step(self, call: Call | None, name: str,
             attributes: Mapping[str, Any] | None = None) -> Step:
        """``with observer.step(call, "waybill.validate"):`` -- a child span, or nothing."""
        span = self.child_span(call, name, attributes)
        return _NO_STEP if span is None else Step(span)

    def child_span(self, call: Call | None, name: str,
                   attributes: Mapping[str, Any] | None = None,
                   start_ns: int | None = None) -> trace.Span | None:
        """A child of the call's server span, only when that span records."""
        if call is None or call.span is None or self.tracer is None:
            return None
        return self.tracer.start_span(name, context=call.context, attributes=attributes,
                                      start_time=start_ns)

    def batched(self, key: tuple[str, str], requests: int, rows: int) -> None:
        self.batch_rows.record(key, rows)
        self.batch_requests.record(key, requests)

    def predicted(self, call: Call, rows: int, values: Sequence[float],
                  bounds: tuple[float, ...], delivery: bool) -> None:
        """``values``: the rows' predicted values (a classifier's: its class indices), binned
        over ``bounds``, the version's own; ``delivery``: they are transit days too."""
        key = (call.model or UNKNOWN, call.version)
        self.rows.record(key, rows)
        self.prediction_values.record_many(key, values, bounds)
        if delivery:
            self.transit_days.record_many(key, values)

    def outcomes_reported(self, keys: Iterable[tuple[str, str]]) -> None:
        for key in keys:
            self.outcomes.add(key)

    def validation_failed(self, call: Call, violations: Iterable[Violation]) -> None:
        model = call.model or UNKNOWN
        for violation in violations:
            self.validation_failures.add(
                (model, call.version, bounded_field(violation.field, call.schema),
                 violation.rule))


class Step:
    """Ends its span on exit; an exception marks it as an error (by type, no message)."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span | None) -> None:
        self.span = span

    def __enter__(self) -> Step:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 _tb: object) -> None:
        span = self.span
        if span is None:
            return
        if kind is not None:
            fail(span, kind)
        span.end()


_NO_STEP = Step(None)


def fail(span: trace.Span, kind: type[BaseException]) -> None:
    span.set_attribute("error.type", kind.__name__)
    span.set_status(trace.StatusCode.ERROR, kind.__name__)


def bounded_field(field: str, schema: frozenset[str]) -> str:
    """``rows[3].zip_code``, ``columns.zip_code[3]`` or ``inputs.zip_code[3]`` ->
    ``zip_code`` when the version has that feature."""
    if field in REQUEST_FIELDS:
        return field
    match = _ROW_FIELD.match(field)
    feature = match.group(1) or match.group(2) if match is not None else None
    return feature if feature in schema else UNKNOWN


def _callback(read: Callable[[], Iterable[tuple[int | float, Mapping[str, Any]]]],
              ) -> Callable[[CallbackOptions], Iterator[Observation]]:
    def callback(_options: CallbackOptions) -> Iterator[Observation]:
        for value, attributes in read():
            yield Observation(value, dict(attributes))
    return callback


# --------------------------------------------------------------------------- process

def process_cpu() -> list[tuple[float, Mapping[str, Any]]]:
    times = os.times()
    return [(times.user, {"cpu.mode": "user"}), (times.system, {"cpu.mode": "system"})]


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _statm() -> tuple[int, int] | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            size, resident = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    return int(size) * _PAGE, int(resident) * _PAGE


def process_memory() -> list[tuple[int, Mapping[str, Any]]]:
    found = _statm()
    if found is None:
        import resource  # not Linux: the peak is the best the standard library knows

        return [(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, {})]
    return [(found[1], {})]


def process_virtual_memory() -> list[tuple[int, Mapping[str, Any]]]:
    found = _statm()
    return [] if found is None else [(found[0], {})]


def observe_process(observer: Observer) -> None:
    observer.observe_counter("process.cpu.time", "s", "CPU seconds used by this process",
                             process_cpu)
    observer.observe_gauge("process.memory.usage", "By", "Resident memory of this process",
                           process_memory, up_down=True)
    observer.observe_gauge("process.memory.virtual", "By", "Virtual memory of this process",
                           process_virtual_memory, up_down=True)
