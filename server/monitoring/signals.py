"""What alert rules measure, per model version, read from what the server already keeps.

Nothing here touches the request path: request counters and latency histograms
are the observer's (cumulative, read under their own short locks), drift comes from
each version's tracker (its newest closed window), accuracy from the store's outcomes,
the canary judge's verdict from the store's per-period loss sums (outcomes joined to their
predictions' time), shadow divergence from the shadow tallies. Windowed
metrics are differences between cumulative snapshots that :meth:`Signals.sample`
takes once per evaluation, the way Prometheus' ``increase()`` reads counters.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from server.monitoring.drift import DriftTracker, WindowReport
from server.monitoring.judge import Moments, Verdict, judge, summarize
from server.monitoring.rules import AlertRule, Metric, StatusClass
from server.monitoring.shadow_stats import ShadowStats
from server.storage.base import Accuracy, LossSums, Store, StoreUnavailable
from server.telemetry.observe import SERVER_ERROR_CODES, Observer

Key = tuple[str, str]  # (model, version)
# The judge's sums are kept and grown by report time: outcomes reported more than this
# long ago are "settled" and read once; the newer ones are re-read at every evaluation.
# It must exceed the time from an outcome's reported_at stamp to its commit, plus the
# clock skew between replicas sharing a store.
SETTLE_S = 120.0
JudgeKey = tuple[str, str, str, float]  # (model, canary, stable, period_s)
Periods = dict[int, tuple[Moments, Moments]]  # period -> (canary, stable)
# Snapshots older than the longest window are dropped, and the rest thinned so that
# about this many cover it.
MAX_SNAPSHOTS = 512


@dataclass(slots=True)
class _Settled:
    """The judge's per-period sums of one experiment over outcomes reported before
    ``until`` (wall time), and the evaluation that last read them."""

    periods: Periods = field(default_factory=dict)
    until: float = 0.0
    read_at: int = 0


@dataclass(frozen=True, slots=True)
class Judged:
    """The canary judge's verdict on one canary against ``stable``, as read now."""

    stable: str
    verdict: Verdict
    periods: int  # periods of prediction time where both sides had 2 outcomes or more


@dataclass(frozen=True, slots=True)
class Reading:
    """A metric's value and how many observations it rests on; ``value`` None = no data.

    For ``judge``: the effect estimate, the smaller side's outcomes in paired periods, and
    the verdict itself in ``judged``.
    """

    value: float | None
    samples: int
    judged: Judged | None = None


NO_DATA = Reading(None, 0)


@dataclass(slots=True)
class _Cumulative:
    """Everything windowed metrics need, as cumulative totals at one moment."""

    at: float
    codes: dict[Key, dict[str, int]] = field(default_factory=dict)
    latency: dict[Key, tuple[int, ...]] = field(default_factory=dict)
    shadow: dict[Key, tuple[int, float]] = field(default_factory=dict)  # rows, sum |diff|


