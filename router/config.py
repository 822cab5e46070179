"""The routing config file (``deploy/routing.toml``) as frozen, validated objects.

The file is TOML; every field is documented in ``docs/routing.md`` and in the
comments of ``deploy/routing.toml``. :func:`parse_routing` turns its text into a
:class:`RoutingConfig` or raises :class:`RoutingConfigError`, whose message names
the source and, for each problem, the TOML line and column (syntax) or the field
path and the bad value (rules), for example::

    deploy/routing.toml: 1 problem
      models.delivery_eta.routes[1].weight = 120: must be an integer from 0 to 100

A config that parses can still name versions the registry does not hold:
:func:`check_against_registry` reports those, and the caller adds what only it
knows (versions that fail to load) through its ``failed`` argument.

Alert rules (``[[models.<name>.alerts]]``) are parsed here too (:class:`AlertRule`);
what they measure and how they are evaluated is the server's business
(``server/monitoring/alerts.py``).

This module imports only the standard library and pydantic.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Collection, Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    Strict,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

SCHEMA_VERSION = 1
DEFAULT_STICKY_KEY = "x-routing-key"
PIN_HEADER = "x-model-version"

# Semantic Versioning 2.0.0 without build metadata; the same rule as the registry's
# (models/artifact.py), repeated here because router/ must not import models/.
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$"
)
# A rule name is a metric label and an event field: short, lowercase, no spaces.
RULE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DURATION_RE = re.compile(r"^(\d+)(s|m|h)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
MODEL_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# A label starts with a letter, so it can never be mistaken for a version
# (versions start with a digit): a pin is a version or a label, never both.
LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# A gRPC metadata key we can read as text: lowercase, no "-bin" suffix, not reserved.
METADATA_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
STABLE_LABEL = "stable"


class RoutingConfigError(ValueError):
    """The routing config is unusable. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: Collection[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        count = len(self.problems)
        heading = f"{source}: {count} problem{'s' if count != 1 else ''}"
        super().__init__("\n  ".join([heading, *self.problems]))


def semver_key(text: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key with SemVer precedence (a pre-release sorts before its release)."""
    match = SEMVER_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), 0, ids)


def show(value: object) -> str:
    """A value as it would be written in TOML, shortened for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except ValueError:  # a circular structure cannot come from TOML; be safe anyway
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _rule(
    message: str, path: str = "", value: object = None, *, shown: str | None = None
) -> PydanticCustomError:
    """A rule violation; ``path`` is relative to the object being validated.

    ``shown`` replaces the TOML rendering of ``value`` (for a computed bad value).
    """
    return PydanticCustomError(
        "routing_rule", "{message}",
        {"message": message, "path": path, "value": value,
         "shown": show(value) if shown is None else shown},
    )


# ---- field types ---------------------------------------------------------------------------


def _semver(value: str) -> str:
    if not SEMVER_RE.match(value):
        raise _rule("is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0)")
    return value


def _label(value: str) -> str:
    if not LABEL_RE.match(value):
        raise _rule(f"is not a label: must match {LABEL_RE.pattern}")
    return value


def _weight(value: int) -> int:
    if not 0 <= value <= 100:
        raise _rule("must be an integer from 0 to 100")
    return value


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise _rule("must be a number from 0 to 1")
    return float(value)


def _sticky_key(value: str) -> str:
    if not METADATA_KEY_RE.match(value):
        raise _rule(f"is not a request metadata key: must match {METADATA_KEY_RE.pattern}")
    if value.endswith("-bin") or value.startswith("grpc-"):
        raise _rule("must be a text metadata key (no -bin suffix, no grpc- prefix)")
    if value == PIN_HEADER:
        raise _rule(f"{PIN_HEADER} pins a version; it cannot also be the sticky key")
    return value


def _model_name(value: str) -> str:
    if not MODEL_NAME_RE.match(value):
        raise _rule(f"is not a model name: must match {MODEL_NAME_RE.pattern}")
    return value


def _duration(value: str | int) -> float:
    """``"90s"``, ``"5m"``, ``"1h"`` or whole seconds, as seconds."""
    if isinstance(value, bool):
        raise _rule("must be a duration such as \"30s\", \"5m\" or \"1h\"")
    if isinstance(value, int):
        seconds = value
    else:
        match = DURATION_RE.match(value)
        if match is None:
            raise _rule("must be a duration such as \"30s\", \"5m\" or \"1h\"")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 <= seconds <= 7 * 86400:
        raise _rule("must be from 0 seconds to 7 days")
    return float(seconds)


# How a duration is written in the file: "90s", "5m", "1h", or whole seconds.
_WrittenDuration = Annotated[str, Strict()] | Annotated[int, Strict()]


class _DurationSchema:
    """Makes ``Annotated[float, _DurationSchema()]`` a duration field: validated as a
    :data:`_WrittenDuration` and converted by :func:`_duration`, so the field holds
    seconds as a float (and is typed so); serialized as that float."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            _duration, handler.generate_schema(_WrittenDuration),
            serialization=core_schema.simple_ser_schema("float"))


def _rule_name(value: str) -> str:
    if not RULE_NAME_RE.match(value):
        raise _rule(f"is not a rule name: must match {RULE_NAME_RE.pattern}")
    return value


Version = Annotated[str, Strict(), AfterValidator(_semver)]
Label = Annotated[str, Strict(), AfterValidator(_label)]
Weight = Annotated[int, Strict(), AfterValidator(_weight)]
Fraction = Annotated[float, Strict(), AfterValidator(_fraction)]
StickyKey = Annotated[str, Strict(), AfterValidator(_sticky_key)]
ModelName = Annotated[str, Strict(), AfterValidator(_model_name)]
Duration = Annotated[float, _DurationSchema()]
RuleName = Annotated[str, Strict(), AfterValidator(_rule_name)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouteConfig(_Frozen):
    """One weighted route: ``{ version = "1.2.0", weight = 10, label = "canary" }``."""

    version: Version
    weight: Weight
    label: Label | None = None


class ShadowConfig(_Frozen):
    """``shadow = { version = "1.0.0", fraction = 0.05 }``: also score a sample with it."""

    version: Version
    fraction: Fraction


class Metric(StrEnum):
    """What an alert rule measures, per model version (docs/routing.md has the units)."""

    ERROR_RATE = "error_rate"  # share of calls ending in a status of `status_class`
    LATENCY = "latency"  # the `quantile` of Predict latency, seconds
    FEATURE_PSI = "feature_psi"  # PSI of `feature`, or the largest over features
    PREDICTION_PSI = "prediction_psi"  # PSI of the predictions against training
    MAE = "mae"  # mean absolute error over reported outcomes, days
    MAE_RATIO = "mae_ratio"  # MAE divided by the stable version's MAE in the same window
    COVERAGE = "coverage"  # share of outcomes inside the predicted interval
    ON_TIME = "on_time"  # share of deliveries that arrived by the predicted date
    SHADOW_DIVERGENCE = "shadow_divergence"  # mean |shadow - served| median, days


# Metrics read over the rule's `window`; the drift ones use the newest closed drift window.
WINDOWED = frozenset({Metric.ERROR_RATE, Metric.LATENCY, Metric.MAE, Metric.MAE_RATIO,
                      Metric.COVERAGE, Metric.ON_TIME, Metric.SHADOW_DIVERGENCE})


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Action(StrEnum):
    NOTIFY = "notify"
    ROLLBACK = "rollback"  # take the version's traffic away (an override to stable)


class StatusClass(StrEnum):
    SERVER = "server"  # UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, ...
    CLIENT = "client"  # INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, ...
    ANY = "any"  # everything but OK


OPERATORS = (">", ">=", "<", "<=")
MODEL_SCOPE = "model"


class AlertRule(_Frozen):
    """``[[models.<name>.alerts]]``: one condition on one metric of a model's versions.

    ``scope`` is ``"model"`` (each version that takes traffic, and the shadow for
    ``shadow_divergence``), a label (``"canary"``) or a version (``"1.2.0"``).
    """

    name: RuleName
    metric: Metric
    scope: Annotated[str, Strict()] = MODEL_SCOPE
    op: Annotated[str, Strict()]
    threshold: Annotated[float, Strict()]
    for_s: Duration = Field(0.0, alias="for")
    window: Duration = 300.0
    min_samples: Annotated[int, Strict()] = 100
    severity: Severity = Severity.WARNING
    action: Action = Action.NOTIFY
    feature: Annotated[str, Strict()] | None = None
    # Features a largest-PSI rule skips: calendar features (day of year, holidays) differ
    # from a multi-year training mix in every short window, by design.
    exclude: tuple[Annotated[str, Strict()], ...] = ()
    quantile: Annotated[float, Strict()] = 0.99
    status_class: StatusClass = StatusClass.SERVER
    summary: Annotated[str, Strict(), Field(max_length=200)] = ""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)

    @model_validator(mode="after")
    def _check(self) -> AlertRule:
        if self.op not in OPERATORS:
            raise _rule(f"must be one of {', '.join(OPERATORS)}", "op", self.op)
        if self.threshold != self.threshold or abs(self.threshold) == float("inf"):
            raise _rule("must be a finite number", "threshold", self.threshold)
        if self.scope != MODEL_SCOPE and not (SEMVER_RE.match(self.scope)
                                              or LABEL_RE.match(self.scope)):
            raise _rule(f"must be {MODEL_SCOPE!r}, a label or a version", "scope", self.scope)
        if self.min_samples < 1:
            raise _rule("must be at least 1: a rule never judges on no data",
                        "min_samples", self.min_samples)
        if self.feature is not None and self.metric != Metric.FEATURE_PSI:
            raise _rule(f"only applies to metric {Metric.FEATURE_PSI.value!r}",
                        "feature", self.feature)
        if self.exclude and (self.metric != Metric.FEATURE_PSI or self.feature is not None):
            raise _rule(f"only applies to metric {Metric.FEATURE_PSI.value!r} without "
                        "`feature`", "exclude", list(self.exclude))
        if not 0.5 <= self.quantile < 1.0:
            raise _rule("must be from 0.5 to below 1", "quantile", self.quantile)
        if self.window <= 0 and self.metric in WINDOWED:
            raise _rule("must be longer than 0 seconds", "window", self.window)
        if self.action == Action.ROLLBACK and self.scope == STABLE_LABEL:
            raise _rule("the stable version is what a rollback goes back to; it cannot be "
                        "rolled back", "action", self.action.value)
        return self


class ModelConfig(_Frozen):
    """``[models.<name>]``: how one model's traffic is split, and its alert rules."""

    stable: Version
    sticky_key: StickyKey = DEFAULT_STICKY_KEY
    routes: tuple[RouteConfig, ...]
    shadow: ShadowConfig | None = None
    alerts: tuple[AlertRule, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if not self.routes:
            raise _rule("at least one route is required", "routes", [])
        seen_versions: dict[str, int] = {}
        seen_labels: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            first = seen_versions.setdefault(route.version, i)
            if first != i:
                raise _rule(f"duplicates routes[{first}].version",
                            f"routes[{i}].version", route.version)
            if route.label is not None:
                first = seen_labels.setdefault(route.label, i)
                if first != i:
                    raise _rule(f"duplicates routes[{first}].label",
                                f"routes[{i}].label", route.label)
        total = sum(r.weight for r in self.routes)
        if total != 100:
            terms = " + ".join(str(r.weight) for r in self.routes)
            raise _rule("weights must sum to 100", "routes[*].weight", total,
                        shown=f"{terms} = {total}" if len(self.routes) > 1 else str(total))
        index = seen_versions.get(self.stable)
        if index is None:
            raise _rule("is not one of the routes; the stable version must be a route with "
                        "weight > 0", "stable", self.stable)
        if self.routes[index].weight == 0:
            raise _rule(f"has no traffic (routes[{index}].weight = 0); the stable version "
                        "must have weight > 0", "stable", self.stable)
        labelled = seen_labels.get(STABLE_LABEL)
        if labelled is not None and labelled != index:
            raise _rule(f"the {STABLE_LABEL} label must be on the stable version "
                        f"{self.stable}, not {self.routes[labelled].version}",
                        f"routes[{labelled}].label", STABLE_LABEL)
        if self.shadow is not None and self.shadow.version == self.stable:
            raise _rule("is the stable version; a shadow must be another version",
                        "shadow.version", self.shadow.version)
        self._check_alerts()
        return self

    def _check_alerts(self) -> None:
        names: dict[str, int] = {}
        labels = self.labels()
        for i, alert in enumerate(self.alerts):
            first = names.setdefault(alert.name, i)
            if first != i:
                raise _rule(f"duplicates alerts[{first}].name", f"alerts[{i}].name", alert.name)
            scope = alert.scope
            if scope == MODEL_SCOPE:
                continue
            version = labels.get(scope, scope)
            if SEMVER_RE.match(scope) is None and scope not in labels:
                raise _rule(f"is not a label of this model (labels: {', '.join(sorted(labels))})",
                            f"alerts[{i}].scope", scope)
            if version not in self.versions():
                raise _rule("is not a version this model routes or shadows",
                            f"alerts[{i}].scope", scope)
            if alert.action == Action.ROLLBACK and version == self.stable:
                raise _rule(f"names the stable version {self.stable}; a rollback goes back "
                            "to it and cannot take it out", f"alerts[{i}].action",
                            alert.action.value)

    def weight_of(self, version: str) -> int:
        return next((r.weight for r in self.routes if r.version == version), 0)

    def labels(self) -> dict[str, str]:
        """Label -> version, with the implicit ``stable`` label when no route declares it."""
        labels = {r.label: r.version for r in self.routes if r.label is not None}
        labels.setdefault(STABLE_LABEL, self.stable)
        return labels

    def versions(self) -> tuple[str, ...]:
        """Every version this model's config names (routes and shadow), oldest first."""
        named = {r.version for r in self.routes}
        if self.shadow is not None:
            named.add(self.shadow.version)
        return tuple(sorted(named, key=semver_key))


class RoutingConfig(_Frozen):
    """The whole file: the schema version and one ``[models.<name>]`` table per model."""

    version: Annotated[int, Strict()]
    models: Mapping[ModelName, ModelConfig] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise _rule(f"is not a supported schema version (supported: {SCHEMA_VERSION})")
        return value

    @field_validator("models", mode="after")
    @classmethod
    def _freeze(cls, value: Mapping[str, ModelConfig]) -> Mapping[str, ModelConfig]:
        return MappingProxyType(dict(value))

    @field_serializer("models")
    def _dump_models(self, value: Mapping[str, ModelConfig]) -> dict[str, ModelConfig]:
        return dict(value)


# ---- messages ------------------------------------------------------------------------------

_ALLOWED: Mapping[str, tuple[str, ...]] = {
    "config": tuple(RoutingConfig.model_fields),
    "model": tuple(ModelConfig.model_fields),
    "route": tuple(RouteConfig.model_fields),
    "shadow": tuple(ShadowConfig.model_fields),
    "alert": tuple(f.alias or name for name, f in AlertRule.model_fields.items()),
}


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "[key]":
            out += f".{part}" if out else part
    return out


def _owner(loc: tuple[int | str, ...]) -> str:
    """Which table a location's last key belongs to, for 'allowed keys' hints."""
    parent = loc[:-1]
    if len(parent) == 0:
        return "config"
    if len(parent) == 2 and parent[0] == "models":
        return "model"
    if len(parent) == 4 and parent[2] == "routes":
        return "route"
    if len(parent) == 3 and parent[2] == "shadow":
        return "shadow"
    if len(parent) == 4 and parent[2] == "alerts":
        return "alert"
    return ""


def _describe(error: Mapping[str, Any]) -> str:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "routing_rule":
        sub = str(ctx.get("path", ""))
        if sub:
            joined = _path(loc)
            path = f"{joined}.{sub}" if joined and not sub.startswith("[") else joined + sub
            return f"{path} = {ctx['shown']}: {ctx['message']}"
        if loc and loc[-1] == "[key]":
            return f"{_path(loc[:-1])}: key {show(error['input'])} {ctx['message']}"
        return f"{_path(loc)} = {show(error['input'])}: {ctx['message']}"
    path = _path(loc)
    if kind == "extra_forbidden":
        allowed = ", ".join(_ALLOWED.get(_owner(loc), ()))
        return f"{path}: unknown key" + (f" (allowed here: {allowed})" if allowed else "")
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "too_short" and path == "models":
        return "models: at least one [models.<name>] table is required"
    if kind == "int_type":
        return f"{path} = {show(error['input'])}: must be an integer"
    if kind == "float_type":
        return f"{path} = {show(error['input'])}: must be a number"
    if kind == "string_type":
        return f"{path} = {show(error['input'])}: must be a string"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{path} = {show(error['input'])}: must be a table"
    if kind in ("tuple_type", "list_type"):
        return f"{path} = {show(error['input'])}: must be an array of tables"
    return f"{path} = {show(error['input'])}: {error['msg']}"


def parse_routing(text: str, source: str = "<routing>") -> RoutingConfig:
    """Parse and validate a routing config; raise :class:`RoutingConfigError` when unusable."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message carries "(at line L, column C)"
        raise RoutingConfigError(source, [f"not valid TOML: {err}"]) from None
    try:
        return RoutingConfig.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors(include_url=False)]
        raise RoutingConfigError(source, problems) from None


def load_routing(path: Path | str) -> RoutingConfig:
    """Read and parse a routing file (UTF-8). Errors name the path."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise RoutingConfigError(source, [f"cannot read: {err.strerror or err}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RoutingConfigError(source, [f"not UTF-8 (byte {err.start})"]) from None
    return parse_routing(text, source)


def content_hash(content: str | bytes) -> str:
    """sha256 hex of the file's bytes (text is encoded as UTF-8)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


def version_fields(config: RoutingConfig) -> dict[tuple[str, str], tuple[str, ...]]:
    """(model, version) -> the field paths that name it, in file order."""
    fields: dict[tuple[str, str], list[str]] = {}
    for name, model in config.models.items():
        for i, route in enumerate(model.routes):
            path = f"models.{name}.routes[{i}].version"
            fields.setdefault((name, route.version), []).append(path)
        if model.shadow is not None:
            fields.setdefault((name, model.shadow.version), []).append(
                f"models.{name}.shadow.version")
    return {key: tuple(paths) for key, paths in fields.items()}


def check_against_registry(
    config: RoutingConfig,
    available: Mapping[str, Collection[str]],
    failed: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Problems that make ``config`` unservable with this registry; empty when it is fine.

    ``available`` maps each model in the registry to its versions. ``failed`` maps
    model -> version -> why it failed to load, for callers that tried to load (the
    server does; a pull-request check may); those versions count as unusable.
    Each problem names the field path, the version and what exists, e.g.
    ``models.delivery_eta.routes[1].version: 1.2.0 is not in the registry
    (available: 1.0.0, 1.1.0)``.
    """
    failed = failed or {}
    problems: list[str] = []
    for name in config.models:
        if name not in available:
            known = ", ".join(sorted(available)) or "none"
            problems.append(f"models.{name}: model {name!r} is not in the registry "
                            f"(available: {known})")
    for (name, version), paths in version_fields(config).items():
        if name not in available:
            continue
        have = available[name]
        why = failed.get(name, {}).get(version)
        for path in paths:
            if version not in have:
                listed = ", ".join(sorted(have, key=semver_key)) or "none"
                problems.append(f"{path}: {version} is not in the registry (available: {listed})")
            elif why is not None:
                problems.append(f"{path}: {version} failed to load: {why}")
    return problems
