"""Drift of live inputs and predictions against a version's training reference.

One :class:`DriftTracker` per served (model, version). The hot path,
:meth:`DriftTracker.add`, only queues a scored batch (its matrix and medians, no
copy). Queued batches are counted together once ``PENDING_ROWS`` rows or
``PENDING_S`` seconds have gathered, or when anything is read: one vectorised pass
costs about 1 us per row at a few hundred rows against about 4 us at 8 (a micro-batch
at load), and drift needs no answer sooner. Counting bins: every numeric value goes to
its reference bin (``searchsorted``), every category to its reference category (one
dict lookup), and all of the rows' bins become one ``bincount`` added to the open window
under a short lock. Each batch keeps the time it was added, so windows close exactly
as if every batch had been counted on arrival. A uniform reservoir of rows keeps a bounded
sample of the numbers for Kolmogorov-Smirnov tests. Statistics are computed
only when someone asks (:meth:`DriftTracker.report`), outside the lock, and
cached per completed window, which never changes again.

Windows
-------
A window closes when it holds ``window_rows`` rows (the batch that fills it is
not split, so it may hold a few more) or when it is ``window_seconds`` old,
whichever comes first; ``0`` disables either rule. A window's age counts from
its first row, so an idle version does not fill its history with empty
windows. The last ``keep`` completed windows are kept for trends.

Statistics and the verdict
--------------------------
Per feature and for the prediction (the median), over the reference bins:

- PSI = sum over bins of (cur - ref) * ln(cur / ref), both shares floored at
  :data:`SHARE_FLOOR`. Missing values are left out of the bins and reported as
  ``missing_rate``. Categorical bins are the reference's top categories plus one
  pooled bin: ``(other)`` for values outside the top list, or ``(unseen)`` when
  the reference lists every training category (its ``other`` share is 0), in
  which case ``unseen_rate`` is that bin's share.
- Numbers: the two-sample KS test of the window's reservoir sample against the
  reference quantile sample (the same statistic and p-value as
  ``scipy.stats.ks_2samp(method="asymp")``).
- Categories: the chi-square goodness-of-fit test of the counts against the
  reference shares (floored like PSI and renormalised).

``drifted`` = PSI >= :data:`PSI_DRIFT` or (p < alpha and PSI >= :data:`PSI_NOTABLE`).
A test alone is not enough: with thousands of rows a test finds shifts far too
small to matter, and PSI alone is noisy on small windows; PSI >= 0.25 is the
usual "major shift" line, 0.1 the usual "moderate" one. A window with fewer than
``min_rows`` rows never says drifted, open or closed. A change in the missing
rate alone is reported but is not part of the verdict. A feature that follows
the calendar (day of year, a holiday ahead) drifts in any window much shorter
than the reference period: the verdict is right, and expected.

Memory is fixed per tracker: count arrays and lookup tables are sized from the
reference, the reservoir by ``sample_size``, the history by ``keep``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
from scipy import stats

from models.artifact import CategoricalReference, FeatureType, Manifest, NumericReference
from models.validation import MISSING_CATEGORY

# Shares below this count as this much, so an empty bin adds a bounded term to PSI.
SHARE_FLOOR = 1e-4
PSI_DRIFT = 0.25  # drifted on PSI alone ("major shift")
PSI_NOTABLE = 0.1  # drifted when a test is also significant ("moderate shift")
TOP_BINS = 3
SMALL_BATCH = 16  # up to this many rows, counting takes its few-rows shortcuts
# Queued batches are counted together once they hold this many rows or the oldest is
# this old (readers count them at once).
PENDING_ROWS = 256
PENDING_S = 1.0
PREDICTION = "prediction"  # the name of the prediction's FeatureDrift
# Manifests store the reference quantiles with this many significant digits
# (models/training.py). Live values are compared at the same precision: medians
# pile up on atoms such as 1.0000003, which the reference stores as 1.0, and at
# full precision KS would see a phantom shift of the atom's whole mass.
REFERENCE_DIGITS = 6

Status = Literal["ok", "not_enough_data", "open"]
Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class DriftSettings:
    window_rows: int = 5000  # close the current window after this many rows ...
    window_seconds: float = 300.0  # ... or when it is this old (whichever first); 0 disables
    min_rows: int = 500  # a closed window with fewer rows reports "not enough data"
    keep: int = 6  # completed windows kept for trends
    sample_size: int = 1000  # rows in the reservoir that feeds the KS tests
    alpha: float = 0.01  # significance for KS / chi-square verdicts

    def __post_init__(self) -> None:
        if self.window_rows < 0:
            raise ValueError(f"window_rows must be >= 0, got {self.window_rows}")
        if not self.window_seconds >= 0:  # also refuses NaN
            raise ValueError(f"window_seconds must be >= 0, got {self.window_seconds}")
        if self.window_rows == 0 and self.window_seconds == 0:
            raise ValueError("window_rows and window_seconds are both 0: windows never close")
        if self.min_rows < 0:
            raise ValueError(f"min_rows must be >= 0, got {self.min_rows}")
        if self.keep < 1:
            raise ValueError(f"keep must be >= 1, got {self.keep}")
        if self.sample_size < 1:
            raise ValueError(f"sample_size must be >= 1, got {self.sample_size}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True)
class BinShare:
    label: str  # "[12.5, 20)", "< 3", ">= 900", a category, "(other)" or "(unseen)"
    reference: float  # share of the reference's non-missing values
    current: float  # share of the window's non-missing values
    contribution: float  # this bin's PSI term


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: Kind
    rows: int  # non-missing values in the window (what the bins and tests see)
    psi: float | None  # None when the window has no non-missing value
    ks_statistic: float | None  # numeric only
    ks_pvalue: float | None
    chi2_statistic: float | None  # categorical only
    chi2_pvalue: float | None
    unseen_rate: float | None  # categorical with a complete reference vocabulary only
    missing_rate: float  # of the window's rows
    reference_missing_rate: float
    drifted: bool
    bins: tuple[BinShare, ...]  # every bin, in reference order
    top_bins: tuple[BinShare, ...]  # the TOP_BINS largest PSI contributions, largest first


@dataclass(frozen=True)
class WindowReport:
    started_at: float  # unix time of the window's first row (or its opening, if empty)
    ended_at: float | None  # None while open
    rows: int
    status: Status
    features: tuple[FeatureDrift, ...]  # model features, in CatBoost column order
    prediction: FeatureDrift
    max_psi: float | None  # over the input features (not the prediction)
    max_psi_feature: str | None


@dataclass(frozen=True)
class DriftReport:
    model: str
    version: str
    current: WindowReport
    completed: tuple[WindowReport, ...]  # newest first


# --- statistics -------------------------------------------------------------------------------


def psi_terms(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Per-bin PSI terms of two share vectors, shares floored at SHARE_FLOOR."""
    r = np.maximum(np.asarray(ref, dtype=np.float64), SHARE_FLOOR)
    c = np.maximum(np.asarray(cur, dtype=np.float64), SHARE_FLOOR)
    terms: np.ndarray = (c - r) * np.log(c / r)
    return terms


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    """Population stability index of ``cur`` against ``ref`` (shares over the same bins)."""
    return float(psi_terms(ref, cur).sum())


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and asymptotic p-value.

    The same as ``scipy.stats.ks_2samp(a, b, method="asymp")``: D from the two
    empirical CDFs evaluated at every pooled value (searchsorted handles ties),
    p from the Kolmogorov distribution for n = round(n1 * n2 / (n1 + n2)).
    """
    x = np.sort(np.asarray(a, dtype=np.float64))
    y = np.sort(np.asarray(b, dtype=np.float64))
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("ks_two_sample needs two non-empty samples")
    pooled = np.concatenate((x, y))
    cdf_x = np.searchsorted(x, pooled, side="right") / n1
    cdf_y = np.searchsorted(y, pooled, side="right") / n2
    statistic = float(np.max(np.abs(cdf_x - cdf_y)))
    effective_n = n1 * n2 / (n1 + n2)
    pvalue = float(np.clip(stats.kstwo.sf(statistic, np.round(effective_n)), 0.0, 1.0))
    return statistic, pvalue


def at_reference_precision(values: np.ndarray) -> np.ndarray:
    """Round to REFERENCE_DIGITS significant digits exactly as the manifest writer does."""
    return np.asarray([float(f"{v:.{REFERENCE_DIGITS}g}") for v in values.tolist()],
                      dtype=np.float64)


def chi_square(ref: np.ndarray, counts: np.ndarray) -> tuple[float, float] | None:
    """Goodness of fit of ``counts`` to reference shares (floored, renormalised)."""
    n = float(counts.sum())
    if n == 0 or len(counts) < 2:
        return None
    shares = np.maximum(np.asarray(ref, dtype=np.float64), SHARE_FLOOR)
    expected = shares / shares.sum() * n
    statistic = float(((counts - expected) ** 2 / expected).sum())
    return statistic, float(stats.chi2.sf(statistic, len(counts) - 1))


# --- the compiled layout of one manifest --------------------------------------------------------


def _number(x: float) -> str:
    return f"{x:g}"


def _numeric_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    if not edges:
        return ("(all)",)
    inner = [f"[{_number(lo)}, {_number(hi)})" for lo, hi in pairwise(edges)]
    return (f"< {_number(edges[0])}", *inner, f">= {_number(edges[-1])}")


@dataclass(frozen=True, eq=False)
class _Numeric:
    """A number's bins: slots ``base .. base+k`` in the count vector, then missing."""

    name: str
    base: int
    edges: np.ndarray
    labels: tuple[str, ...]
    reference: np.ndarray  # k+1 shares
    quantiles: np.ndarray  # sorted reference sample, maybe empty
    reference_missing_rate: float

    @property
    def bins(self) -> int:
        return len(self.reference)


