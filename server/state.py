"""What the server serves right now: one immutable snapshot, replaced whole.

Readers take ``state.current`` once per request and keep it; writers publish a
new :class:`Snapshot`. Assigning one attribute is atomic in CPython, so readers
need no lock; the lock only orders concurrent writers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from models.artifact import semver_key
from models.loaded import LoadedVersion
from router.table import RoutingTable, UnknownVersion


@dataclass(frozen=True, slots=True)
class Snapshot:
    table: RoutingTable
    versions: Mapping[str, Mapping[str, LoadedVersion]]  # model -> version -> loaded
    # model -> every feature name of its served versions (rows may carry any of them)
    field_names: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, loaded: Mapping[str, Mapping[str, LoadedVersion]]) -> Snapshot:
        ordered = {
            name: sorted(by_version, key=semver_key) for name, by_version in loaded.items()
        }
        frozen = MappingProxyType(
            {name: MappingProxyType(dict(vs)) for name, vs in loaded.items() if vs}
        )
        fields = MappingProxyType({
            name: frozenset(f.name for v in vs.values() for f in v.manifest.features)
            for name, vs in frozen.items()
        })
        return cls(RoutingTable.from_versions(ordered), frozen, fields)

    def version(self, model: str, version: str) -> LoadedVersion:
        try:
            return self.versions[model][version]
        except KeyError:
            # The table only routes to loaded versions; this guards a broken invariant.
            raise UnknownVersion(model, version, sorted(self.versions.get(model, {}))) from None


class ServingState:
    def __init__(self, initial: Snapshot) -> None:
        self._lock = threading.Lock()
        self._current = initial

    @property
    def current(self) -> Snapshot:
        return self._current

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._current = snapshot
