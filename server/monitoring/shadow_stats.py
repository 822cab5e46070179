"""What shadow scoring found, per (model, shadow version): how often it was sampled,
dropped or failed, and how far the shadow's answers were from the served ones.

The shadow scorer (:mod:`server.serving.shadow`) writes here; alert rules
(``shadow_divergence``), the admin API and the metrics read it.
"""

from __future__ import annotations

import bisect
import functools
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from models.kinds import Scored
from server.telemetry.observe import HistogramFunction, HistogramPoint, Observer

# Upper bounds of the |shadow - served| histogram, in the model's unit (a classifier's:
# total variation distance); the last bucket is open.
DIFF_BOUNDS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class ShadowTally:
    sampled: int = 0
    compared_rows: int = 0
    dropped: int = 0
    failed: int = 0
    sum_diff: float = 0.0
    sum_abs_diff: float = 0.0
    outside: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (len(DIFF_BOUNDS) + 1))
    min_abs_diff: float = float("inf")
    max_abs_diff: float = 0.0

    def add(self, served: Scored, shadow: Scored) -> None:
        """Regression kinds compare values (shadow - served); classifiers compare the
        probability vectors by total variation distance (0 = same, 1 = disjoint), and
        count as outside the rows whose most probable class differs."""
        if served.probabilities is not None and shadow.probabilities is not None:
            diff = 0.5 * np.abs(shadow.probabilities - served.probabilities).sum(axis=1)
            outside = shadow.value != served.value
        else:
            diff = shadow.value - served.value
            outside = (np.zeros(len(diff), dtype=bool) if served.lower is None
                       or served.upper is None
                       else (shadow.value < served.lower) | (shadow.value > served.upper))
        if not len(diff):
            return
        absolute = np.abs(diff)
        self.compared_rows += len(diff)
        self.sum_diff += float(diff.sum())
        self.sum_abs_diff += float(absolute.sum())
        self.min_abs_diff = min(self.min_abs_diff, float(absolute.min()))
        self.max_abs_diff = max(self.max_abs_diff, float(absolute.max()))
        self.outside += int(outside.sum())
        for value in absolute:
            self.counts[bisect.bisect_right(DIFF_BOUNDS, float(value))] += 1


class ShadowStats:
    """Tallies per (model, shadow version), under one short lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str], ShadowTally] = {}
        self._started_ns = time.time_ns()

    def _tally(self, model: str, version: str) -> ShadowTally:
        key = (model, version)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies.setdefault(key, ShadowTally())
        return tally

    def sampled(self, model: str, version: str, *, dropped: bool = False) -> None:
        with self._lock:
            tally = self._tally(model, version)
            tally.sampled += 1
            tally.dropped += dropped

    def failed(self, model: str, version: str) -> None:
        with self._lock:
            self._tally(model, version).failed += 1

    def compared(self, model: str, version: str, served: Scored, shadow: Scored) -> None:
        """The served answer of some rows beside the shadow's."""
        with self._lock:
            self._tally(model, version).add(served, shadow)

    def stats(self) -> dict[tuple[str, str], ShadowTally]:
        with self._lock:
            return {
                key: ShadowTally(t.sampled, t.compared_rows, t.dropped, t.failed, t.sum_diff,
                                 t.sum_abs_diff, t.outside, list(t.counts), t.min_abs_diff,
                                 t.max_abs_diff)
                for key, t in self._tallies.items()
            }

    def divergence(self) -> list[HistogramPoint]:
        """|shadow - served| per compared row as cumulative histogram points."""
        return [
            HistogramPoint({"model": model, "version": version}, tuple(t.counts),
                           t.sum_abs_diff, t.min_abs_diff, t.max_abs_diff, self._started_ns)
            for (model, version), t in self.stats().items() if t.compared_rows
        ]

    def register_metrics(self, observer: Observer) -> None:
        def tallies(read: str) -> list[tuple[int | float, dict[str, str]]]:
            return [(getattr(t, read), {"model": m, "version": v})
                    for (m, v), t in self.stats().items()]

        for name, unit, what, attribute in (
            ("waybill.shadow.sampled", "{request}", "Requests sampled for shadow scoring",
             "sampled"),
            ("waybill.shadow.dropped", "{request}", "Shadow requests dropped: queue full",
             "dropped"),
            ("waybill.shadow.failed", "{request}", "Shadow requests refused or failed",
             "failed"),
            ("waybill.shadow.compared_rows", "{row}",
             "Rows scored by served and shadow version", "compared_rows"),
            ("waybill.shadow.outside_interval", "{row}",
             "Rows whose shadow median fell outside the served interval", "outside"),
        ):
            observer.observe_counter(name, unit, what, functools.partial(tallies, attribute))
        observer.observe_gauge(
            # No unit in the name: each model's is its own (GetModel's output.unit).
            "waybill.shadow.difference", "",
            "Sum of (shadow - served) values over compared rows, in the model's unit; divide "
            "by compared rows for the mean bias", lambda: tallies("sum_diff"), up_down=True)
        observer.add_histogram(HistogramFunction(
            "waybill.shadow.divergence", "",
            "|shadow - served| per compared row, in the model's unit (a classifier's: total "
            "variation distance of the probabilities)",
            DIFF_BOUNDS, self.divergence))