@dataclass(frozen=True, eq=False)
class _Categorical:
    """A category's bins: top categories, the pooled bin, then missing."""

    name: str
    column: int
    base: int
    lookup: dict[str, int]  # value -> absolute slot; fixed, so memory stays bounded
    pooled: int  # absolute slot of the pooled bin (the dict.get default)
    labels: tuple[str, ...]
    reference: np.ndarray
    complete: bool  # the reference lists every training category
    reference_missing_rate: float

    @property
    def bins(self) -> int:
        return len(self.reference)


def _numeric(name: str, ref: NumericReference, base: int) -> _Numeric:
    return _Numeric(
        name=name,
        base=base,
        edges=np.asarray(ref.bin_edges, dtype=np.float64),
        labels=_numeric_labels(ref.bin_edges),
        reference=np.asarray(ref.frequencies, dtype=np.float64),
        quantiles=np.sort(np.asarray(ref.quantiles, dtype=np.float64)),
        reference_missing_rate=ref.missing_rate,
    )


def _categorical(name: str, column: int, ref: CategoricalReference, base: int) -> _Categorical:
    values = list(ref.frequencies)
    complete = ref.other == 0.0
    k = len(values)
    lookup = {value: base + i for i, value in enumerate(values)}
    # The validator feeds a missing optional category as MISSING_CATEGORY.
    lookup[MISSING_CATEGORY] = base + k + 1
    return _Categorical(
        name=name,
        column=column,
        base=base,
        lookup=lookup,
        pooled=base + k,
        labels=(*values, "(unseen)" if complete else "(other)"),
        reference=np.asarray([*ref.frequencies.values(), ref.other], dtype=np.float64),
        complete=complete,
        reference_missing_rate=ref.missing_rate,
    )


