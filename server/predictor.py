"""One request, in order: route -> validate -> score -> shape the answer.

This module owns the order of the steps and nothing else; it knows no protobuf
and no gRPC. The servicer calls :meth:`Predictor.predict` once per request.
"""

from __future__ import annotations

import asyncio
import random
import uuid
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from models.loaded import LoadedVersion, Scored, delivery_dates
from models.validation import ValidatedRows
from router.table import Decision, RouteReason, choose, shadow_for
from server.batcher import MicroBatcher
from server.errors import BadRequest, Overloaded
from server.shadow import ShadowScorer
from server.state import ServingState

MAX_HEADER_VALUE = 128
# Up to this many rows are converted and validated on the event loop (microseconds);
# bigger requests do it on the predict executor so the loop keeps serving others.
INLINE_ROWS = 16


def _validate_and_score(version: LoadedVersion, rows: Sequence[Mapping[str, Any]],
                        also_known: frozenset[str]) -> tuple[ValidatedRows, Scored]:
    validated = version.validate(rows, also_known)
    return validated, version.score(validated.matrix)


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
    rows: Sequence[Mapping[str, Any]]
    pin: str | None = None
    routing_key: str | None = None  # the request field; the header is in headers
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowPrediction:
    prediction_id: str
    transit_days: float
    lower: float
    upper: float
    delivery_date: str
    latest_delivery_date: str


@dataclass(frozen=True, slots=True)
class PredictOutcome:
    model: str
    version: str
    reason: RouteReason
    coverage: float
    predictions: tuple[RowPrediction, ...]


class Predictor:
    def __init__(self, state: ServingState, executor: Executor, max_rows: int,
                 shadow: ShadowScorer | None = None, *, batch_max_rows: int = 256,
                 batch_delay_s: float = 0.0, max_inflight: int = 1024) -> None:
        self._state = state
        self._executor = executor
        self._max_rows = max_rows
        self._shadow = shadow
        self._batch_max_rows = batch_max_rows
        self._batch_delay_s = batch_delay_s
        # One batcher per loaded version; it goes when the version is freed.
        self._batchers: weakref.WeakKeyDictionary[LoadedVersion, MicroBatcher] = (
            weakref.WeakKeyDictionary())
        self._max_inflight = max_inflight
        self._inflight = 0
        # Weighted-random and shadow sampling draws; routing itself stays pure.
        self._random = random.Random()

    def batcher(self, version: LoadedVersion) -> MicroBatcher:
        batcher = self._batchers.get(version)
        if batcher is None:
            batcher = MicroBatcher(version.score, self._executor, self._batch_max_rows,
                                   self._batch_delay_s)
            self._batchers[version] = batcher
        return batcher

    async def predict(self, query: PredictQuery) -> PredictOutcome:
        # Shed at once rather than queue without bound: a caller can retry elsewhere.
        if self._inflight >= self._max_inflight:
            raise Overloaded(f"{self._inflight} predictions in flight; the limit is "
                             f"{self._max_inflight}")
        self._inflight += 1
        try:
            return await self._predict(query)
        finally:
            self._inflight -= 1

    async def _predict(self, query: PredictQuery) -> PredictOutcome:
        if not query.model:
            raise BadRequest("model", "required", "is required (see ListModels)")
        if not query.rows:
            raise BadRequest("rows", "empty", "at least one row is required")
        if len(query.rows) > self._max_rows:
            raise BadRequest(
                "rows", "too_many_rows",
                f"{len(query.rows)} rows exceed the limit of {self._max_rows} per request",
            )
        snapshot = self._state.current  # read once: a reload mid-request cannot mix versions
        routes = snapshot.table.routes(query.model)
        routing_key = agreeing("routing_key", routes.sticky_key, query.routing_key or "",
                               query.headers)
        decision: Decision = choose(snapshot.table, query.model, query.pin, routing_key,
                                    self._random.random())
        version: LoadedVersion = snapshot.version(query.model, decision.version)
        also_known = snapshot.field_names[query.model]
        loop = asyncio.get_running_loop()
        if len(query.rows) <= INLINE_ROWS:
            validated = version.validate(query.rows, also_known)
            scored = await self.batcher(version).score(validated.matrix)
        else:
            validated, scored = await loop.run_in_executor(
                self._executor, _validate_and_score, version, query.rows, also_known
            )
        if self._shadow is not None:
            shadow = shadow_for(snapshot.table, query.model, self._random.random(),
                                served=version.version)
            if shadow is not None:
                self._shadow.offer(query.model, snapshot.version(query.model, shadow),
                                   query.rows, also_known, scored)
        rows = []
        for i, order_date in enumerate(validated.dates):
            median, lower, upper = (float(scored.median[i]), float(scored.lower[i]),
                                    float(scored.upper[i]))
            expected, latest = delivery_dates(order_date, median, upper)
            rows.append(RowPrediction(uuid.uuid4().hex, median, lower, upper, expected, latest))
        return PredictOutcome(query.model, version.version, decision.reason, version.coverage,
                              tuple(rows))
