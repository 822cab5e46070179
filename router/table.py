"""The routing table snapshot and the version choice for one request.

A :class:`RoutingTable` is immutable: the server publishes a new one to change
routing (a config reload or a rollback override), and each request reads the
current one once. Everything here is a pure function of a table and the
request's facts; randomness comes in as an argument (``u``), never from inside.

Choice order for one request (:func:`choose`):

1. an explicit pin (``x-model-version`` or the request's ``version`` field):
   an exact version -> ``PINNED``; a label -> ``LABEL`` (or ``OVERRIDE`` when the
   label names a version an override rolled back: it resolves to stable);
   anything else -> :class:`UnknownVersion`;
2. an override in force -> the stable version, ``OVERRIDE``;
3. a single version with weight > 0 -> that version, ``DEFAULT``;
4. a routing key -> sticky weighted choice (:mod:`router.sticky`), ``STICKY``;
5. otherwise the weighted random choice from ``u``, ``WEIGHTED``.

Errors::

    Exception
    ├── RoutingError          the request names what the table lacks -> NOT_FOUND
    │   ├── UnknownModel      lists the served models
    │   └── UnknownVersion    lists the versions and labels
    └── OverrideRefused       a rollback would send traffic nowhere -> FAILED_PRECONDITION
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from models.naming import semver_key
from router.config import DEFAULT_STICKY_KEY, STABLE_LABEL, RoutingConfig
from router.sticky import Rendezvous


class RouteReason(StrEnum):
    PINNED = "pinned"  # the request named an exact version
    LABEL = "label"  # the request named a label such as "stable"
    DEFAULT = "default"  # no pin and only one version with traffic: that version
    STICKY = "sticky"  # weighted choice fixed by the routing key
    WEIGHTED = "weighted"  # weighted random choice
    OVERRIDE = "override"  # a rollback override decided


class RoutingError(Exception):
    """The request names something the table does not have; maps to NOT_FOUND."""


class UnknownModel(RoutingError):
    def __init__(self, model: str, known: Sequence[str]) -> None:
        self.model = model
        self.known = tuple(known)
        listed = ", ".join(self.known) or "none"
        super().__init__(f"model {model!r} is not served; served models: {listed}")


class UnknownVersion(RoutingError):
    def __init__(self, model: str, version: str, known: Sequence[str]) -> None:
        self.model = model
        self.version = version
        self.known = tuple(known)
        super().__init__(
            f"model {model!r} has no version or label {version!r}; "
            f"available: {', '.join(self.known)}"
        )


class OverrideRefused(Exception):
    """A rollback cannot be applied (its target is not loaded); maps to FAILED_PRECONDITION."""


@dataclass(frozen=True, slots=True)
class Decision:
    version: str
    reason: RouteReason


@dataclass(frozen=True, slots=True)
class Route:
    """A configured route: the weight in the config file, before any override."""

    version: str
    weight: int
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Shadow:
    version: str
    fraction: float


@dataclass(frozen=True, slots=True)
class Override:
    """A rollback in force: every unpinned request goes to the stable version."""

    reason: str
    at: str  # RFC 3339 time it was made
    actor: str  # "admin" or the alert rule's name
    rolled_back: tuple[str, ...]  # versions that had traffic and lost it to stable


@dataclass(frozen=True, slots=True)
class ModelRoutes:
    """Routes of one model: versions, labels, weights, sticky key, shadow, override.

    ``default`` is the stable version. ``versions`` lists every version a pin may
    name (loaded versions), oldest first. ``routes`` are the configured weights;
    empty means "all traffic to ``default``". The choosers are precomputed here,
    once per snapshot.
    """

    name: str
    versions: tuple[str, ...]  # oldest first
    default: str
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    routes: tuple[Route, ...] = ()
    sticky_key: str = DEFAULT_STICKY_KEY
    shadow: Shadow | None = None
    override: Override | None = None
    # Precomputed from the fields above, once per snapshot, so a choice is a hash and
    # a few lookups: the weights in force (> 0 only, route order), cumulative bounds
    # for the weighted random choice, the sticky chooser, and the (immutable)
    # decisions themselves.
    weights: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)
    _bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _sticky: Rendezvous | None = field(init=False, repr=False, compare=False)
    _pins: Mapping[str, Decision] = field(init=False, repr=False, compare=False)
    _fixed: Decision = field(init=False, repr=False, compare=False)
    _by_key: Mapping[str, Decision] = field(init=False, repr=False, compare=False)
    _by_u: tuple[Decision, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name, versions = self.name, self.versions
        if self.default not in versions:
            raise ValueError(f"{name}: default {self.default!r} is not among {versions}")
        for label, version in self.labels.items():
            if version not in versions:
                raise ValueError(f"{name}: label {label!r} points at unknown {version!r}")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
        object.__setattr__(self, "routes", tuple(self.routes))
        if self.routes:
            routed = [r.version for r in self.routes]
            missing = [v for v in routed if v not in versions]
            if missing:
                raise ValueError(f"{name}: routes name versions not among {versions}: {missing}")
            if len(set(routed)) != len(routed):
                raise ValueError(f"{name}: a version has two routes: {routed}")
            if any(not 0 <= r.weight <= 100 for r in self.routes):
                raise ValueError(f"{name}: weights must be 0..100: {self.routes}")
            if sum(r.weight for r in self.routes) != 100:
                raise ValueError(f"{name}: weights must sum to 100: {self.routes}")
            if not any(r.version == self.default and r.weight > 0 for r in self.routes):
                raise ValueError(f"{name}: the stable version {self.default} has no weight")
        if self.shadow is not None:
            if self.shadow.version not in versions:
                raise ValueError(f"{name}: shadow {self.shadow.version!r} is not among {versions}")
            if not 0.0 <= self.shadow.fraction <= 1.0:
                raise ValueError(f"{name}: shadow fraction {self.shadow.fraction} is not in [0, 1]")
        if self.override is not None:
            weights: tuple[tuple[str, int], ...] = ((self.default, 100),)
        elif self.routes:
            weights = tuple((r.version, r.weight) for r in self.routes if r.weight > 0)
        else:
            weights = ((self.default, 100),)
        bounds, total = [], 0
        for _, weight in weights:
            total += weight
            bounds.append(total)
        sticky = Rendezvous(name, weights) if len(weights) > 1 else None
        rolled_back = self.override.rolled_back if self.override is not None else ()
        pins = {
            label: (Decision(self.default, RouteReason.OVERRIDE) if version in rolled_back
                    else Decision(version, RouteReason.LABEL))
            for label, version in self.labels.items()
        }
        pins.update((v, Decision(v, RouteReason.PINNED)) for v in versions)  # versions win
        # The answer when there is nothing to choose (an override leaves one weight,
        # so it never has a sticky chooser).
        fixed = (Decision(self.default, RouteReason.OVERRIDE) if self.override is not None
                 else Decision(weights[0][0], RouteReason.DEFAULT))
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "_bounds", tuple(bounds))
        object.__setattr__(self, "_sticky", sticky)
        object.__setattr__(self, "_pins", MappingProxyType(pins))
        object.__setattr__(self, "_fixed", fixed)
        object.__setattr__(self, "_by_key", MappingProxyType(
            {v: Decision(v, RouteReason.STICKY) for v, _ in weights}))
        object.__setattr__(self, "_by_u", tuple(Decision(v, RouteReason.WEIGHTED)
                                                for v, _ in weights))

    @property
    def stable(self) -> str:
        return self.default

    def labels_of(self, version: str) -> tuple[str, ...]:
        return tuple(sorted(label for label, v in self.labels.items() if v == version))

    def effective_weight(self, version: str) -> int:
        """The share of unpinned traffic, in percent, in force now (after any override)."""
        return next((w for v, w in self.weights if v == version), 0)


@dataclass(frozen=True, slots=True)
class RoutingTable:
    models: Mapping[str, ModelRoutes]

    @classmethod
    def from_versions(cls, versions: Mapping[str, Sequence[str]]) -> RoutingTable:
        """A table with no weights: the newest version is the default and is labelled stable.

        ``versions`` lists each model's versions oldest first (semver order).
        """
        routes = {
            name: ModelRoutes(name, tuple(vs), vs[-1], {STABLE_LABEL: vs[-1]})
            for name, vs in versions.items()
            if vs
        }
        return cls(MappingProxyType(routes))

    @classmethod
    def from_config(
        cls, config: RoutingConfig, loaded: Mapping[str, Collection[str]] | None = None
    ) -> RoutingTable:
        """The table a routing config describes.

        ``loaded`` (model -> loaded versions), when given, must hold every version the
        config names (check with :func:`router.config.check_against_registry` first;
        a ``ValueError`` here means that step was skipped). Every loaded version can
        then be pinned, and loaded models the config does not mention are served as
        :meth:`from_versions` would (newest version, reason ``DEFAULT``). Without
        ``loaded`` the table holds exactly the versions the config names.
        """
        models: dict[str, ModelRoutes] = {}
        for name, model in config.models.items():
            named = model.versions()
            pinnable = set(named)
            if loaded is not None:
                have = loaded.get(name)
                if have is None:
                    raise ValueError(f"models.{name}: model {name!r} is not loaded")
                missing = [v for v in named if v not in have]
                if missing:
                    raise ValueError(f"models.{name}: versions {missing} are not loaded")
                pinnable.update(have)
            models[name] = ModelRoutes(
                name=name,
                versions=tuple(sorted(pinnable, key=semver_key)),
                default=model.stable,
                labels=model.labels(),
                routes=tuple(Route(r.version, r.weight, r.label) for r in model.routes),
                sticky_key=model.sticky_key,
                shadow=(Shadow(model.shadow.version, model.shadow.fraction)
                        if model.shadow is not None else None),
            )
        for name, versions in (loaded or {}).items():
            if name not in models and versions:
                ordered = tuple(sorted(versions, key=semver_key))
                models[name] = ModelRoutes(name, ordered, ordered[-1], {STABLE_LABEL: ordered[-1]})
        return cls(MappingProxyType(dict(sorted(models.items()))))

    def routes(self, model: str) -> ModelRoutes:
        try:
            return self.models[model]
        except KeyError:
            raise UnknownModel(model, sorted(self.models)) from None

    def replace(self, routes: ModelRoutes) -> RoutingTable:
        """A new table with one model's routes replaced."""
        self.routes(routes.name)
        return RoutingTable(MappingProxyType({**self.models, routes.name: routes}))


