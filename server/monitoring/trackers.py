"""One drift tracker per loaded model version, created on first use.

A tracker lives exactly as long as its loaded version: when a reload unloads a
version, its tracker (and its windows) go with it, and a version loaded again
starts from empty windows.
"""

from __future__ import annotations

import threading
import weakref

from models.loaded import LoadedVersion
from server.monitoring.drift import DriftSettings, DriftTracker
from server.serving.state import Snapshot


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

    def find(self, snapshot: Snapshot, model: str, version: str) -> DriftTracker | None:
        """The tracker of a served version, or None when it is not served."""
        loaded = snapshot.versions.get(model, {}).get(version)
        return self.tracker(loaded) if loaded is not None else None

    def roll(self) -> None:
        """Close windows that have grown old without traffic filling them."""
        with self._lock:
            trackers = list(self._trackers.values())
        for tracker in trackers:
            tracker.roll()
