"""One request, in order: route -> validate -> score -> shape the answer -> observe.

This module owns the order of the steps and nothing else; it knows no protobuf
and no gRPC. The servicer calls :meth:`Predictor.predict` once per request. Each step
is a child span of the request's server span when that span is sampled, and the
outcome is recorded with bounded labels (see :mod:`server.telemetry.observe`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from models.artifact import ModelKind, OutputSpec
from models.kinds import Scored, class_labels
from models.loaded import LoadedVersion, delivery_dates
from models.validation import Columns, ValidatedRows, ValidationFailed
from router.table import Decision, RouteReason, choose, shadow_for
from server.monitoring.trackers import DriftBook
from server.serving.admission import Admission
from server.serving.batcher import MicroBatcher
from server.serving.errors import BadRequest
from server.serving.ids import new_prediction_ids
from server.serving.shadow import ShadowScorer
from server.serving.state import ServingState, Snapshot
from server.storage.base import AnsweredBatch, Store
from server.telemetry.observe import UNKNOWN, Call, Observer, current_call, fail

TrackFn = Callable[[np.ndarray, np.ndarray], None]

log = logging.getLogger("waybill.predictor")

MAX_HEADER_VALUE = 128
VERSION_HEADER = "x-model-version"
# Up to this many rows are converted and validated on the event loop (microseconds);
# bigger requests do it on the predict executor so the loop keeps serving others.
# Columns cost a quarter of Struct rows to read and check at 64 rows, less beyond
# (bench/request_forms.py).
INLINE_ROWS = 16
INLINE_COLUMN_ROWS = 256


def _score_tracked(score: Callable[[np.ndarray], Scored], track: TrackFn,
                   matrix: np.ndarray) -> Scored:
    """Score a batch, then bin it for drift (one vectorised pass per batch, off the loop)."""
    scored = score(matrix)
    _track_safely(track, matrix, scored.value)
    return scored


def _track_safely(track: TrackFn, matrix: np.ndarray, values: np.ndarray) -> None:
    # Drift is a by-product: a bug there must not fail the predictions of a whole batch.
    try:
        track(matrix, values)
    except Exception:
        log.exception("drift tracking failed; the predictions are unaffected")


def _validate_and_score(version: LoadedVersion, read: Callable[[], Columns],
                        also_known: frozenset[str], track: TrackFn | None,
                        marks: list[int]) -> tuple[Columns, ValidatedRows, Scored]:
    """Off the event loop, for big requests; ``marks`` gets the step boundaries (ns)."""
    marks.append(time.time_ns())
    columns = read()
    validated = version.validate(columns, also_known)
    marks.append(time.time_ns())
    scored = version.score(validated.matrix)
    marks.append(time.time_ns())
    if track is not None:
        _track_safely(track, validated.matrix, scored.value)
    return columns, validated, scored


def agreeing(field: str, header: str, body: str, headers: Mapping[str, str]) -> str | None:
    """The value given by a request field or its metadata twin; they must agree."""
    from_header = headers.get(header, "")
    if len(from_header) > MAX_HEADER_VALUE or len(body) > MAX_HEADER_VALUE:
        raise BadRequest(field, "too_long", f"longer than {MAX_HEADER_VALUE} characters")
    if from_header and body and from_header != body:
        raise BadRequest(
            field, "conflict",
            f"request field {body!r} disagrees with the {header} header {from_header!r}",
        )
    return body or from_header or None


@dataclass(frozen=True, slots=True)
class PredictQuery:
    model: str
    n_rows: int
    # The request's values. Reading them can cost (Struct rows: ~9 us a row), so the
    # predictor reads once, on the executor for a big request.
    read: Callable[[], Columns]
    columnar: bool = False  # the caller sent columns: answer in columns
    pin: str | None = None  # the request's version field; the header is in headers
    routing_key: str | None = None  # the request field; the header is in headers
    headers: Mapping[str, str] = field(default_factory=dict)
    # The request field that holds the rows, named when there are none or too many
    # (None: "columns" or "rows", as ``columnar`` says).
    rows_field: str | None = None


@dataclass(frozen=True, slots=True)
class PredictOutcome:
    """The answer, a list per output with one entry per request row, in row order.

    What is set follows the version's kind (``output``): ``values`` for regression
    kinds, ``lower``/``upper`` when the version has an interval, ``labels`` and
    ``probabilities`` (rows x classes, in ``output.classes`` order) for classifiers,
    the dates for delivery models (a target in days counted from a date field).
    """

    model: str
    version: str
    reason: RouteReason
    output: OutputSpec
    columnar: bool
    prediction_ids: list[str]
    values: list[float] | None = None
    lower: list[float] | None = None
    upper: list[float] | None = None
    labels: list[str] | None = None
    probabilities: np.ndarray | None = None
    delivery_dates: list[str] | None = None
    latest_delivery_dates: list[str] | None = None

    @property
    def coverage(self) -> float | None:
        return self.output.interval_coverage

    @property
    def delivery(self) -> bool:
        """Whether answers carry transit_days and dates."""
        return self.output.date_field is not None


class Predictor:
    def __init__(self, state: ServingState, executor: Executor, max_rows: int,
                 shadow: ShadowScorer | None = None, *, batch_max_rows: int = 256,
                 batch_delay_s: float = 0.0, max_inflight: int = 1024,
                 observer: Observer | None = None, drift: DriftBook | None = None,
                 store: Store | None = None) -> None:
        self._state = state
        self._executor = executor
        self._max_rows = max_rows
        self._shadow = shadow
        self._batch_max_rows = batch_max_rows
        self._batch_delay_s = batch_delay_s
        # One batcher per served version. A batcher holds its version (it calls its
        # score method), so entries are dropped explicitly when a new snapshot no longer
        # serves the version; then the version, its model and its drift tracker can go.
        self._batchers: dict[LoadedVersion, MicroBatcher] = {}
        self._batchers_generation = 0
        self._admission = Admission(max_inflight)
        self._observer = observer or Observer()
        self._drift = drift
        self._store = store
        # Weighted-random and shadow sampling draws; routing itself stays pure.
        self._random = random.Random()

    @property
    def inflight(self) -> int:
        return self._admission.inflight

    def register_metrics(self, observer: Observer) -> None:
        observer.observe_gauge(
            "waybill.predictions.inflight", "{request}", "Predictions in flight",
            lambda: [(self._admission.inflight, {})], up_down=True)
        observer.observe_counter(
            "waybill.predictions.refused", "{request}",
            "Predictions refused at arrival: over the in-flight limit, or not answerable "
            "before their deadline", lambda: [(self._admission.refused, {})])

    def batcher(self, version: LoadedVersion) -> MicroBatcher:
        batcher = self._batchers.get(version)
        if batcher is None:
            self._forget_unserved()
            observer = self._observer
            track = self._track(version)
            score = (version.score if track is None
                     else functools.partial(_score_tracked, version.score, track))
            batcher = MicroBatcher(
                score, self._executor, self._batch_max_rows, self._batch_delay_s,
                tracer=observer.tracer,
                on_batch=functools.partial(observer.batched, (version.name, version.version)),
            )
            self._batchers[version] = batcher
        return batcher

    def _forget_unserved(self) -> None:
        snapshot = self._state.current
        if snapshot.generation == self._batchers_generation:
            return
        self._batchers_generation = snapshot.generation
        served = {id(v) for vs in snapshot.versions.values() for v in vs.values()}
        for version in [v for v in self._batchers if id(v) not in served]:
            del self._batchers[version]

    def _track(self, version: LoadedVersion) -> TrackFn | None:
        return self._drift.tracker(version).add if self._drift is not None else None

    async def predict(self, query: PredictQuery) -> PredictOutcome:
        call = current_call() or Call({})
        snapshot = self._state.current  # read once: a reload mid-request cannot mix versions
        # Metric labels only ever name what is loaded; anything else a caller sends is one
        # bounded value.
        call.model = query.model if query.model in snapshot.versions else UNKNOWN
        # Shed at once what cannot be answered in time: a caller can retry elsewhere.
        left = (None if call.deadline is None
                else call.deadline - asyncio.get_running_loop().time())
        if left is not None and left <= 0:
            raise TimeoutError("the deadline passed before the prediction started")
        self._admission.admit(left)
        try:
            return await self._predict(query, snapshot, call)
        except ValidationFailed as err:
            chosen = snapshot.versions.get(query.model, {}).get(call.version)
            if chosen is not None:
                call.schema = chosen.feature_names
            self._observer.validation_failed(call, err.violations)
            raise
        finally:
            self._admission.done()

    async def _predict(self, query: PredictQuery, snapshot: Snapshot,
                       call: Call) -> PredictOutcome:
        pin = agreeing("version", VERSION_HEADER, query.pin or "", query.headers)
        if not query.model:
            raise BadRequest("model", "required", "is required (see ListModels)")
        rows_field = query.rows_field or ("columns" if query.columnar else "rows")
        n_rows = query.n_rows
        if not n_rows:
            raise BadRequest(rows_field, "empty", "at least one row is required")
        if n_rows > self._max_rows:
            raise BadRequest(
                rows_field, "too_many_rows",
                f"{n_rows} rows exceed the limit of {self._max_rows} per request",
            )
        observer = self._observer
        with observer.step(call, "waybill.route") as step:
            routes = snapshot.table.routes(query.model)
            routing_key = agreeing("routing_key", routes.sticky_key, query.routing_key or "",
                                   query.headers)
            decision: Decision = choose(snapshot.table, query.model, pin, routing_key,
                                        self._random.random())
            version: LoadedVersion = snapshot.version(query.model, decision.version)
            call.version = version.version
            call.route = decision.reason.value
            if step.span is not None:  # model, version, rows: on the server span
                step.span.set_attribute("waybill.route", call.route)
        also_known = snapshot.field_names[query.model]
        if n_rows <= (INLINE_COLUMN_ROWS if query.columnar else INLINE_ROWS):
            with observer.step(call, "waybill.validate"):
                columns = query.read()
                validated = version.validate(columns, also_known)
            with observer.step(call, "waybill.predict") as step:
                scored = await self.batcher(version).score(validated.matrix, step.span)
        else:
            marks: list[int] = []
            try:
                columns, validated, scored = await asyncio.get_running_loop().run_in_executor(
                    self._executor, _validate_and_score, version, query.read, also_known,
                    self._track(version), marks)
            finally:
                self._trace_offloop(call, marks)
            observer.batched((version.name, version.version), 1, n_rows)  # a batch of its own
        if self._shadow is not None:
            shadow = shadow_for(snapshot.table, query.model, self._random.random(),
                                served=version.version)
            if shadow is not None:
                self._shadow.offer(query.model, snapshot.version(query.model, shadow),
                                   columns, also_known, scored, parent=call.span)
        order_days = validated.dates
        values = scored.value.tolist()  # once: the answer, the log and the histogram share it
        outcome = answer(query.model, version, decision.reason, query.columnar,
                         new_prediction_ids(n_rows), scored, values,
                         [None] * n_rows if order_days is None else order_days)
        if self._store is not None:
            self._log(version, order_days, outcome, scored, values)
        observer.predicted(call, n_rows, values, version.value_bounds, outcome.delivery)
        return outcome

    def _log(self, version: LoadedVersion, order_days: list[int | None] | None,
             outcome: PredictOutcome, scored: Scored, values: list[float]) -> None:
        """Hand the answer to the log's writer as it is (a deque append; never blocks)."""
        assert self._store is not None
        self._store.log_predictions(AnsweredBatch(
            version.name, version.version, outcome.prediction_ids, values, outcome.lower,
            outcome.upper, order_days, scored.probabilities))

    def _trace_offloop(self, call: Call, marks: list[int]) -> None:
        """Spans for the validate and predict steps a big request ran on the executor."""
        if call.span is None or not marks:
            return
        now = time.time_ns()
        observer = self._observer
        validate = observer.child_span(call, "waybill.validate", start_ns=marks[0])
        if validate is not None:
            if len(marks) < 2:
                fail(validate, ValidationFailed)
            validate.end(marks[1] if len(marks) > 1 else now)
        if len(marks) > 1:
            predict = observer.child_span(call, "waybill.predict", start_ns=marks[1])
            if predict is not None:
                if len(marks) < 3:
                    fail(predict, RuntimeError)
                predict.end(marks[2] if len(marks) > 2 else now)


def answer(model: str, version: LoadedVersion, reason: RouteReason, columnar: bool,
           prediction_ids: list[str], scored: Scored, values: list[float],
           order_days: list[int | None]) -> PredictOutcome:
    """Shape a scored batch into the answer its version's kind gives; ``values`` is
    ``scored.value`` as a list."""
    output = version.output
    if output.kind is ModelKind.CLASSIFICATION:
        return PredictOutcome(model, version.version, reason, output, columnar, prediction_ids,
                              labels=class_labels(output, values),
                              probabilities=scored.probabilities)
    lower = None if scored.lower is None else scored.lower.tolist()
    upper = None if scored.upper is None else scored.upper.tolist()
    expected = latest = None
    if output.date_field is not None:
        expected, latest = delivery_dates(order_days, values, upper)
    return PredictOutcome(model, version.version, reason, output, columnar, prediction_ids,
                          values=values, lower=lower, upper=upper, delivery_dates=expected,
                          latest_delivery_dates=latest)
