"""One request, in order: route -> validate -> score -> shape the answer.

This module owns the order of the steps and nothing else; it knows no protobuf
and no gRPC. The servicer calls :meth:`Predictor.predict` once per request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from models.loaded import LoadedVersion, delivery_dates
from router.table import Decision, RouteReason, choose
from server.errors import BadRequest
from server.state import ServingState


@dataclass(frozen=True, slots=True)
class PredictQuery:
    model: str
    rows: Sequence[Mapping[str, Any]]
    pin: str | None = None
    routing_key: str | None = None


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
    def __init__(self, state: ServingState, executor: Executor, max_rows: int) -> None:
        self._state = state
        self._executor = executor
        self._max_rows = max_rows

    async def predict(self, query: PredictQuery) -> PredictOutcome:
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
        decision: Decision = choose(snapshot.table, query.model, query.pin)
        version: LoadedVersion = snapshot.version(query.model, decision.version)
        validated = version.validate(query.rows, snapshot.field_names[query.model])
        loop = asyncio.get_running_loop()
        scored = await loop.run_in_executor(self._executor, version.score, validated.matrix)
        rows = []
        for i, order_date in enumerate(validated.dates):
            median, lower, upper = (float(scored.median[i]), float(scored.lower[i]),
                                    float(scored.upper[i]))
            expected, latest = delivery_dates(order_date, median, upper)
            rows.append(RowPrediction(uuid.uuid4().hex, median, lower, upper, expected, latest))
        return PredictOutcome(query.model, version.version, decision.reason, version.coverage,
                              tuple(rows))