def _quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """Like PromQL's histogram_quantile: linear within the bucket holding rank q."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if seen + n >= rank and n > 0:
            if i >= len(bounds):  # the +Inf bucket: the highest finite bound is all we know
                return bounds[-1]
            low = bounds[i - 1] if i > 0 else 0.0
            return low + (bounds[i] - low) * (rank - seen) / n
        seen += n
    return bounds[-1]


def error_share(codes: Mapping[str, int], status_class: StatusClass) -> tuple[int, int]:
    """(errors, calls) for a status class over per-code call counts."""
    total = sum(codes.values())
    if status_class == StatusClass.SERVER:
        errors = sum(n for code, n in codes.items() if code in SERVER_ERROR_CODES)
    elif status_class == StatusClass.CLIENT:
        errors = sum(n for code, n in codes.items()
                     if code != "OK" and code not in SERVER_ERROR_CODES)
    else:
        errors = total - codes.get("OK", 0)
    return errors, total


class Signals:
    def __init__(self, observer: Observer, tracker: Callable[[str, str], DriftTracker | None],
                 store: Store | None, shadow: ShadowStats | None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._observer = observer
        self._tracker = tracker
        self._store = store
        self._shadow = shadow
        self._clock = clock
        self._wall = wall  # the store's clock: what it stamps reported_at with
        self._history: deque[_Cumulative] = deque([_Cumulative(clock())])  # zeros at start
        self._horizon = 0.0
        self._accuracy: dict[tuple[str, float], dict[str, Accuracy]] = {}
        # This evaluation's, per experiment; None: the database was away.
        self._losses: dict[JudgeKey, Periods | None] = {}
        self._settled: dict[JudgeKey, _Settled] = {}
        self._evaluation = 0

    def sample(self, horizon_s: float) -> None:
        """Take this evaluation's cumulative snapshot; forget what no window reaches back to."""
        now = self._clock()
        snap = _Cumulative(now)
        for (model, version, _route, code), n in self._observer.requests.values().items():
            per = snap.codes.setdefault((model, version), {})
            per[code] = per.get(code, 0) + n
        for point in self._observer.request_duration.points():
            key = (str(point.attributes["model"]), str(point.attributes["version"]))
            snap.latency[key] = point.counts
        if self._shadow is not None:
            for key, tally in self._shadow.stats().items():
                snap.shadow[key] = (tally.compared_rows, tally.sum_abs_diff)
        # Snapshots at least horizon / (MAX_SNAPSHOTS / 2) apart, the newest always kept:
        # a new one replaces the previous newest while they are closer than that.
        spacing = horizon_s / (MAX_SNAPSHOTS // 2)
        history = self._history
        if len(history) > 1 and now - history[-2].at < spacing:
            history.pop()
        history.append(snap)
        self._horizon = horizon_s
        # Keep the zero snapshot until a window can reach past it, and one snapshot at or
        # before the horizon so that a full window always has a baseline.
        while len(history) > 2 and history[1].at <= now - horizon_s:
            history.popleft()
        self._accuracy.clear()  # outcomes arrive between evaluations: read afresh
        self._losses.clear()
        self._evaluation += 1
        # Experiments no rule read at the last evaluation are over (or their rule changed).
        for over in [k for k, v in self._settled.items() if v.read_at < self._evaluation - 1]:
            del self._settled[over]

    def _window(self, window_s: float) -> tuple[_Cumulative, _Cumulative]:
        """(baseline, latest): the newest snapshot at or before the window's start."""
        latest = self._history[-1]
        start = latest.at - window_s
        times = [s.at for s in self._history]
        index = max(0, bisect.bisect_right(times, start) - 1)
        return self._history[index], latest

    def read(self, rule: AlertRule, model: str, version: str, stable: str) -> Reading:
        return READERS[rule.metric](self, rule, model, version, stable)

    def _error_rate(self, rule: AlertRule, model: str, version: str, _stable: str) -> Reading:
        base, last = self._window(rule.window)
        now, then = last.codes.get((model, version), {}), base.codes.get((model, version), {})
        delta = {code: n - then.get(code, 0) for code, n in now.items()}
        errors, total = error_share(delta, rule.status_class)
        return Reading(errors / total if total else None, total)

    def _latency(self, rule: AlertRule, model: str, version: str, _stable: str) -> Reading:
        base, last = self._window(rule.window)
        now_counts = last.latency.get((model, version))
        if now_counts is None:
            return NO_DATA
        then_counts = base.latency.get((model, version), (0,) * len(now_counts))
        counts = [a - b for a, b in zip(now_counts, then_counts, strict=True)]
        bounds = self._observer.request_duration.bounds
        return Reading(_quantile(bounds, counts, rule.quantile), sum(counts))

    def _shadow_divergence(self, rule: AlertRule, model: str, version: str,
                           _stable: str) -> Reading:
        base, last = self._window(rule.window)
        rows, diff = last.shadow.get((model, version), (0, 0.0))
        rows0, diff0 = base.shadow.get((model, version), (0, 0.0))
        n = rows - rows0
        return Reading((diff - diff0) / n if n else None, n)

    def _window_report(self, model: str, version: str) -> WindowReport | None:
        tracker = self._tracker(model, version)
        return tracker.latest() if tracker is not None else None

    def _feature_psi(self, rule: AlertRule, model: str, version: str, _stable: str) -> Reading:
        window = self._window_report(model, version)
        if window is None:
            return NO_DATA
        if window.status != "ok":
            return Reading(None, window.rows)
        if rule.feature is None:
            psis = [f.psi for f in window.features
                    if f.psi is not None and f.name not in rule.exclude]
            return Reading(max(psis) if psis else None, window.rows)
        for feature in window.features:
            if feature.name == rule.feature:
                return Reading(feature.psi, window.rows)
        return NO_DATA  # this version's schema has no such feature

    def _prediction_psi(self, rule: AlertRule, model: str, version: str,
                        _stable: str) -> Reading:
        window = self._window_report(model, version)
        if window is None:
            return NO_DATA
        return Reading(window.prediction.psi if window.status == "ok" else None, window.rows)

    def accuracy(self, model: str, window_s: float) -> dict[str, Accuracy]:
        """Per version, over outcomes reported in the window; read once per evaluation."""
        if self._store is None:
            return {}
        key = (model, window_s)
        cached = self._accuracy.get(key)
        if cached is None:
            try:
                cached = {a.version: a for a in self._store.accuracy(model, window_s)}
            except StoreUnavailable:
                cached = {}  # no data while the database is away; other rules go on
            self._accuracy[key] = cached
        return cached

    def _mine(self, rule: AlertRule, model: str, version: str) -> Accuracy | None:
        mine = self.accuracy(model, rule.window).get(version)
        return mine if mine is not None and mine.outcomes > 0 else None

    def _figure(self, rule: AlertRule, model: str, version: str, _stable: str) -> Reading:
        """An accuracy figure of the version's outcomes; no value where its kind has none
        (a classifier has no MAE, a regressor no log loss, an undated row no on-time)."""
        mine = self._mine(rule, model, version)
        if mine is None:
            return NO_DATA
        return Reading(getattr(mine, _FIGURES[rule.metric]), mine.outcomes)

    def _mae_ratio(self, rule: AlertRule, model: str, version: str, stable: str) -> Reading:
        # Both sides need enough outcomes, so the sample count is the smaller.
        mine = self._mine(rule, model, version)
        theirs = self._mine(rule, model, stable)
        if (mine is None or version == stable or theirs is None or mine.mae is None
                or theirs.mae is None):
            return NO_DATA
        if theirs.mae == 0:
            return Reading(None, min(mine.outcomes, theirs.outcomes))
        return Reading(mine.mae / theirs.mae, min(mine.outcomes, theirs.outcomes))


    def paired(self, model: str, canary: str, stable: str, period_s: float) -> Periods | None:
        """Per period, the (canary, stable) moments of every retained outcome of the two
        versions, read once per evaluation; None while the database is away. Outcomes
        reported before the settling horizon were read once and kept (each evaluation adds
        those newly settled: one GROUP BY over a report-time range); the newer ones are
        read again each time."""
        if self._store is None:
            return {}
        key = (model, canary, stable, period_s)
        if key in self._losses:
            return self._losses[key]
        settled = self._settled.setdefault(key, _Settled())
        settled.read_at = self._evaluation
        horizon = self._wall() - SETTLE_S
        periods: Periods | None
        try:
            if horizon > settled.until:
                _merge(settled.periods, canary, self._store.loss_sums(
                    model, (canary, stable), period_s, reported_from=settled.until,
                    reported_to=horizon))
                settled.until = horizon
            periods = dict(settled.periods)
            _merge(periods, canary, self._store.loss_sums(
                model, (canary, stable), period_s, reported_from=settled.until))
        except StoreUnavailable:
            periods = None  # no data while the database is away; other rules go on
        self._losses[key] = periods
        return periods

    def _judge(self, rule: AlertRule, model: str, version: str, stable: str) -> Reading:
        """The judge's verdict on ``version`` against ``stable`` over every retained
        outcome of the two (docs/judge.md): the experiment is the pair of versions, so every
        replica sharing the store, and a restarted process, reads the same one."""
        if self._store is None or version == stable:
            return NO_DATA
        spec = rule.judge_spec
        paired = self.paired(model, version, stable, spec.period_s)
        if paired is None:
            return NO_DATA
        summary = summarize(paired)
        verdict = judge(spec, summary)
        return Reading(verdict.effect, min(verdict.samples_canary, verdict.samples_stable),
                       Judged(stable, verdict, summary.periods))


def _merge(periods: Periods, canary: str, rows: list[LossSums]) -> None:
    """Add a store's per-(period, version) sums to ``periods`` (in place)."""
    for row in rows:
        mine, theirs = periods.get(row.period, (Moments(), Moments()))
        moments = Moments.from_sums(row.count, row.total, row.total_sq)
        periods[row.period] = ((mine.merged(moments), theirs) if row.version == canary
                               else (mine, theirs.merged(moments)))


Reader = Callable[[Signals, AlertRule, str, str, str], Reading]

# The Accuracy field each outcome figure reads.
_FIGURES: Mapping[Metric, str] = MappingProxyType({
    Metric.MAE: "mae", Metric.COVERAGE: "coverage", Metric.ON_TIME: "on_time",
    Metric.LOG_LOSS: "log_loss", Metric.CLASS_ACCURACY: "accuracy", Metric.BRIER: "brier",
})

# One reader per metric, (signals, rule, model, version, stable version) -> reading. A
# metric without a reader is refused here, at import, not read as some other metric.
READERS: Mapping[Metric, Reader] = MappingProxyType({
    Metric.ERROR_RATE: Signals._error_rate,
    Metric.LATENCY: Signals._latency,
    Metric.FEATURE_PSI: Signals._feature_psi,
    Metric.PREDICTION_PSI: Signals._prediction_psi,
    Metric.MAE: Signals._figure,
    Metric.MAE_RATIO: Signals._mae_ratio,
    Metric.COVERAGE: Signals._figure,
    Metric.ON_TIME: Signals._figure,
    Metric.LOG_LOSS: Signals._figure,
    Metric.CLASS_ACCURACY: Signals._figure,
    Metric.BRIER: Signals._figure,
    Metric.SHADOW_DIVERGENCE: Signals._shadow_divergence,
    Metric.JUDGE: Signals._judge,
})
# The metrics read from the store: where processes share one (replicas on PostgreSQL),
# every one of them reads the same value, so one of them acts on it for all.
STORE_METRICS: frozenset[Metric] = frozenset({*_FIGURES, Metric.MAE_RATIO, Metric.JUDGE})

_unread = set(Metric) - set(READERS)
if _unread:
    raise ImportError(f"alert metrics without a reader: {sorted(_unread)}")
