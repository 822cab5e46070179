"""Protobuf <-> domain conversion, as pure functions. Bad input raises BadRequest."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from waybill.v1 import prediction_pb2 as pb

from models.artifact import FeatureType, ModelKind, OutputSpec
from models.kinds import Actual
from models.loaded import LoadedVersion
from models.validation import Columns, Values, pairs_to_columns
from router.table import ModelRoutes, RouteReason
from server.serving.errors import BadRequest
from server.serving.predictor import VERSION_HEADER, PredictOutcome, PredictQuery
from server.storage.base import Outcome
from server.transport.status import WireStatus

ROUTE_REASON_HEADER = "x-route-reason"

_REASONS = {
    RouteReason.PINNED: pb.ROUTE_REASON_PINNED,
    RouteReason.LABEL: pb.ROUTE_REASON_LABEL,
    RouteReason.DEFAULT: pb.ROUTE_REASON_DEFAULT,
    RouteReason.STICKY: pb.ROUTE_REASON_STICKY,
    RouteReason.WEIGHTED: pb.ROUTE_REASON_WEIGHTED,
    RouteReason.OVERRIDE: pb.ROUTE_REASON_OVERRIDE,
}
_FEATURE_TYPES = {
    FeatureType.NUMERIC: pb.FEATURE_TYPE_NUMERIC,
    FeatureType.INTEGER: pb.FEATURE_TYPE_INTEGER,
    FeatureType.BOOLEAN: pb.FEATURE_TYPE_BOOLEAN,
    FeatureType.CATEGORICAL: pb.FEATURE_TYPE_CATEGORICAL,
    FeatureType.DATE: pb.FEATURE_TYPE_DATE,
}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind is None or kind == "null_value":
        return None
    # Lists and objects are never valid feature values; keep them so the
    # validator can name the field and say what arrived.
    return json_format.MessageToDict(value)


def struct_columns(rows: Sequence[struct_pb2.Struct]) -> Columns:
    """Struct rows as columns: ~9 us a row, mostly protobuf building a Value per field."""
    return pairs_to_columns([row.fields.items() for row in rows], _value)


def proto_columns(columns: Sequence[pb.Column], shape: tuple[int, str]) -> Columns:
    """A columnar request's values. Checks the shape (lists, lengths) against ``shape``,
    :func:`column_rows`'s answer; the values themselves are checked against the chosen
    version's schema later."""
    n_rows, longest = shape
    values: dict[str, Values] = {}
    for column in columns:
        name = column.name
        field = f"columns.{name}"
        if name in values:
            raise BadRequest(field, "duplicate", "sent twice")
        given = [v for v in (column.numbers, column.strings, column.booleans) if len(v)]
        if len(given) > 1:
            raise BadRequest(field, "conflict", "set one of numbers, strings and booleans")
        data: Values = given[0] if given else ()
        if len(data) != n_rows:
            raise BadRequest(field, "length_mismatch",
                             f"has {len(data)} values; columns.{longest} has {n_rows}")
        if column.missing:
            past = [row for row in column.missing if row >= n_rows]
            if past:
                raise BadRequest(f"{field}.missing", "out_of_range",
                                 f"row {past[0]} is past the last row ({n_rows - 1})")
            data = list(data)
            for row in column.missing:
                data[row] = None
        elif data is column.numbers:
            data = np.asarray(data, dtype=np.float64)
        else:
            data = list(data)
        values[name] = data
    return Columns(n_rows, values, by_row=False)


def column_rows(columns: Sequence[pb.Column]) -> tuple[int, str]:
    """A columnar request's row count, read without converting it: its longest column's
    length (a shorter column is the one refused), and that column's name. Refuses a
    column without a name."""
    n_rows, longest = 0, ""
    for index, column in enumerate(columns):
        if not column.name:
            raise BadRequest(f"columns[{index}].name", "required",
                             "every column needs its feature name")
        size = max(len(column.numbers), len(column.strings), len(column.booleans))
        if size > n_rows:
            n_rows, longest = size, column.name
    return n_rows, longest


def predict_query(
    request: pb.PredictRequest, metadata: Iterable[tuple[str, str | bytes]] | None
) -> PredictQuery:
    # Text metadata only; binary (-bin) values never route.
    headers = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    if request.columns:
        if request.rows:
            raise BadRequest("columns", "conflict", "set rows or columns, not both")
        # Converted when the predictor reads it, after the cheap checks (model, row limit).
        shape = column_rows(request.columns)
        n_rows, read, columnar = (shape[0], functools.partial(proto_columns, request.columns,
                                                              shape), True)
    else:
        n_rows, read, columnar = (len(request.rows),
                                  functools.partial(struct_columns, request.rows), False)
    return PredictQuery(
        model=request.model,
        n_rows=n_rows,
        read=read,
        columnar=columnar,
        pin=request.version or None,  # checked against its header twin by the predictor
        routing_key=request.routing_key or None,
        headers=headers,
    )


def outcomes(request: pb.ReportOutcomeRequest) -> list[Outcome]:
    """The request's outcomes; one without an actual is refused here, the rest by the
    kind of the version that made the prediction."""
    out = []
    for i, item in enumerate(request.outcomes):
        which = item.WhichOneof("actual")
        if which is None:
            raise BadRequest(f"outcomes[{i}].actual", "required",
                             "set value, label, transit_days or delivery_date")
        if which == "label":
            actual = Actual(label=item.label)
        elif which == "delivery_date":
            actual = Actual(delivery_date=item.delivery_date)
        else:  # transit_days is a delivery model's value
            actual = Actual(value=getattr(item, which), number_field=which)
        out.append(Outcome(item.prediction_id, actual))
    return out


