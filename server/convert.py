"""Protobuf <-> domain conversion, as pure functions. Bad input raises BadRequest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, overload

from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from waybill.v1 import prediction_pb2 as pb

from models.artifact import FeatureType
from models.loaded import LoadedVersion
from router.table import ModelRoutes, RouteReason
from server.errors import BadRequest, WireStatus
from server.predictor import VERSION_HEADER, PredictOutcome, PredictQuery
from server.store import Outcome

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


def row_dict(row: struct_pb2.Struct) -> dict[str, Any]:
    return {name: _value(value) for name, value in row.fields.items()}


class StructRows(Sequence[Mapping[str, Any]]):
    """Request rows, converted from protobuf when read: whoever validates them pays
    the conversion, so a big request converts off the event loop along with its checks."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Sequence[struct_pb2.Struct]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [row_dict(r) for r in self._rows[index]]
        return row_dict(self._rows[index])


def predict_query(
    request: pb.PredictRequest, metadata: Iterable[tuple[str, str | bytes]] | None
) -> PredictQuery:
    # Text metadata only; binary (-bin) values never route.
    headers = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    return PredictQuery(
        model=request.model,
        rows=StructRows(request.rows),
        pin=request.version or None,  # checked against its header twin by the predictor
        routing_key=request.routing_key or None,
        headers=headers,
    )


def outcomes(request: pb.ReportOutcomeRequest) -> list[Outcome]:
    """The request's outcomes; one without an actual is refused here, the rest by the store."""
    out = []
    for i, item in enumerate(request.outcomes):
        which = item.WhichOneof("actual")
        if which is None:
            raise BadRequest(f"outcomes[{i}].actual", "required",
                             "set transit_days or delivery_date")
        out.append(Outcome(item.prediction_id,
                           transit_days=item.transit_days if which == "transit_days" else None,
                           delivery_date=item.delivery_date if which == "delivery_date"
                           else None))
    return out


def predict_response(outcome: PredictOutcome) -> pb.PredictResponse:
    return pb.PredictResponse(
        model=outcome.model,
        version=outcome.version,
        route_reason=_REASONS[outcome.reason],
        predictions=[
            pb.Prediction(
                prediction_id=p.prediction_id,
                transit_days=p.transit_days,
                interval=pb.Interval(lower=p.lower, upper=p.upper, coverage=outcome.coverage),
                delivery_date=p.delivery_date,
                latest_delivery_date=p.latest_delivery_date,
            )
            for p in outcome.predictions
        ],
    )


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
        output=pb.Output(
            target=manifest.output.target,
            unit=manifest.output.unit,
            description=manifest.output.description,
            interval_coverage=manifest.output.interval_coverage,
            date_field=manifest.output.date_field or "",
            delivery_date_rule=manifest.output.delivery_date_rule,
        ),
        metrics={
            "validation.mae": metrics.mae,
            "validation.rmse": metrics.rmse,
            "validation.interval_coverage": metrics.interval_coverage,
            "validation.within_one_day": metrics.within_one_day,
            "baseline.mae": metrics.baseline_mae,
            "train_rows": float(metrics.train_rows),
            "validation_rows": float(metrics.validation_rows),
        },
        sha256=manifest.sha256,
        created_at=manifest.created_at,
        code_revision=manifest.code_revision,
        model_size_bytes=manifest.size_bytes,
    )