def _pinned(routes: ModelRoutes, model: str, pin: str) -> Decision:
    # Versions -> PINNED; labels -> LABEL, or OVERRIDE (to stable) for a label
    # whose version an override rolled back: precomputed in ModelRoutes._pins.
    decision = routes._pins.get(pin)
    if decision is None:
        raise UnknownVersion(model, pin, [*routes.versions, *sorted(routes.labels)])
    return decision


def choose(
    table: RoutingTable,
    model: str,
    pin: str | None = None,
    routing_key: str | None = None,
    u: float | None = None,
) -> Decision:
    """Pick the version for one request (order in the module docstring).

    ``routing_key`` is the value of the model's sticky key (``x-routing-key`` or the
    request's ``routing_key`` field); empty means none. ``u`` is a uniform number in
    [0, 1) the caller draws (``random.random()``); it is used only for the weighted
    random choice, and a ``ValueError`` says so when that choice needs it and it is
    missing or out of range.
    """
    routes = table.routes(model)
    if pin:
        return _pinned(routes, model, pin)
    sticky = routes._sticky
    if sticky is None:  # an override, or a single version with traffic
        return routes._fixed
    if routing_key:
        return routes._by_key[sticky.choose(routing_key)]
    if u is None or not 0.0 <= u < 1.0:
        raise ValueError(f"{model}: a weighted random choice needs u in [0, 1), got {u!r}")
    return routes._by_u[bisect.bisect_right(routes._bounds, u * 100.0)]


