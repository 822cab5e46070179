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

Per-model tables that other owners read from the same file (alert rules, owned by
``server/monitoring/rules.py``) are not this module's: a caller sets them aside by name
(:func:`set_aside`) and :func:`check_routing` lists them among the keys allowed in a model
table; :func:`describe` renders their owners' pydantic errors the same way as ours.

This module imports only the standard library, pydantic and :mod:`models.naming`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from models.naming import MODEL_NAME_RE, SEMVER_RE, semver_key

SCHEMA_VERSION = 1
DEFAULT_STICKY_KEY = "x-routing-key"
PIN_HEADER = "x-model-version"

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


def rule_error(
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
        raise rule_error("is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0)")
    return value


def _label(value: str) -> str:
    if not LABEL_RE.match(value):
        raise rule_error(f"is not a label: must match {LABEL_RE.pattern}")
    return value


def _weight(value: int) -> int:
    if not 0 <= value <= 100:
        raise rule_error("must be an integer from 0 to 100")
    return value


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise rule_error("must be a number from 0 to 1")
    return float(value)


def _sticky_key(value: str) -> str:
    if not METADATA_KEY_RE.match(value):
        raise rule_error(f"is not a request metadata key: must match {METADATA_KEY_RE.pattern}")
    if value.endswith("-bin") or value.startswith("grpc-"):
        raise rule_error("must be a text metadata key (no -bin suffix, no grpc- prefix)")
    if value == PIN_HEADER:
        raise rule_error(f"{PIN_HEADER} pins a version; it cannot also be the sticky key")
    return value


def _model_name(value: str) -> str:
    if not MODEL_NAME_RE.match(value):
        raise rule_error(f"is not a model name: must match {MODEL_NAME_RE.pattern}")
    return value


Version = Annotated[str, Strict(), AfterValidator(_semver)]
Label = Annotated[str, Strict(), AfterValidator(_label)]
Weight = Annotated[int, Strict(), AfterValidator(_weight)]
Fraction = Annotated[float, Strict(), AfterValidator(_fraction)]
StickyKey = Annotated[str, Strict(), AfterValidator(_sticky_key)]
ModelName = Annotated[str, Strict(), AfterValidator(_model_name)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouteConfig(Frozen):
    """One weighted route: ``{ version = "1.2.0", weight = 10, label = "canary" }``."""

    version: Version
    weight: Weight
    label: Label | None = None


class ShadowConfig(Frozen):
    """``shadow = { version = "1.0.0", fraction = 0.05 }``: also score a sample with it."""

    version: Version
    fraction: Fraction


class ModelConfig(Frozen):
    """``[models.<name>]``: how one model's traffic is split."""

    stable: Version
    sticky_key: StickyKey = DEFAULT_STICKY_KEY
    routes: tuple[RouteConfig, ...]
    shadow: ShadowConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if not self.routes:
            raise rule_error("at least one route is required", "routes", [])
        seen_versions: dict[str, int] = {}
        seen_labels: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            first = seen_versions.setdefault(route.version, i)
            if first != i:
                raise rule_error(f"duplicates routes[{first}].version",
                            f"routes[{i}].version", route.version)
            if route.label is not None:
                first = seen_labels.setdefault(route.label, i)
                if first != i:
                    raise rule_error(f"duplicates routes[{first}].label",
                                f"routes[{i}].label", route.label)
        total = sum(r.weight for r in self.routes)
        if total != 100:
            terms = " + ".join(str(r.weight) for r in self.routes)
            raise rule_error("weights must sum to 100", "routes[*].weight", total,
                        shown=f"{terms} = {total}" if len(self.routes) > 1 else str(total))
        index = seen_versions.get(self.stable)
        if index is None:
            raise rule_error("is not one of the routes; the stable version must be a route with "
                        "weight > 0", "stable", self.stable)
        if self.routes[index].weight == 0:
            raise rule_error(f"has no traffic (routes[{index}].weight = 0); the stable version "
                        "must have weight > 0", "stable", self.stable)
        labelled = seen_labels.get(STABLE_LABEL)
        if labelled is not None and labelled != index:
            raise rule_error(f"the {STABLE_LABEL} label must be on the stable version "
                        f"{self.stable}, not {self.routes[labelled].version}",
                        f"routes[{labelled}].label", STABLE_LABEL)
        if self.shadow is not None and self.shadow.version == self.stable:
            raise rule_error("is the stable version; a shadow must be another version",
                        "shadow.version", self.shadow.version)
        return self

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


class RoutingConfig(Frozen):
    """The whole file: the schema version and one ``[models.<name>]`` table per model."""

    version: Annotated[int, Strict()]
    models: Mapping[ModelName, ModelConfig] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise rule_error(f"is not a supported schema version (supported: {SCHEMA_VERSION})")
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
}

Loc = tuple[int | str, ...]


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "[key]":
            out += f".{part}" if out else part
    return out


def _owner(loc: Loc) -> str:
    """Which of this module's tables a location's last key belongs to."""
    parent = loc[:-1]
    if len(parent) == 0:
        return "config"
    if len(parent) == 2 and parent[0] == "models":
        return "model"
    if len(parent) == 4 and parent[2] == "routes":
        return "route"
    if len(parent) == 3 and parent[2] == "shadow":
        return "shadow"
    return ""


def describe(error: Mapping[str, Any], prefix: Loc = (),
             allowed: Collection[str] | None = None) -> str:
    """One pydantic error as ``path = value: rule``.

    ``prefix`` is where the validated object sits in the file (for tables other owners
    validate); ``allowed`` the keys of the table an unknown key was found in (None: work
    it out from the location, for this module's tables).
    """
    loc: Loc = prefix + tuple(error["loc"])
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
        keys = ", ".join(_ALLOWED.get(_owner(loc), ()) if allowed is None else allowed)
        return f"{path}: unknown key" + (f" (allowed here: {keys})" if keys else "")
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


def read_toml(text: str, source: str = "<routing>") -> dict[str, Any]:
    """The file's TOML document; a syntax error names its line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message carries "(at line L, column C)"
        raise RoutingConfigError(source, [f"not valid TOML: {err}"]) from None


def set_aside(raw: Mapping[str, Any], keys: Collection[str],
              ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``raw`` without the per-model tables named by ``keys``, and those tables
    (model -> key -> value): the parts of the file other owners validate."""
    models = raw.get("models")
    if not isinstance(models, Mapping) or not keys:
        return dict(raw), {}
    kept: dict[str, Any] = {}
    aside: dict[str, dict[str, Any]] = {}
    for name, table in models.items():
        if isinstance(table, Mapping):
            aside_here = {k: v for k, v in table.items() if k in keys}
            if aside_here:
                aside[name] = aside_here
            table = {k: v for k, v in table.items() if k not in keys}
        kept[name] = table
    return {**raw, "models": kept}, aside


def check_routing(raw: Mapping[str, Any], other_keys: Collection[str] = (),
                  ) -> tuple[RoutingConfig | None, list[str]]:
    """The config and no problems, or None and every problem. ``other_keys`` are
    per-model tables someone else owns (already set aside): allowed, never read."""
    try:
        return RoutingConfig.model_validate(raw), []
    except ValidationError as err:
        problems = []
        for error in err.errors(include_url=False):
            loc = tuple(error["loc"])
            allowed = ((*_ALLOWED["model"], *other_keys)
                       if error["type"] == "extra_forbidden" and _owner(loc) == "model"
                       else None)
            problems.append(describe(error, allowed=allowed))
        return None, problems


def parse_routing(text: str, source: str = "<routing>") -> RoutingConfig:
    """Parse and validate a routing config that holds only routes; raise
    :class:`RoutingConfigError` when unusable (``server.serving.routing_file`` reads a
    whole file, alert rules included)."""
    config, problems = check_routing(read_toml(text, source))
    if config is None:
        raise RoutingConfigError(source, problems)
    return config


def read_text(path: Path | str) -> str:
    """A routing file's text (UTF-8). Errors name the path."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise RoutingConfigError(source, [f"cannot read: {err.strerror or err}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RoutingConfigError(source, [f"not UTF-8 (byte {err.start})"]) from None


def load_routing(path: Path | str) -> RoutingConfig:
    """Read and parse a routing file that holds only routes. Errors name the path."""
    return parse_routing(read_text(path), str(path))


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