class _Layout:
    """Where each feature's counts live in one flat vector, and how to fill it."""

    def __init__(self, manifest: Manifest) -> None:
        base = 0
        numeric: list[_Numeric] = []
        numeric_columns: list[int] = []
        categorical: list[_Categorical] = []
        # (feature, its column in the values block; -1 for categories), in matrix order
        order: list[tuple[_Numeric | _Categorical, int]] = []
        for column, spec in enumerate(manifest.model_features):
            ref = manifest.reference.features[spec.name]
            if spec.type is FeatureType.CATEGORICAL:
                if not isinstance(ref, CategoricalReference):
                    raise ValueError(f"feature {spec.name!r}: categorical without a "
                                     "categorical reference")
                category = _categorical(spec.name, column, ref, base)
                categorical.append(category)
                order.append((category, -1))
                base += category.bins + 1  # + the missing slot
            else:
                if not isinstance(ref, NumericReference):
                    raise ValueError(f"feature {spec.name!r}: number without a numeric reference")
                number = _numeric(spec.name, ref, base)
                order.append((number, len(numeric)))
                numeric.append(number)
                numeric_columns.append(column)
                base += number.bins + 1
        # The prediction is the last "numeric column" of the values block.
        prediction = _numeric(PREDICTION, manifest.reference.prediction, base)
        base += prediction.bins + 1
        self.features = tuple(order)
        self.numeric = (*numeric, prediction)
        self.prediction = prediction
        self.categorical = tuple(categorical)
        self.numeric_columns = np.asarray(numeric_columns, dtype=np.intp)
        self.n_columns = len(manifest.model_features)
        self.size = base
        self.value_base = np.asarray([f.base for f in self.numeric], dtype=np.intp)
        self.value_missing = np.asarray([f.base + f.bins for f in self.numeric], dtype=np.intp)
        widest = max(len(f.edges) for f in self.numeric)
        self.edges = np.full((len(self.numeric), widest), np.nan)
        for j, number in enumerate(self.numeric):
            self.edges[j, :len(number.edges)] = number.edges
        self.categorical_columns = np.asarray([c.column for c in categorical], dtype=np.intp)
        self.lookups = tuple((c.lookup.get, c.pooled) for c in categorical)


