"""How the routing snapshot changes: config reloads and overrides (rollbacks).

Reloads go read -> parse -> validate -> load -> publish -> unload. Every
trigger (the file watcher, SIGHUP, the admin ReloadConfig call, start-up)
goes through :meth:`RoutingReloader.reload`, one at a time. A file that fails any
step is refused with a log line and a counter naming the reason, and the
snapshot in force keeps serving; the next good file still applies.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from models.calendar import utc_now
from models.loaded import LoadedVersion
from models.registry import discover
from router.config import RoutingConfigError, check_against_registry
from router.table import (
    RoutingTable,
    reapply_overrides,
)
from server.monitoring.rules import Rules
from server.serving.catalog import Key, LoadFailed, VersionCatalog
from server.serving.journal import Journal
from server.serving.routing_file import parse_routing_file
from server.serving.state import ServingState, Snapshot
from server.telemetry.observe import Observer

log = logging.getLogger("waybill.routing")

# What identifies one version of the routing file: resolved path, inode, size, mtime.
Signature = tuple[str, int, int, int]


class ConfigRejected(Exception):
    """A routing file was refused; ``reason`` is a short, bounded label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason  # read | encoding | invalid | registry | load | missing
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Failure:
    at: str
    reason: str
    message: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    changed: bool
    snapshot: Snapshot


def _referenced(table: RoutingTable) -> list[Key]:
    keys: list[Key] = []
    for name, routes in table.models.items():
        keys.extend((name, v) for v in routes.versions)
        if routes.shadow is not None:
            keys.append((name, routes.shadow.version))
    return keys


def _unknown_features(alerts: Rules, loaded: Mapping[Key, LoadedVersion]) -> list[str]:
    """Alert rules on a feature no loaded version of the model has (a typo never alerts)."""
    problems = []
    for name, rules in alerts.items():
        known = set().union(*(v.feature_names for (m, _), v in loaded.items() if m == name))
        for i, rule in enumerate(rules):
            named = [("feature", rule.feature)] if rule.feature is not None else []
            named += [(f"exclude[{j}]", f) for j, f in enumerate(rule.exclude)]
            for path, feature in named:
                if feature not in known:
                    problems.append(f"models.{name}.alerts[{i}].{path} = {feature!r}: no "
                                    f"version of {name} has this feature (known: "
                                    f"{', '.join(sorted(known))})")
    return problems


