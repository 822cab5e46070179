from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_REASON_UNSPECIFIED: _ClassVar[RouteReason]
    ROUTE_REASON_PINNED: _ClassVar[RouteReason]
    ROUTE_REASON_LABEL: _ClassVar[RouteReason]
    ROUTE_REASON_DEFAULT: _ClassVar[RouteReason]
    ROUTE_REASON_STICKY: _ClassVar[RouteReason]
    ROUTE_REASON_WEIGHTED: _ClassVar[RouteReason]
    ROUTE_REASON_OVERRIDE: _ClassVar[RouteReason]

class FeatureType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_TYPE_UNSPECIFIED: _ClassVar[FeatureType]
    FEATURE_TYPE_NUMERIC: _ClassVar[FeatureType]
    FEATURE_TYPE_INTEGER: _ClassVar[FeatureType]
    FEATURE_TYPE_BOOLEAN: _ClassVar[FeatureType]
    FEATURE_TYPE_CATEGORICAL: _ClassVar[FeatureType]
    FEATURE_TYPE_DATE: _ClassVar[FeatureType]
ROUTE_REASON_UNSPECIFIED: RouteReason
ROUTE_REASON_PINNED: RouteReason
ROUTE_REASON_LABEL: RouteReason
ROUTE_REASON_DEFAULT: RouteReason
ROUTE_REASON_STICKY: RouteReason
ROUTE_REASON_WEIGHTED: RouteReason
ROUTE_REASON_OVERRIDE: RouteReason
FEATURE_TYPE_UNSPECIFIED: FeatureType
FEATURE_TYPE_NUMERIC: FeatureType
FEATURE_TYPE_INTEGER: FeatureType
FEATURE_TYPE_BOOLEAN: FeatureType
FEATURE_TYPE_CATEGORICAL: FeatureType
FEATURE_TYPE_DATE: FeatureType

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("prediction_id", "transit_days", "delivery_date", "value", "label")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSIT_DAYS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_DATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    transit_days: float
    delivery_date: str
    value: float
    label: str
    def __init__(self, prediction_id: _Optional[str] = ..., transit_days: _Optional[float] = ..., delivery_date: _Optional[str] = ..., value: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("recorded", "duplicates")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    duplicates: int
    def __init__(self, recorded: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "rows", "version", "routing_key", "columns")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    model: str
    rows: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    version: str
    routing_key: str
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, model: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., version: _Optional[str] = ..., routing_key: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "numbers", "strings", "booleans", "missing")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    BOOLEANS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    name: str
    numbers: _containers.RepeatedScalarFieldContainer[float]
    strings: _containers.RepeatedScalarFieldContainer[str]
    booleans: _containers.RepeatedScalarFieldContainer[bool]
    missing: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., numbers: _Optional[_Iterable[float]] = ..., strings: _Optional[_Iterable[str]] = ..., booleans: _Optional[_Iterable[bool]] = ..., missing: _Optional[_Iterable[int]] = ...) -> None: ...

class PredictStreamRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: PredictRequest
    def __init__(self, request: _Optional[_Union[PredictRequest, _Mapping]] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: PredictResponse
    error: PredictError
    def __init__(self, response: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[PredictError, _Mapping]] = ...) -> None: ...