def resolve(table: RoutingTable, model: str, pin: str | None) -> Decision:
    """What a pin names, or the stable version when there is none (for describing a
    model, e.g. GetModel); never a weighted choice."""
    routes = table.routes(model)
    if pin:
        return _pinned(routes, model, pin)
    return Decision(routes.default, RouteReason.DEFAULT)


def shadow_for(
    table: RoutingTable, model: str, u: float, served: str | None = None
) -> str | None:
    """The version that should also score this request, or None.

    ``u`` is a uniform number in [0, 1) the caller draws, independent of the one
    given to :func:`choose`; a request is sampled when ``u < fraction``. Nothing is
    shadowed when the request was served by the shadow version itself (``served``).
    """
    shadow = table.routes(model).shadow
    if shadow is None or shadow.version == served or not u < shadow.fraction:
        return None
    return shadow.version


def with_override(
    table: RoutingTable,
    model: str,
    reason: str,
    at: str,
    *,
    actor: str = "admin",
    loaded: Collection[str] | None = None,
) -> RoutingTable:
    """Roll ``model`` back: every version but stable gets weight 0, all traffic to stable.

    Idempotent: when an override is already in force, or no version but stable has
    traffic (nothing to roll back), the same table object is returned unchanged
    (``result is table`` means "nothing changed"; the first override's reason and
    time are kept). ``loaded``, when given, lists the versions that can serve; the
    override is refused rather than send traffic to a stable version that is not among
    them. Publishing the returned table is the atomic step: a request sees the old
    weights or the new, never a mix.
    """
    routes = table.routes(model)
    if routes.override is not None:
        return table
    if loaded is not None and routes.default not in loaded:
        raise OverrideRefused(
            f"model {model!r}: cannot roll back to stable {routes.default}: it is not loaded"
        )
    rolled_back = tuple(v for v, _ in routes.weights if v != routes.default)
    if not rolled_back:
        # An override that takes traffic from no version changes nothing a request sees;
        # recording it would report a rollback that never happened.
        return table
    override = Override(reason=reason, at=at, actor=actor, rolled_back=rolled_back)
    return table.replace(dataclasses.replace(routes, override=override))


