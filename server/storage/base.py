"""The storage seam: what the layers above keep in, and ask of, the server's durable state.

One interface, :class:`Store`, for the prediction log, outcomes and accuracy, the event log
and the saved overrides, with two backends behind it (``server/storage/backends.py``
chooses one from ``--database``):

- **SQLite** (``sqlite.py``), the embedded default: one file, for one process or the
  worker processes of one pod;
- **PostgreSQL** (``postgres.py``), for replicas that share one truth: an outcome reaches
  the prediction whichever replica answered it, accuracy counts every replica's outcomes,
  and a rollback saved by one replica is followed by all.

Both share one implementation of everything but connections and a few statements
(``store.py``): a query is written once, in SQL both dialects read. The layers above
import this module only, never a backend: what an outcome means for a version (which
actuals it accepts, the accuracy terms it adds) stays above the store, in the ``score``
function the caller hands to :meth:`Store.report_outcomes`.

Errors, with the gRPC status each maps to in ``server/transport/status.py``::

    Exception
    ├── UnknownPredictions   -> NOT_FOUND (never logged, or already purged)
    ├── ConflictingOutcomes  -> ALREADY_EXISTS (an id already has a different actual)
    ├── StoreUnavailable     -> UNAVAILABLE (the database cannot be reached now: retry)
    └── ValueError
        └── OutcomeRefused   -> INVALID_ARGUMENT (names outcomes[i].field and a rule)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models.calendar import text_of_day
from models.kinds import Actual, Logged, Terms
from models.loaded import promised_days
from server.telemetry.observe import Observer


@dataclass(frozen=True, slots=True)
class LoggedPrediction:
    """One answered row, as the hot path hands it over."""

    prediction_id: str
    model: str
    version: str
    order_date: str | None  # YYYY-MM-DD, or None when the request had no date
    value: float  # the prediction, or a classifier's most probable class index
    lower: float | None  # the interval, for versions with one
    upper: float | None
    promised_days: int | None  # order_date to the predicted delivery date; None without a date
    probabilities: bytes | None = None  # a classifier's, float64 in class order


@dataclass(frozen=True, slots=True)
class AnsweredBatch:
    """One request's answered rows as the predictor holds them: columns.

    The hot path hands the log this, in O(1) on the event loop; the writer turns it into
    rows (:meth:`rows`), off the loop. Making one :class:`LoggedPrediction` per row on the
    loop cost 1.5 us a row, the biggest per-row cost of everything on (bench/costs.py).
    """

    model: str
    version: str
    prediction_ids: Sequence[str]
    values: Sequence[float]  # the predictions, or a classifier's most probable class index
    lower: Sequence[float] | None  # the interval, for versions with one
    upper: Sequence[float] | None
    # Days since 1970-01-01 of each row's order date (None: the row had none); None when
    # the version answers no dates.
    order_days: Sequence[int | None] | None = None
    probabilities: np.ndarray | None = None  # rows x classes, a classifier's

    def __len__(self) -> int:
        return len(self.prediction_ids)

    def head(self, n: int) -> AnsweredBatch:
        """The first ``n`` rows (what still fits in a nearly full queue)."""
        def cut(column: Any) -> Any:
            return None if column is None else column[:n]

        return AnsweredBatch(self.model, self.version, self.prediction_ids[:n],
                             self.values[:n], cut(self.lower), cut(self.upper),
                             cut(self.order_days), cut(self.probabilities))

    def rows(self, at: float) -> Iterator[tuple[Any, ...]]:
        """The rows in PREDICTION_COLUMNS order; ``at``: when they were answered."""
        n = len(self.prediction_ids)
        nothing = (None,) * n
        days = nothing if self.order_days is None else self.order_days
        proba: Iterable[bytes | None] = (
            nothing if self.probabilities is None
            else [row.tobytes() for row in self.probabilities])
        model, version = self.model, self.version
        for pid, value, low, high, day, p in zip(
                self.prediction_ids, self.values, self.lower or nothing,
                self.upper or nothing, days, proba, strict=True):
            if day is None:
                yield (pid, model, version, at, None, value, low, high, None, p)
            else:
                yield (pid, model, version, at, text_of_day(day), value, low, high,
                       promised_days(value), p)


# What the log takes: one request's batch, or rows made one by one (tests, tools).
LogRows = AnsweredBatch | Sequence[LoggedPrediction]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What actually happened to one prediction."""

    prediction_id: str
    actual: Actual


# (index in the batch, the actual, model, version, the logged prediction) -> its terms;
# raises OutcomeRefused for an actual the version cannot be scored against.
Score = Callable[[int, Actual, str, str, Logged], Terms]


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    prediction_id: str
    model: str
    version: str
    duplicate: bool  # the same actual was already recorded; counted once


@dataclass(frozen=True, slots=True)
class Accuracy:
    model: str
    version: str
    outcomes: int
    mae: float | None  # regression kinds: mean |prediction - actual|
    bias: float | None  # mean of prediction - actual: positive means predictions run high
    coverage: float | None  # share with lower <= actual <= upper, over outcomes with one
    on_time: float | None  # share with actual <= promised_days, over outcomes with a promise
    log_loss: float | None = None  # classifiers: mean -ln p(actual class)
    accuracy: float | None = None  # classifiers: share whose most probable class was right
    brier: float | None = None  # classifiers: mean sum over classes of (p - indicator)^2


