from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRoutingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRoutingResponse(_message.Message):
    __slots__ = ("source", "content_hash", "loaded_at", "generation", "models", "last_failure")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    source: str
    content_hash: str
    loaded_at: str
    generation: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRouting]
    last_failure: ReloadFailure
    def __init__(self, source: _Optional[str] = ..., content_hash: _Optional[str] = ..., loaded_at: _Optional[str] = ..., generation: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRouting, _Mapping]]] = ..., last_failure: _Optional[_Union[ReloadFailure, _Mapping]] = ...) -> None: ...

class ModelRouting(_message.Message):
    __slots__ = ("model", "stable", "sticky_key", "routes", "shadow", "override")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    STICKY_KEY_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    model: str
    stable: str
    sticky_key: str
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    shadow: Shadow
    override: Override
    def __init__(self, model: _Optional[str] = ..., stable: _Optional[str] = ..., sticky_key: _Optional[str] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., shadow: _Optional[_Union[Shadow, _Mapping]] = ..., override: _Optional[_Union[Override, _Mapping]] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("version", "label", "weight", "effective_weight")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    version: str
    label: str
    weight: int
    effective_weight: int
    def __init__(self, version: _Optional[str] = ..., label: _Optional[str] = ..., weight: _Optional[int] = ..., effective_weight: _Optional[int] = ...) -> None: ...

class Shadow(_message.Message):
    __slots__ = ("version", "fraction")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    version: str
    fraction: float
    def __init__(self, version: _Optional[str] = ..., fraction: _Optional[float] = ...) -> None: ...

class Override(_message.Message):
    __slots__ = ("reason", "created_at", "actor", "rolled_back")
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    reason: str
    created_at: str
    actor: str
    rolled_back: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reason: _Optional[str] = ..., created_at: _Optional[str] = ..., actor: _Optional[str] = ..., rolled_back: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadFailure(_message.Message):
    __slots__ = ("at", "reason", "content_hash")
    AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    at: str
    reason: str
    content_hash: str
    def __init__(self, at: _Optional[str] = ..., reason: _Optional[str] = ..., content_hash: _Optional[str] = ...) -> None: ...

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("changed", "content_hash", "generation")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    content_hash: str
    generation: int
    def __init__(self, changed: _Optional[bool] = ..., content_hash: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("changed", "routing")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    routing: ModelRouting
    def __init__(self, changed: _Optional[bool] = ..., routing: _Optional[_Union[ModelRouting, _Mapping]] = ...) -> None: ...

class ClearOverrideRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ClearOverrideResponse(_message.Message):
    __slots__ = ("changed", "routing")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    routing: ModelRouting
    def __init__(self, changed: _Optional[bool] = ..., routing: _Optional[_Union[ModelRouting, _Mapping]] = ...) -> None: ...

class GetShadowStatsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetShadowStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[ShadowStats]
    def __init__(self, stats: _Optional[_Iterable[_Union[ShadowStats, _Mapping]]] = ...) -> None: ...

class ShadowStats(_message.Message):
    __slots__ = ("model", "shadow_version", "sampled", "compared_rows", "dropped", "failed", "mean_difference", "mean_absolute_difference", "outside_served_interval", "upper_bounds", "counts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    COMPARED_ROWS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    MEAN_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABSOLUTE_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    OUTSIDE_SERVED_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    UPPER_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    shadow_version: str
    sampled: int
    compared_rows: int
    dropped: int
    failed: int
    mean_difference: float
    mean_absolute_difference: float
    outside_served_interval: float
    upper_bounds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., shadow_version: _Optional[str] = ..., sampled: _Optional[int] = ..., compared_rows: _Optional[int] = ..., dropped: _Optional[int] = ..., failed: _Optional[int] = ..., mean_difference: _Optional[float] = ..., mean_absolute_difference: _Optional[float] = ..., outside_served_interval: _Optional[float] = ..., upper_bounds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class GetDriftRequest(_message.Message):
    __slots__ = ("model", "version", "windows")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    windows: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., windows: _Optional[int] = ...) -> None: ...

class GetDriftResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionDrift]
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionDrift, _Mapping]]] = ...) -> None: ...

class VersionDrift(_message.Message):
    __slots__ = ("model", "version", "current", "completed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    current: DriftWindow
    completed: _containers.RepeatedCompositeFieldContainer[DriftWindow]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., current: _Optional[_Union[DriftWindow, _Mapping]] = ..., completed: _Optional[_Iterable[_Union[DriftWindow, _Mapping]]] = ...) -> None: ...

class DriftWindow(_message.Message):
    __slots__ = ("started_at", "ended_at", "rows", "status", "features", "prediction", "max_psi", "max_psi_feature")
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    MAX_PSI_FIELD_NUMBER: _ClassVar[int]
    MAX_PSI_FEATURE_FIELD_NUMBER: _ClassVar[int]
    started_at: float
    ended_at: float
    rows: int
    status: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    prediction: FeatureDrift
    max_psi: float
    max_psi_feature: str
    def __init__(self, started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., rows: _Optional[int] = ..., status: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., prediction: _Optional[_Union[FeatureDrift, _Mapping]] = ..., max_psi: _Optional[float] = ..., max_psi_feature: _Optional[str] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("name", "kind", "rows", "psi", "ks_statistic", "ks_pvalue", "chi2_statistic", "chi2_pvalue", "unseen_rate", "missing_rate", "reference_missing_rate", "drifted", "bins", "top_bins")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    KS_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    KS_PVALUE_FIELD_NUMBER: _ClassVar[int]
    CHI2_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    CHI2_PVALUE_FIELD_NUMBER: _ClassVar[int]
    UNSEEN_RATE_FIELD_NUMBER: _ClassVar[int]
    MISSING_RATE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MISSING_RATE_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    TOP_BINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    rows: int
    psi: float
    ks_statistic: float
    ks_pvalue: float
    chi2_statistic: float
    chi2_pvalue: float
    unseen_rate: float
    missing_rate: float
    reference_missing_rate: float
    drifted: bool
    bins: _containers.RepeatedCompositeFieldContainer[BinShare]
    top_bins: _containers.RepeatedCompositeFieldContainer[BinShare]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., rows: _Optional[int] = ..., psi: _Optional[float] = ..., ks_statistic: _Optional[float] = ..., ks_pvalue: _Optional[float] = ..., chi2_statistic: _Optional[float] = ..., chi2_pvalue: _Optional[float] = ..., unseen_rate: _Optional[float] = ..., missing_rate: _Optional[float] = ..., reference_missing_rate: _Optional[float] = ..., drifted: _Optional[bool] = ..., bins: _Optional[_Iterable[_Union[BinShare, _Mapping]]] = ..., top_bins: _Optional[_Iterable[_Union[BinShare, _Mapping]]] = ...) -> None: ...

