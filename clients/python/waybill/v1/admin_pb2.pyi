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
