"""Loaded model versions, shared by every snapshot that routes to them.

Reloads ask the catalog for the versions a new config needs: versions already
loaded are reused, new ones are loaded (and checked) before any snapshot can
route to them. After a new snapshot is published, versions it no longer
references leave the catalog; the memory goes when the last in-flight request
holding the old snapshot finishes (a finalizer logs that moment).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path

from models.artifact import ArtifactError
from models.loaded import LoadedVersion
from server.telemetry.observe import Observer

log = logging.getLogger("waybill.catalog")

Key = tuple[str, str]  # (model, version)


class LoadFailed(Exception):
    """One or more versions a config needs could not be loaded; nothing was published."""

    def __init__(self, failures: Mapping[Key, str]) -> None:
        self.failures = dict(failures)
        listed = "; ".join(f"{m} {v}: {why}" for (m, v), why in sorted(self.failures.items()))
        super().__init__(f"cannot load {listed}")


class VersionCatalog:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._loaded: dict[Key, LoadedVersion] = {}
        # Counters by outcome, read by telemetry.
        self.loads = 0
        self.load_failures = 0

    def register_metrics(self, observer: Observer) -> None:
        observer.observe_counter(
            "waybill.model.loads", "{version}", "Model version loads by outcome",
            lambda: [(self.loads, {"outcome": "loaded"}),
                     (self.load_failures, {"outcome": "failed"})])

    def ensure(self, keys: Iterable[Key]) -> dict[Key, LoadedVersion]:
        """Return every requested version, loading the missing ones; all or nothing."""
        wanted = sorted(set(keys))
        with self._lock:
            have = {k: self._loaded[k] for k in wanted if k in self._loaded}
        fresh: dict[Key, LoadedVersion] = {}
        failures: dict[Key, str] = {}
        for key in wanted:
            if key in have:
                continue
            try:
                fresh[key] = LoadedVersion.load(self.root, *key)
            except ArtifactError as err:
                failures[key] = str(err)
        self.loads += len(fresh)
        self.load_failures += len(failures)
        for (model, version), reason in failures.items():
            log.error("version refused", extra={"fields": {
                "model": model, "version": version, "reason": reason}})
        if failures:
            raise LoadFailed(failures)
        with self._lock:
            for key, loaded in fresh.items():
                # Another reload may have loaded it meanwhile: keep the first.
                loaded = self._loaded.setdefault(key, loaded)
                have[key] = loaded
        for (model, version), loaded in fresh.items():
            log.info("version loaded", extra={"fields": {
                "model": model, "version": version, "sha256": loaded.manifest.sha256}})
            weakref.finalize(loaded, log.info, "version freed",
                             extra={"fields": {"model": model, "version": version}})
        return have

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget every version not in keys (in-flight requests keep theirs alive)."""
        keep = set(keys)
        with self._lock:
            dropped = [k for k in self._loaded if k not in keep]
            for key in dropped:
                del self._loaded[key]
        for model, version in dropped:
            log.info("version unloaded", extra={"fields": {"model": model, "version": version}})

    def loaded_keys(self) -> list[Key]:
        with self._lock:
            return sorted(self._loaded)
