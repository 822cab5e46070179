"""One drift tracker per loaded model version, created on first use.

A tracker lives exactly as long as its loaded version: when a reload unloads a
version, its tracker (and its windows) go with it, and a version loaded again
starts from empty windows.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Mapping

from models.loaded import LoadedVersion
from server.monitoring.drift import DriftSettings, DriftTracker, WindowReport
from server.telemetry.observe import Observer

Served = Mapping[str, Mapping[str, LoadedVersion]]  # model -> version -> loaded


class DriftBook:
    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._trackers: weakref.WeakKeyDictionary[LoadedVersion, DriftTracker] = (
            weakref.WeakKeyDictionary())

    def tracker(self, version: LoadedVersion) -> DriftTracker:
        tracker = self._trackers.get(version)
        if tracker is None:
            with self._lock:
                tracker = self._trackers.get(version)
                if tracker is None:
                    tracker = DriftTracker(version.manifest, self.settings)
                    self._trackers[version] = tracker
        return tracker

    def find(self, served: Served, model: str, version: str) -> DriftTracker | None:
        """The tracker of a served version, or None when it is not served."""
        loaded = served.get(model, {}).get(version)
        return self.tracker(loaded) if loaded is not None else None

    def register_metrics(self, observer: Observer, served: Callable[[], Served]) -> None:
        """Each served version's newest closed window with enough rows, read at collection."""

        def latest_windows() -> list[tuple[str, str, WindowReport]]:
            out: list[tuple[str, str, WindowReport]] = []
            for model, versions in served().items():
                for version, loaded in versions.items():
                    window = self.tracker(loaded).latest()
                    if window is not None and window.status == "ok":
                        out.append((model, version, window))
            return out

        def per_feature(read: str) -> list[tuple[float, dict[str, str]]]:
            return [(getattr(f, read), {"model": m, "version": v, "feature": f.name})
                    for m, v, w in latest_windows() for f in w.features
                    if getattr(f, read) is not None]

        for name, what, read in (
            ("waybill.drift.psi",
             "PSI per feature, newest closed drift window with enough rows", "psi"),
            ("waybill.drift.ks_statistic", "Kolmogorov-Smirnov statistic per numeric feature",
             "ks_statistic"),
            ("waybill.drift.unseen_rate", "Share of categories never seen in training",
             "unseen_rate"),
        ):
            observer.observe_gauge(name, "{ratio}", what, functools.partial(per_feature, read))
        observer.observe_gauge(
            "waybill.drift.prediction_psi", "{ratio}",
            "PSI of the predictions against training",
            lambda: [(w.prediction.psi, {"model": m, "version": v})
                     for m, v, w in latest_windows() if w.prediction.psi is not None])
        observer.observe_gauge(
            "waybill.drift.window_rows", "{row}", "Rows in the newest closed drift window",
            lambda: [(w.rows, {"model": m, "version": v}) for m, v, w in latest_windows()])

    def roll(self) -> None:
        """Close windows that have grown old without traffic filling them."""
        with self._lock:
            trackers = list(self._trackers.values())
        for tracker in trackers:
            tracker.roll()
