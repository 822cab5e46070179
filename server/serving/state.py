"""What the server serves right now: one immutable snapshot, replaced whole.

Readers take ``state.current`` once per request and keep it; writers derive the
next snapshot from the current one under a lock (so a rollback and a reload
racing each other cannot drop one another's change) and publish it with one
attribute assignment, which readers see atomically.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from models.calendar import utc_now
from models.loaded import LoadedVersion
from models.naming import semver_key
from router.table import RoutingTable, UnknownVersion
from server.monitoring.rules import AlertRule
from server.telemetry.observe import Observer

Key = tuple[str, str]  # (model, version)


@dataclass(frozen=True, slots=True)
class Snapshot:
    table: RoutingTable
    versions: Mapping[str, Mapping[str, LoadedVersion]]  # model -> version -> loaded
    # model -> every feature name of its served versions (rows may carry any of them)
    field_names: Mapping[str, frozenset[str]]
    source: str = ""  # the routing file, or "" when every registry version is served
    content_hash: str = ""
    loaded_at: str = ""
    generation: int = 0
    # model -> its alert rules (from the routing file; none without one)
    alerts: Mapping[str, tuple[AlertRule, ...]] = field(
        default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(cls, table: RoutingTable, loaded: Mapping[Key, LoadedVersion], *,
              source: str = "", content_hash: str = "",
              alerts: Mapping[str, tuple[AlertRule, ...]] | None = None) -> Snapshot:
        by_model: dict[str, dict[str, LoadedVersion]] = {}
        for (model, version), value in loaded.items():
            by_model.setdefault(model, {})[version] = value
        versions = MappingProxyType({m: MappingProxyType(vs) for m, vs in by_model.items()})
        fields = MappingProxyType({
            m: frozenset().union(*(v.feature_names for v in vs.values()))
            for m, vs in versions.items()
        })
        return cls(table, versions, fields, source, content_hash, utc_now(),
                   alerts=MappingProxyType(dict(alerts or {})))

    @classmethod
    def of(cls, loaded: Mapping[Key, LoadedVersion]) -> Snapshot:
        """Serve every loaded version; the newest of each model is the default."""
        by_model: dict[str, list[str]] = {}
        for model, version in loaded:
            by_model.setdefault(model, []).append(version)
        ordered = {m: sorted(vs, key=semver_key) for m, vs in by_model.items()}
        return cls.build(RoutingTable.from_versions(ordered), loaded)

    def with_table(self, table: RoutingTable) -> Snapshot:
        """This snapshot with ``table``; itself when the table is unchanged, so that
        publishing it starts no new generation."""
        if table == self.table:
            return self
        return dataclasses.replace(self, table=table, loaded_at=utc_now())

    def keys(self) -> list[Key]:
        return [(m, v) for m, vs in self.versions.items() for v in vs]

    def version(self, model: str, version: str) -> LoadedVersion:
        try:
            return self.versions[model][version]
        except KeyError:
            # The table only routes to loaded versions; this guards a broken invariant.
            raise UnknownVersion(model, version, sorted(self.versions.get(model, {}))) from None


class ServingState:
    def __init__(self, initial: Snapshot) -> None:
        self._lock = threading.Lock()
        self._current = dataclasses.replace(initial, generation=1)

    @property
    def current(self) -> Snapshot:
        return self._current

    def register_metrics(self, observer: Observer) -> None:
        """What is served and how traffic is split, read from the snapshot in force."""
        observer.observe_gauge(
            "waybill.model.loaded", "{version}", "1 for each model version the server serves",
            lambda: [(1, {"model": m, "version": v})
                     for m, vs in self.current.versions.items() for v in vs])
        observer.observe_gauge(
            "waybill.routing.generation", "{generation}",
            "Generation of the routing snapshot in force (grows on every reload or override)",
            lambda: [(self.current.generation, {})])
        observer.observe_gauge(
            "waybill.model.route_weight", "{percent}",
            "Share of unpinned traffic in force per version, percent (0 once rolled back)",
            lambda: [(routes.effective_weight(v), {"model": m, "version": v})
                     for m, routes in self.current.table.models.items()
                     for v in routes.versions])
        # The file's weights, whatever an override says: the versions alert rules watch
        # (a rolled-back canary stays watched: server/monitoring/alerts.scoped_versions).
        observer.observe_gauge(
            "waybill.model.configured_weight", "{percent}",
            "Share of unpinned traffic the routing file gives each version, percent",
            lambda: [(r.weight, {"model": m, "version": r.version})
                     for m, routes in self.current.table.models.items()
                     for r in routes.routes])
        observer.observe_gauge(
            "waybill.model.stable", "{version}", "1 for the stable version of each model",
            lambda: [(1, {"model": m, "version": routes.stable})
                     for m, routes in self.current.table.models.items()])
        # State, not a count of events: an override restored after a restart still shows,
        # so an alert on it does not resolve because a process started again.
        observer.observe_gauge(
            "waybill.routing.override", "{override}",
            "1 for each model rolled back to its stable version, while the override holds",
            lambda: [(1, {"model": m, "actor": routes.override.actor})
                     for m, routes in self.current.table.models.items()
                     if routes.override is not None])

    def update(self, derive: Callable[[Snapshot], Snapshot]) -> Snapshot:
        """Publish ``derive(current)`` as the next generation; return it."""
        with self._lock:
            current = self._current
            nxt = derive(current)
            if nxt is not current:
                nxt = dataclasses.replace(nxt, generation=current.generation + 1)
                self._current = nxt
            return nxt