def predict_response(outcome: PredictOutcome) -> pb.PredictResponse:
    output = outcome.output
    answer = pb.PredictResponse(model=outcome.model, version=outcome.version,
                                route_reason=_REASONS[outcome.reason], kind=output.kind.value,
                                class_names=output.classes)
    if output.kind is ModelKind.CLASSIFICATION:
        _classes_answer(answer, outcome)
    elif outcome.columnar:
        # Lists go into repeated fields in one call each: no message per row.
        columns = answer.columns
        columns.prediction_id.extend(outcome.prediction_ids)
        columns.value.extend(outcome.values or ())
        if outcome.lower is not None and outcome.upper is not None:
            columns.lower.extend(outcome.lower)
            columns.upper.extend(outcome.upper)
            columns.coverage = outcome.coverage or 0.0
        if outcome.delivery:
            columns.transit_days.extend(outcome.values or ())
            columns.delivery_date.extend(outcome.delivery_dates or ())
            columns.latest_delivery_date.extend(outcome.latest_delivery_dates or ())
    else:
        answer.predictions.extend(_regression_rows(outcome))
    return answer


def _regression_rows(outcome: PredictOutcome) -> list[pb.Prediction]:
    values = outcome.values or []
    rows = [pb.Prediction(prediction_id=pid, value=value)
            for pid, value in zip(outcome.prediction_ids, values, strict=True)]
    if outcome.lower is not None and outcome.upper is not None:
        coverage = outcome.coverage or 0.0
        for row, lower, upper in zip(rows, outcome.lower, outcome.upper, strict=True):
            row.interval.lower, row.interval.upper, row.interval.coverage = lower, upper, coverage
    if outcome.delivery:
        for row, value, expected, latest in zip(
                rows, values, outcome.delivery_dates or (), outcome.latest_delivery_dates or (),
                strict=True):
            row.transit_days, row.delivery_date, row.latest_delivery_date = value, expected, latest
    return rows


def _classes_answer(answer: pb.PredictResponse, outcome: PredictOutcome) -> None:
    proba = outcome.probabilities
    labels = outcome.labels or []
    if proba is None:
        raise ValueError("a classifier's answer has no probabilities")
    if outcome.columnar:
        answer.columns.prediction_id.extend(outcome.prediction_ids)
        answer.columns.label.extend(labels)
        answer.columns.probabilities.extend(proba.ravel().tolist())
        return
    answer.predictions.extend(
        pb.Prediction(prediction_id=pid, label=label, probabilities=row)
        for pid, label, row in zip(outcome.prediction_ids, labels, proba.tolist(), strict=True))


def predict_error(status: WireStatus) -> pb.PredictError:
    """A failed stream request's answer: the status a unary Predict would have ended with."""
    violations: list[pb.FieldViolation] = []
    for detail in status.details.details if status.details is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations.extend(pb.FieldViolation(field=v.field, description=v.description)
                              for v in bad.field_violations)
    return pb.PredictError(code=status.code.value[0], message=status.message,
                           field_violations=violations)


def response_headers(outcome: PredictOutcome) -> tuple[tuple[str, str], ...]:
    return ((VERSION_HEADER, outcome.version), (ROUTE_REASON_HEADER, outcome.reason.value))


def model_summary(routes: ModelRoutes, loaded: dict[str, LoadedVersion]) -> pb.ModelSummary:
    return pb.ModelSummary(
        name=routes.name,
        default_version=routes.default,
        versions=[
            pb.VersionSummary(
                version=v, labels=routes.labels_of(v), created_at=loaded[v].manifest.created_at
            )
            for v in routes.versions
        ],
    )


def model_version(loaded: LoadedVersion, labels: Iterable[str]) -> pb.ModelVersion:
    manifest = loaded.manifest
    metrics = manifest.metrics
    return pb.ModelVersion(
        name=manifest.name,
        version=manifest.version,
        labels=list(labels),
        features=[
            pb.Feature(
                name=f.name,
                type=_FEATURE_TYPES[f.type],
                required=f.required,
                min=f.min,
                max=f.max,
                categories=f.categories,
                allow_unknown=f.allow_unknown,
                description=f.description,
            )
            for f in manifest.features
        ],
        output=_output(manifest.output),
        metrics=_metrics(metrics.figures()),
        sha256=manifest.sha256,
        created_at=manifest.created_at,
        code_revision=manifest.code_revision,
        model_size_bytes=manifest.size_bytes,
    )


def _output(output: OutputSpec) -> pb.Output:
    if output.quantiles is not None:
        method = "quantiles"
    else:
        method = output.interval.method if output.interval is not None else ""
    return pb.Output(
        target=output.target, unit=output.unit.value, description=output.description,
        interval_coverage=output.interval_coverage or 0.0,
        date_field=output.date_field or "", delivery_date_rule=output.delivery_date_rule,
        kind=output.kind.value, loss=output.loss, class_names=output.classes,
        clip_min=output.clip_min, clip_max=output.clip_max, outcome_min=output.outcome_min,
        outcome_max=output.outcome_max, interval_method=method)


def _metrics(figures: dict[str, float]) -> dict[str, float]:
    """Manifest metrics as GetModel names them: the baseline's under "baseline.", row
    counts as they are, the model's under "validation."."""
    named = {}
    for key, value in figures.items():
        if key.startswith("baseline_"):
            named["baseline." + key.removeprefix("baseline_")] = value
        elif key.endswith("_rows"):
            named[key] = value
        else:
            named["validation." + key] = value
    return named