class PredictError(_message.Message):
    __slots__ = ("code", "message", "field_violations")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field_violations: _containers.RepeatedCompositeFieldContainer[FieldViolation]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field_violations: _Optional[_Iterable[_Union[FieldViolation, _Mapping]]] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "version", "route_reason", "predictions", "columns", "kind", "class_names")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REASON_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    route_reason: RouteReason
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    columns: PredictionColumns
    kind: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., route_reason: _Optional[_Union[RouteReason, str]] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., columns: _Optional[_Union[PredictionColumns, _Mapping]] = ..., kind: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictionColumns(_message.Message):
    __slots__ = ("prediction_id", "transit_days", "lower", "upper", "coverage", "delivery_date", "latest_delivery_date", "value", "label", "probabilities")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSIT_DAYS_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_DATE_FIELD_NUMBER: _ClassVar[int]
    LATEST_DELIVERY_DATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    prediction_id: _containers.RepeatedScalarFieldContainer[str]
    transit_days: _containers.RepeatedScalarFieldContainer[float]
    lower: _containers.RepeatedScalarFieldContainer[float]
    upper: _containers.RepeatedScalarFieldContainer[float]
    coverage: float
    delivery_date: _containers.RepeatedScalarFieldContainer[str]
    latest_delivery_date: _containers.RepeatedScalarFieldContainer[str]
    value: _containers.RepeatedScalarFieldContainer[float]
    label: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, prediction_id: _Optional[_Iterable[str]] = ..., transit_days: _Optional[_Iterable[float]] = ..., lower: _Optional[_Iterable[float]] = ..., upper: _Optional[_Iterable[float]] = ..., coverage: _Optional[float] = ..., delivery_date: _Optional[_Iterable[str]] = ..., latest_delivery_date: _Optional[_Iterable[str]] = ..., value: _Optional[_Iterable[float]] = ..., label: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("prediction_id", "transit_days", "interval", "delivery_date", "latest_delivery_date", "value", "label", "probabilities")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSIT_DAYS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_DATE_FIELD_NUMBER: _ClassVar[int]
    LATEST_DELIVERY_DATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    transit_days: float
    interval: Interval
    delivery_date: str
    latest_delivery_date: str
    value: float
    label: str
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, prediction_id: _Optional[str] = ..., transit_days: _Optional[float] = ..., interval: _Optional[_Union[Interval, _Mapping]] = ..., delivery_date: _Optional[str] = ..., latest_delivery_date: _Optional[str] = ..., value: _Optional[float] = ..., label: _Optional[str] = ..., probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("lower", "upper", "coverage")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    coverage: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ..., coverage: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "default_version", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_version: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionSummary]
    def __init__(self, name: _Optional[str] = ..., default_version: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionSummary, _Mapping]]] = ...) -> None: ...

class VersionSummary(_message.Message):
    __slots__ = ("version", "labels", "created_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    created_at: str
    def __init__(self, version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., created_at: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: ModelVersion
    def __init__(self, model_version: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "labels", "features", "output", "metrics", "sha256", "created_at", "code_revision", "model_size_bytes")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CODE_REVISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    output: Output
    metrics: _containers.ScalarMap[str, float]
    sha256: str
    created_at: str
    code_revision: str
    model_size_bytes: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., sha256: _Optional[str] = ..., created_at: _Optional[str] = ..., code_revision: _Optional[str] = ..., model_size_bytes: _Optional[int] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "type", "required", "min", "max", "categories", "allow_unknown", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FeatureType
    required: bool
    min: float
    max: float
    categories: _containers.RepeatedScalarFieldContainer[str]
    allow_unknown: bool
    description: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FeatureType, str]] = ..., required: _Optional[bool] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., categories: _Optional[_Iterable[str]] = ..., allow_unknown: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("target", "unit", "description", "interval_coverage", "date_field", "delivery_date_rule", "kind", "loss", "class_names", "clip_min", "clip_max", "outcome_min", "outcome_max", "interval_method")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_DATE_RULE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    CLIP_MIN_FIELD_NUMBER: _ClassVar[int]
    CLIP_MAX_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_MIN_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_MAX_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_METHOD_FIELD_NUMBER: _ClassVar[int]
    target: str
    unit: str
    description: str
    interval_coverage: float
    date_field: str
    delivery_date_rule: str
    kind: str
    loss: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    clip_min: float
    clip_max: float
    outcome_min: float
    outcome_max: float
    interval_method: str
    def __init__(self, target: _Optional[str] = ..., unit: _Optional[str] = ..., description: _Optional[str] = ..., interval_coverage: _Optional[float] = ..., date_field: _Optional[str] = ..., delivery_date_rule: _Optional[str] = ..., kind: _Optional[str] = ..., loss: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., clip_min: _Optional[float] = ..., clip_max: _Optional[float] = ..., outcome_min: _Optional[float] = ..., outcome_max: _Optional[float] = ..., interval_method: _Optional[str] = ...) -> None: ...