# --- windows ------------------------------------------------------------------------------------


class _Window:
    """Counts and reservoir of one window; frozen once closed."""

    __slots__ = ("counts", "ended_at", "report", "rows", "sample", "started", "started_at")

    def __init__(self, size: int, sample_rows: int, values: int, now: float, wall: float) -> None:
        self.counts = np.zeros(size, dtype=np.int64)
        # One reservoir of rows for every number: a uniform sample of rows, restricted
        # to those where a feature is present, is a uniform sample of its values, and
        # a batch then needs one draw per row instead of one per feature.
        self.sample = np.full((sample_rows, values), np.nan)
        self.rows = 0
        self.started = now  # monotonic, for the age rule
        self.started_at = wall
        self.ended_at: float | None = None
        self.report: WindowReport | None = None  # cached once closed


@dataclass(frozen=True)
class _Snapshot:
    counts: np.ndarray
    sample: np.ndarray  # filled rows only
    rows: int
    started_at: float
    ended_at: float | None


class DriftTracker:
    """Drift accumulator of one served model version; ``add`` is safe from any thread."""

    def __init__(
        self,
        manifest: Manifest,
        settings: DriftSettings = DriftSettings(),  # frozen: sharing it is safe
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self.model = manifest.name
        self.version = manifest.version
        self.settings = settings
        self._layout = _Layout(manifest)
        self._clock = clock
        self._wall = wall
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._window = self._new_window()
        self._closed: deque[_Window] = deque(maxlen=settings.keep)
        # Batches added and not yet counted: (matrix, medians, monotonic time added).
        self._pending: list[tuple[np.ndarray, np.ndarray, float]] = []
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        # One counter at a time, so queued batches are counted in the order they came.
        self._counting = threading.Lock()

    # --- hot path -------------------------------------------------------------------------------

    def add(self, matrix: np.ndarray, medians: np.ndarray) -> None:
        """Queue one scored batch: the validated matrix and its predicted medians.

        Neither array may change afterwards (the serving path never touches them again).
        """
        n = matrix.shape[0]
        if len(medians) != n:
            raise ValueError(f"{n} matrix rows but {len(medians)} medians")
        if n == 0:
            return
        if matrix.ndim != 2 or matrix.shape[1] != self._layout.n_columns:
            raise ValueError(f"matrix shape {matrix.shape}, expected "
                             f"(rows, {self._layout.n_columns})")
        now = self._clock()
        with self._pending_lock:
            self._pending.append((matrix, medians, now))
            self._pending_rows += n
            if self._pending_rows < PENDING_ROWS and now - self._pending[0][2] < PENDING_S:
                return
        self.flush()

    def flush(self) -> None:
        """Count every queued batch now (readers call it first)."""
        with self._counting:
            self._flush_counting()

    def _flush_counting(self) -> None:
        with self._pending_lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if pending:
            self._count(pending)

    def _count(self, pending: list[tuple[np.ndarray, np.ndarray, float]]) -> None:
        """Count queued batches in order, in runs that share a window (holds _counting).

        A window closes before a batch that finds it too old, and after the batch that
        fills it, as if each batch had been counted when it came.
        """
        window_rows = self.settings.window_rows
        with self._lock:
            rows, started = self._window.rows, self._window.started
        run: list[tuple[np.ndarray, np.ndarray, float]] = []
        for batch in pending:
            at = batch[2]
            if rows and self._age_exceeded(started, at):
                self._merge(run, close_after=True)
                run, rows = [], 0
            if rows == 0:
                started = at
            run.append(batch)
            rows += len(batch[0])
            if window_rows and rows >= window_rows:
                self._merge(run, close_after=True)
                run, rows = [], 0
        if run:
            self._merge(run, close_after=False)

    def _age_exceeded(self, started: float, at: float) -> bool:
        seconds = self.settings.window_seconds
        return bool(seconds) and at - started >= seconds

    def _merge(self, run: list[tuple[np.ndarray, np.ndarray, float]], *,
               close_after: bool) -> None:
        """Bin a run of batches and add it to the open window (then close it if asked)."""
        if not run:
            if close_after:
                with self._lock:
                    if self._window.rows:
                        self._close()
            return
        matrix = run[0][0] if len(run) == 1 else np.concatenate([b[0] for b in run])
        medians = run[0][1] if len(run) == 1 else np.concatenate([b[1] for b in run])
        n = matrix.shape[0]
        layout = self._layout
        # Numbers (and the medians as the last column) -> absolute bin slots. A value's
        # bin is the number of edges <= it (searchsorted side="right").
        values = np.empty((n, len(layout.numeric)), dtype=np.float64)
        values[:, :-1] = matrix[:, layout.numeric_columns]
        values[:, -1] = medians
        if n <= SMALL_BATCH:
            # One comparison against every number's edges (padded with NaN, never <=)
            # costs less than a searchsorted call per number for a few rows.
            bins = (values[:, :, None] >= layout.edges).sum(axis=2)
        else:
            columns = np.ascontiguousarray(values.T)
            bins = np.empty((len(layout.numeric), n), dtype=np.intp)
            for j, number in enumerate(layout.numeric):
                bins[j] = np.searchsorted(number.edges, columns[j], side="right")
            bins = bins.T
        slots = np.where(np.isnan(values), layout.value_missing, bins + layout.value_base)
        # Categories -> absolute slots: one dict lookup per value.
        block = matrix[:, layout.categorical_columns].T.tolist()
        lookups = zip(layout.lookups, block, strict=True)
        codes = [get(value, pooled) for (get, pooled), column in lookups for value in column]
        delta = np.bincount(
            np.concatenate((slots.ravel(), np.asarray(codes, dtype=np.intp))),
            minlength=layout.size,
        )
        draws = self._rng.random((n,))
        with self._lock:
            window = self._window
            if window.rows == 0:  # the age counts from the first row
                window.started = run[0][2]
                window.started_at = self._wall()
            window.counts += delta
            self._sample(window, values, draws)
            window.rows += n
            if close_after:
                self._close()

    def _sample(self, window: _Window, values: np.ndarray, draws: np.ndarray) -> None:
        """Algorithm R over the batch's rows (caller holds the lock).

        Row i (0-based in the window) takes slot i while the reservoir fills, then a
        uniform slot in [0, i], kept only if it falls inside the reservoir.
        """
        size = len(window.sample)
        seen, n = window.rows, len(values)
        if n <= SMALL_BATCH:  # a few rows: plain Python beats a handful of numpy calls
            for i, draw in enumerate(draws.tolist()):
                row = seen + i
                slot = row if row < size else int(draw * (row + 1))
                if slot < size:
                    window.sample[slot] = values[i]
            return
        filling = max(0, min(size - seen, n))
        window.sample[seen:seen + filling] = values[:filling]
        if filling == n:
            return
        # Replacements in row order, so a later row overwrites an earlier one in the same
        # slot as sequential Algorithm R does; once the reservoir is full they are few
        # (about n * size / seen), so a Python loop over them is cheap.
        rows = np.arange(seen + filling, seen + n)
        slots = (draws[filling:] * (rows + 1)).astype(np.intp)
        kept = np.flatnonzero(slots < size)
        for i, slot in zip(kept.tolist(), slots[kept].tolist(), strict=True):
            window.sample[slot] = values[filling + i]

    # --- windows --------------------------------------------------------------------------------

    def _new_window(self) -> _Window:
        layout = self._layout
        return _Window(layout.size, self.settings.sample_size, len(layout.numeric),
                       self._clock(), self._wall())

    def _close(self) -> _Window:
        """Freeze the current window and open a fresh one (caller holds the lock)."""
        closed = self._window
        closed.ended_at = self._wall()
        self._closed.append(closed)
        self._window = self._new_window()
        return self._window

    def roll(self) -> None:
        """Close the current window if it is too old; call periodically (idle versions too)."""
        with self._counting:
            self._flush_counting()
            now = self._clock()
            with self._lock:
                if self._window.rows and self._age_exceeded(self._window.started, now):
                    self._close()

    # --- reports --------------------------------------------------------------------------------

    def report(self) -> DriftReport:
        self.flush()
        with self._lock:
            closed = tuple(self._closed)
            current = self._snapshot(self._window)
        return DriftReport(
            model=self.model,
            version=self.version,
            current=self._window_report(current, "open"),
            completed=tuple(self._closed_report(w) for w in reversed(closed)),
        )

    def latest(self) -> WindowReport | None:
        self.flush()
        with self._lock:
            newest = self._closed[-1] if self._closed else None
        return None if newest is None else self._closed_report(newest)

    def _snapshot(self, window: _Window) -> _Snapshot:
        filled = min(window.rows, len(window.sample))
        return _Snapshot(window.counts.copy(), window.sample[:filled].copy(), window.rows,
                         window.started_at, window.ended_at)

    def _closed_report(self, window: _Window) -> WindowReport:
        # A closed window never changes, so its report is computed once; two readers
        # racing here compute the same value twice, which is harmless.
        if window.report is None:
            filled = min(window.rows, len(window.sample))
            snapshot = _Snapshot(window.counts, window.sample[:filled], window.rows,
                                 window.started_at, window.ended_at)
            enough = window.rows >= self.settings.min_rows
            window.report = self._window_report(snapshot, "ok" if enough else "not_enough_data")
        return window.report

    def _closed_samples(self, newest: int = 0) -> dict[str, np.ndarray]:
        """What KS compared per number in a completed window (0 = newest); for tests."""
        self.flush()
        with self._lock:
            window = self._closed[-1 - newest]
        filled = window.sample[: min(window.rows, len(window.sample))]
        return {f.name: _ks_sample(filled[:, j]) for j, f in enumerate(self._layout.numeric)}

    def _window_report(self, snap: _Snapshot, status: Status) -> WindowReport:
        layout = self._layout
        # The open window's verdict counts once it has min_rows rows, like a closed one.
        judge = status == "ok" or (status == "open" and snap.rows >= self.settings.min_rows)
        features: list[FeatureDrift] = []
        for feature, j in layout.features:
            if isinstance(feature, _Categorical):
                features.append(self._categorical_drift(feature, snap, judge))
            else:
                features.append(self._numeric_drift(feature, snap, snap.sample[:, j], judge))
        prediction = self._numeric_drift(layout.prediction, snap, snap.sample[:, -1], judge)
        scored = [f for f in features if f.psi is not None]
        top = max(scored, key=lambda f: f.psi or 0.0, default=None)
        return WindowReport(
            started_at=snap.started_at,
            ended_at=snap.ended_at,
            rows=snap.rows,
            status=status,
            features=tuple(features),
            prediction=prediction,
            max_psi=None if top is None else top.psi,
            max_psi_feature=None if top is None else top.name,
        )

    def _numeric_drift(self, feature: _Numeric, snap: _Snapshot, sample: np.ndarray,
                       judge: bool) -> FeatureDrift:
        counts = snap.counts[feature.base:feature.base + feature.bins]
        missing = int(snap.counts[feature.base + feature.bins])
        present = int(counts.sum())
        value, bins, top = _bins(feature.labels, feature.reference, counts)
        ks: tuple[float, float] | None = None
        sample = _ks_sample(sample)
        if len(sample) and len(feature.quantiles):
            ks = ks_two_sample(sample, feature.quantiles)
        return FeatureDrift(
            name=feature.name,
            kind="numeric",
            rows=present,
            psi=value,
            ks_statistic=None if ks is None else ks[0],
            ks_pvalue=None if ks is None else ks[1],
            chi2_statistic=None,
            chi2_pvalue=None,
            unseen_rate=None,
            missing_rate=missing / snap.rows if snap.rows else 0.0,
            reference_missing_rate=feature.reference_missing_rate,
            drifted=judge and self._drifted(value, None if ks is None else ks[1]),
            bins=bins,
            top_bins=top,
        )

    def _categorical_drift(self, feature: _Categorical, snap: _Snapshot,
                           judge: bool) -> FeatureDrift:
        counts = snap.counts[feature.base:feature.base + feature.bins]
        missing = int(snap.counts[feature.base + feature.bins])
        present = int(counts.sum())
        value, bins, top = _bins(feature.labels, feature.reference, counts)
        test = chi_square(feature.reference, counts)
        unseen = None
        if feature.complete and present:
            unseen = float(counts[-1]) / present
        return FeatureDrift(
            name=feature.name,
            kind="categorical",
            rows=present,
            psi=value,
            ks_statistic=None,
            ks_pvalue=None,
            chi2_statistic=None if test is None else test[0],
            chi2_pvalue=None if test is None else test[1],
            unseen_rate=unseen,
            missing_rate=missing / snap.rows if snap.rows else 0.0,
            reference_missing_rate=feature.reference_missing_rate,
            drifted=judge and self._drifted(value, None if test is None else test[1]),
            bins=bins,
            top_bins=top,
        )

    def _drifted(self, value: float | None, pvalue: float | None) -> bool:
        if value is None:
            return False
        significant = pvalue is not None and pvalue < self.settings.alpha
        return value >= PSI_DRIFT or (significant and value >= PSI_NOTABLE)


def _ks_sample(column: np.ndarray) -> np.ndarray:
    """A reservoir column as KS sees it: missing values dropped, at reference precision."""
    return at_reference_precision(column[~np.isnan(column)])


def _bins(labels: tuple[str, ...], reference: np.ndarray, counts: np.ndarray
          ) -> tuple[float | None, tuple[BinShare, ...], tuple[BinShare, ...]]:
    """PSI, every bin and the top contributors; PSI None when nothing was counted."""
    total = int(counts.sum())
    current = counts / total if total else np.zeros(len(counts))
    terms = psi_terms(reference, current) if total else np.zeros(len(counts))
    bins = tuple(
        BinShare(label, float(r), float(c), float(t))
        for label, r, c, t in zip(labels, reference, current, terms, strict=True)
    )
    order = sorted(range(len(bins)), key=lambda i: -bins[i].contribution)[:TOP_BINS]
    value = float(terms.sum()) if total else None
    if value is not None and not math.isfinite(value):
        value = None
    return value, bins, tuple(bins[i] for i in order)