@dataclass(frozen=True, slots=True)
class LossSums:
    """One version's losses in one period of prediction time, as sums (the canary judge's
    input): ``count`` outcomes, ``total`` = sum of losses, ``total_sq`` = sum of squares."""

    period: int  # floor(predictions.logged_at / period_s)
    version: str
    count: int
    total: float
    total_sq: float


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: str  # RFC 3339 UTC with milliseconds, "...Z"
    kind: str  # "rollback", "override_cleared", "config_applied", "alert"
    model: str
    version: str
    rule: str
    state: str
    value: float | None
    reason: str
    actor: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`Store.claim_override` found: whether this call saved its override, and
    the override saved for the model after the call (another process's when it lost)."""

    won: bool
    saved: dict[str, Any] | None


class UnknownPredictions(Exception):
    """Some ids were never logged, or were purged; nothing of the batch was recorded."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = tuple(ids)
        super().__init__(f"unknown prediction ids: {preview(self.ids)}")


class ConflictingOutcomes(Exception):
    """Some ids already have a different actual; nothing of the batch was recorded."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = tuple(ids)
        super().__init__(f"outcomes already reported with a different actual: {preview(self.ids)}")


class StoreUnavailable(Exception):
    """The database cannot be reached (or answers too slowly) now; nothing was recorded.
    Retrying later is right: the store reconnects on its own."""


class Store(Protocol):
    """The prediction log, outcomes, events and overrides; see the module docstring.

    Blocking methods must be called off the event loop, except :meth:`log_predictions`,
    which never blocks and never raises (the hot path calls it).
    """

    @property
    def backend(self) -> str:
        """ "sqlite" or "postgresql"."""

    @property
    def shared(self) -> bool:
        """True when processes on other hosts share this store (replicas): each one's
        outcomes, events and overrides are everyone's."""

    @property
    def describe(self) -> str:
        """What it is, for logs and messages: a path, or a URL without its password."""

    dropped: int  # predictions refused: queue full, or the store closed
    written: int  # predictions written
    failed: int  # predictions lost to a write that failed for another reason than an outage

    def start(self) -> None: ...

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (as far as the database lets it), then stop. Idempotent."""

    @property
    def pending(self) -> int:
        """Predictions queued and not yet written."""

    @property
    def up(self) -> bool:
        """Whether the database answered the last time the store tried it."""

    def register_metrics(self, observer: Observer, models: Callable[[], Iterable[str]],
                         accuracy_window_s: float) -> None: ...

    # -- predictions and outcomes
    def log_predictions(self, rows: LogRows) -> None:
        """Queue rows for the writer; never blocks, never raises (drops are counted)."""

    def flush(self) -> None:
        """Block until every prediction queued before this call is written."""

    def report_outcomes(self, outcomes: Sequence[Outcome], score: Score) -> list[OutcomeResult]:
        """Record actuals, all or nothing; ``score`` turns each into its accuracy terms."""

    def accuracy(self, model: str, since_s: float) -> list[Accuracy]:
        """Per version of ``model``, over outcomes reported in the last ``since_s`` seconds."""

    def loss_sums(self, model: str, versions: Sequence[str], period_s: float, *,
                  reported_from: float = 0.0,
                  reported_to: float | None = None) -> list[LossSums]:
        """Per (period, version) of ``versions``: the count, sum and sum of squares of the
        per-outcome loss (``abs(error)``, or ``log_loss`` for classifiers) of the outcomes
        reported in ``[reported_from, reported_to)``, the period being
        ``floor(logged_at / period_s)`` of the prediction; ordered by period, then version
        (the canary judge's input). Raises ValueError unless ``period_s`` > 0."""

    # -- events and overrides
    def record_event(self, kind: str, model: str, *, version: str = "", rule: str = "",
                     state: str = "", value: float | None = None, reason: str = "",
                     actor: str = "", detail: dict[str, Any] | None = None) -> Event:
        """Append an event durably and return it with its id and time."""

    def events(self, *, model: str | None = None, after_id: int = 0, limit: int = 100,
               kinds: Collection[str] = ()) -> list[Event]:
        """Events after ``after_id``, oldest first."""

    def save_override(self, model: str, override: dict[str, Any]) -> None: ...

    def claim_override(self, model: str, override: dict[str, Any],
                       expected: dict[str, Any] | None) -> Claim:
        """Save ``override`` only if the saved one is still ``expected`` (None: none is
        saved): of several processes rolling one model back at once, one wins."""

    def drop_override(self, model: str) -> None: ...

    def overrides(self) -> dict[str, dict[str, Any]]: ...

    def lead(self) -> bool:
        """Whether this process is the one that acts on evidence every process shares
        (accuracy from the shared outcomes); always true where nothing is shared."""

    # -- retention
    def purge(self) -> int:
        """Apply retention now; returns the predictions deleted (their outcomes go too)."""


def preview(ids: Sequence[str], shown: int = 5) -> str:
    text = ", ".join(ids[:shown])
    return f"{text} and {len(ids) - shown} more" if len(ids) > shown else text