def without_override(table: RoutingTable, model: str) -> RoutingTable:
    """Clear ``model``'s override: the configured weights apply again, and every sticky
    key returns to the version it had before. Returns ``table`` itself when there
    was no override."""
    routes = table.routes(model)
    if routes.override is None:
        return table
    return table.replace(dataclasses.replace(routes, override=None))


def reapply_overrides(previous: RoutingTable, fresh: RoutingTable) -> RoutingTable:
    """Carry the overrides of the table in force over to a freshly loaded one
    (see :func:`restore_overrides` for when one is dropped)."""
    return restore_overrides(fresh, {name: routes.override
                                     for name, routes in previous.models.items()
                                     if routes.override is not None})


def restore_overrides(fresh: RoutingTable, overrides: Mapping[str, Override]) -> RoutingTable:
    """Apply overrides made against an earlier table (in force, or saved before a restart).

    An override outlives a config change until the config names a new canary: it
    is dropped for a model whose fresh config gives traffic to a non-stable
    version it did not roll back (a new canary, or a new stable with the old one
    kept as a route), or gives no traffic to any non-stable version (nothing left
    to hold back). Otherwise it is re-applied with its original reason, time, actor
    and rolled-back versions.
    """
    result = fresh
    for name, override in overrides.items():
        new = fresh.models.get(name)
        if new is None or new.override is not None:
            continue
        others = {v for v, _ in new.weights if v != new.default}
        if not others or not others <= set(override.rolled_back):
            continue
        result = result.replace(dataclasses.replace(new, override=override))
    return result