class RoutingReloader:
    def __init__(self, path: Path, catalog: VersionCatalog,
                 journal: Journal | None = None) -> None:
        self.path = path
        self.catalog = catalog
        self.journal = journal or Journal(None)
        self.last_failure: Failure | None = None
        self.applied = 0
        self.rejected: Counter[str] = Counter()  # by reason
        self.initial_signature: Signature | None = None
        self._lock = asyncio.Lock()

    def register_metrics(self, observer: Observer) -> None:
        observer.observe_counter(
            "waybill.config.reloads", "{reload}",
            "Routing config loads: applied, or rejected with the reason",
            lambda: [(self.applied, {"outcome": "applied", "reason": "none"}),
                     *((n, {"outcome": "rejected", "reason": why})
                       for why, n in self.rejected.items())])
        observer.observe_gauge(
            "waybill.config.refused", "{config}",
            "1 while the routing file on disk is refused (the last good one serves), by reason",
            lambda: [] if self.last_failure is None
            else [(1, {"reason": self.last_failure.reason})])

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as err:
            raise ConfigRejected("read", f"{self.path}: cannot read ({err.strerror})") from None

    def prepare(self, raw: bytes) -> Snapshot:
        """Everything but publishing: blocking (disk, model loads); run it off the loop."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigRejected("encoding", f"{self.path}: not UTF-8 ({err})") from None
        try:
            parsed = parse_routing_file(text, str(self.path))
        except RoutingConfigError as err:
            raise ConfigRejected("invalid", str(err)) from None
        found = discover(self.catalog.root)
        available = {name: [ref.version for ref in refs] for name, refs in found.items()}
        config = parsed.config
        problems = check_against_registry(config, available)
        if problems:
            raise ConfigRejected("registry", f"{self.path}: " + "; ".join(problems))
        table = RoutingTable.from_config(config)
        try:
            loaded = self.catalog.ensure(_referenced(table))
        except LoadFailed as err:
            raise ConfigRejected("load", f"{self.path}: {err}") from None
        unknown = _unknown_features(parsed.alerts, loaded)
        if unknown:
            raise ConfigRejected("invalid", f"{self.path}: " + "; ".join(unknown))
        digest = hashlib.sha256(raw).hexdigest()
        return Snapshot.build(table, loaded, source=str(self.path), content_hash=digest,
                              alerts=parsed.alerts)

    def load_initial(self) -> Snapshot:
        # Taken before reading: a change that lands while we read is still seen as new.
        self.initial_signature = file_signature(self.path)
        snapshot = self.prepare(self._read())
        self.applied += 1
        log.info("routing applied", extra={"fields": {
            "trigger": "start", "source": str(self.path), "content_hash": snapshot.content_hash}})
        return snapshot

    async def reload(self, state: ServingState, trigger: str) -> ReloadOutcome:
        async with self._lock:
            raw: bytes | None = None
            try:
                raw = await asyncio.to_thread(self._read)
                digest = hashlib.sha256(raw).hexdigest()
                if digest == state.current.content_hash:
                    self._restored(trigger)
                    return ReloadOutcome(False, state.current)
                fresh = await asyncio.to_thread(self.prepare, raw)
            except ConfigRejected as err:
                self._refuse(err, trigger, raw)
                raise
            before = state.current
            published = state.update(
                lambda cur: fresh.with_table(reapply_overrides(cur.table, fresh.table))
            )
            self.catalog.retain(published.keys())
            self.applied += 1
            self.last_failure = None
            log.info("routing applied", extra={"fields": {
                "trigger": trigger, "source": str(self.path),
                "content_hash": published.content_hash, "generation": published.generation}})
            await self.journal.config_applied(before, published, trigger)
            return ReloadOutcome(True, published)

    def missing(self) -> None:
        """The watcher found the file gone: refused like a bad file, the snapshot serves."""
        self._refuse(ConfigRejected("missing", f"{self.path}: the routing file is gone; the "
                                    "snapshot in force keeps serving"), "file", None)

    def _restored(self, trigger: str) -> None:
        # The file is back to what serves: whatever was wrong with it is no longer so.
        if self.last_failure is not None:
            self.last_failure = None
            log.info("routing file matches the snapshot in force", extra={"fields": {
                "trigger": trigger, "source": str(self.path)}})

    def _refuse(self, err: ConfigRejected, trigger: str, raw: bytes | None) -> None:
        digest = hashlib.sha256(raw).hexdigest() if raw is not None else ""
        self.rejected[err.reason] += 1
        self.last_failure = Failure(utc_now(), err.reason, str(err), digest)
        log.error("routing rejected", extra={"fields": {
            "trigger": trigger, "reason": err.reason, "error": str(err), "content_hash": digest}})


def file_signature(path: Path) -> Signature | None:
    """What changes when a ConfigMap swaps its ..data symlink or an editor rewrites the file."""
    try:
        real = path.resolve(strict=True)
        st = real.stat()
    except OSError:
        return None
    return (str(real), st.st_ino, st.st_size, st.st_mtime_ns)


async def watch(path: Path, interval: float, on_change: object,
                seen: Signature | None, on_missing: Callable[[], None]) -> None:
    """Poll the file's identity; call ``on_change()`` once it changed and then held still,
    and ``on_missing()`` once it is gone and still gone a poll later.

    ``seen`` is the signature of the file the snapshot in force was read from, so a
    change made before the first poll is not mistaken for the starting state.

    Polling the resolved path sees Kubernetes' symlink swaps and in-place edits alike
    without an inotify dependency. Waiting for one quiet interval keeps a file that
    is still being written from being read half-way (a half file that slips through
    is refused by validation like any bad file). A file deleted and written again
    between two polls (some editors save that way) is a change, not a disappearance.
    """
    pending: Signature | None = None
    absent = 0  # polls in a row that found no file
    while True:
        await asyncio.sleep(interval)
        current = file_signature(path)
        if current is None:
            pending = None
            absent += 1
            if absent == 2:  # once per disappearance, however long it lasts
                # Whatever comes back is read, even a file identical to the one lost.
                seen = None
                on_missing()
            continue
        absent = 0
        if current == seen:
            pending = None
            continue
        if current != pending:
            pending = current  # changed: wait one more interval for it to settle
            continue
        seen, pending = current, None
        try:
            await on_change()  # type: ignore[operator]
        except ConfigRejected:
            pass  # already logged and counted; the last good snapshot serves
        except Exception:
            # The watcher must outlive any one bad reload.
            log.exception("routing reload failed", extra={"fields": {"source": str(path)}})