class BinShare(_message.Message):
    __slots__ = ("label", "reference", "current", "contribution")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    label: str
    reference: float
    current: float
    contribution: float
    def __init__(self, label: _Optional[str] = ..., reference: _Optional[float] = ..., current: _Optional[float] = ..., contribution: _Optional[float] = ...) -> None: ...

class GetAccuracyRequest(_message.Message):
    __slots__ = ("model", "window_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    window_seconds: float
    def __init__(self, model: _Optional[str] = ..., window_seconds: _Optional[float] = ...) -> None: ...

class GetAccuracyResponse(_message.Message):
    __slots__ = ("window_seconds", "versions", "judged")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    versions: _containers.RepeatedCompositeFieldContainer[VersionAccuracy]
    judged: _containers.RepeatedCompositeFieldContainer[JudgeVerdict]
    def __init__(self, window_seconds: _Optional[float] = ..., versions: _Optional[_Iterable[_Union[VersionAccuracy, _Mapping]]] = ..., judged: _Optional[_Iterable[_Union[JudgeVerdict, _Mapping]]] = ...) -> None: ...

class VersionAccuracy(_message.Message):
    __slots__ = ("model", "version", "outcomes", "mae", "bias", "coverage", "on_time", "kind", "log_loss", "accuracy", "brier", "has_interval")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    ON_TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LOG_LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BRIER_FIELD_NUMBER: _ClassVar[int]
    HAS_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    outcomes: int
    mae: float
    bias: float
    coverage: float
    on_time: float
    kind: str
    log_loss: float
    accuracy: float
    brier: float
    has_interval: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., outcomes: _Optional[int] = ..., mae: _Optional[float] = ..., bias: _Optional[float] = ..., coverage: _Optional[float] = ..., on_time: _Optional[float] = ..., kind: _Optional[str] = ..., log_loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., brier: _Optional[float] = ..., has_interval: _Optional[bool] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("rule", "model", "version", "state", "metric", "op", "threshold", "value", "samples", "min_samples", "severity", "action", "since", "judge")
    RULE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    rule: str
    model: str
    version: str
    state: str
    metric: str
    op: str
    threshold: float
    value: float
    samples: int
    min_samples: int
    severity: str
    action: str
    since: str
    judge: JudgeVerdict
    def __init__(self, rule: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., metric: _Optional[str] = ..., op: _Optional[str] = ..., threshold: _Optional[float] = ..., value: _Optional[float] = ..., samples: _Optional[int] = ..., min_samples: _Optional[int] = ..., severity: _Optional[str] = ..., action: _Optional[str] = ..., since: _Optional[str] = ..., judge: _Optional[_Union[JudgeVerdict, _Mapping]] = ...) -> None: ...

class JudgeVerdict(_message.Message):
    __slots__ = ("rule", "version", "stable_version", "outcome", "current", "effect", "low", "high", "evidence", "p_value", "e_worse", "e_not_worse", "samples_canary", "samples_stable", "periods", "alpha", "min_effect", "period_seconds", "min_samples")
    RULE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    E_WORSE_FIELD_NUMBER: _ClassVar[int]
    E_NOT_WORSE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_CANARY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_STABLE_FIELD_NUMBER: _ClassVar[int]
    PERIODS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MIN_EFFECT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    rule: str
    version: str
    stable_version: str
    outcome: str
    current: str
    effect: float
    low: float
    high: float
    evidence: float
    p_value: float
    e_worse: float
    e_not_worse: float
    samples_canary: int
    samples_stable: int
    periods: int
    alpha: float
    min_effect: float
    period_seconds: float
    min_samples: int
    def __init__(self, rule: _Optional[str] = ..., version: _Optional[str] = ..., stable_version: _Optional[str] = ..., outcome: _Optional[str] = ..., current: _Optional[str] = ..., effect: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., evidence: _Optional[float] = ..., p_value: _Optional[float] = ..., e_worse: _Optional[float] = ..., e_not_worse: _Optional[float] = ..., samples_canary: _Optional[int] = ..., samples_stable: _Optional[int] = ..., periods: _Optional[int] = ..., alpha: _Optional[float] = ..., min_effect: _Optional[float] = ..., period_seconds: _Optional[float] = ..., min_samples: _Optional[int] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("model", "after_id", "limit", "kinds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    after_id: int
    limit: int
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., after_id: _Optional[int] = ..., limit: _Optional[int] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "at", "kind", "model", "version", "rule", "state", "value", "reason", "actor", "detail_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: str
    kind: str
    model: str
    version: str
    rule: str
    state: str
    value: float
    reason: str
    actor: str
    detail_json: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[str] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., rule: _Optional[str] = ..., state: _Optional[str] = ..., value: _Optional[float] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...
