"""The routing table snapshot and the version choice for one request.

A :class:`RoutingTable` is immutable: the server publishes a new one to change
routing, and each request reads the current one once. :func:`choose` is a pure
function of the table and the request's facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class RouteReason(StrEnum):
    PINNED = "pinned"  # the request named an exact version
    LABEL = "label"  # the request named a label such as "stable"
    DEFAULT = "default"  # no pin and no weighted routes: the default version
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


@dataclass(frozen=True, slots=True)
class Decision:
    version: str
    reason: RouteReason


@dataclass(frozen=True, slots=True)
class ModelRoutes:
    """Routes of one model: the versions that can serve and the labels naming them."""

    name: str
    versions: tuple[str, ...]  # oldest first
    default: str
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.default not in self.versions:
            raise ValueError(f"{self.name}: default {self.default!r} is not among {self.versions}")
        for label, version in self.labels.items():
            if version not in self.versions:
                raise ValueError(f"{self.name}: label {label!r} points at unknown {version!r}")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def labels_of(self, version: str) -> tuple[str, ...]:
        return tuple(sorted(label for label, v in self.labels.items() if v == version))


@dataclass(frozen=True, slots=True)
class RoutingTable:
    models: Mapping[str, ModelRoutes]

    @classmethod
    def from_versions(cls, versions: Mapping[str, Sequence[str]]) -> RoutingTable:
        """A table with no weights: the newest version is the default and is labelled stable.

        ``versions`` lists each model's versions oldest first (semver order).
        """
        routes = {
            name: ModelRoutes(name, tuple(vs), vs[-1], {"stable": vs[-1]})
            for name, vs in versions.items()
            if vs
        }
        return cls(MappingProxyType(routes))

    def routes(self, model: str) -> ModelRoutes:
        try:
            return self.models[model]
        except KeyError:
            raise UnknownModel(model, sorted(self.models)) from None


def choose(table: RoutingTable, model: str, pin: str | None) -> Decision:
    """Pick the version for one request: an exact pin, then a label, then the default."""
    routes = table.routes(model)
    if pin:
        if pin in routes.versions:
            return Decision(pin, RouteReason.PINNED)
        labelled = routes.labels.get(pin)
        if labelled is not None:
            return Decision(labelled, RouteReason.LABEL)
        raise UnknownVersion(model, pin, [*routes.versions, *sorted(routes.labels)])
    return Decision(routes.default, RouteReason.DEFAULT)
