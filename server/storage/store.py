"""Durable local state in one SQLite file: predictions, outcomes, events, overrides.

The prediction log lets clients report what actually happened (outcomes) and lets the
server measure live accuracy per version; the event log keeps rollbacks, clears, applied
configs and alert changes; the overrides table keeps the overrides in force, so a server
killed with SIGKILL and restarted is still rolled back.

One writer thread owns the only write connection and runs jobs in FIFO order, because
SQLite has a single writer anyway and a queue is cheaper than lock contention. The hot
path (:meth:`Store.log_predictions`) only appends to a bounded in-memory queue; the writer
drains it every ``flush_interval_s`` in one transaction, and before every job, so a job
sees every prediction queued before it was submitted. Readers open their own short-lived
read-only connections: WAL lets them read while the writer writes.

Errors, with the gRPC status each should map to in ``server/transport/status.py``::

    Exception
    ├── UnknownPredictions   -> NOT_FOUND (never logged here, or already purged)
    ├── ConflictingOutcomes  -> ALREADY_EXISTS (an id already has a different actual)
    └── ValueError
        └── OutcomeRefused   -> INVALID_ARGUMENT (names outcomes[i].field and a rule)

What an outcome means for a version (which actuals it accepts, the accuracy terms it
adds) is the model kind's business, not the store's: :meth:`Store.report_outcomes`
hands each logged prediction and its actual to the caller's ``score`` function and
stores the terms it returns.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from models.calendar import utc_text
from models.kinds import Actual, Logged, OutcomeRefused, Terms
from server.telemetry.observe import Observer

log = logging.getLogger("waybill.store")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

SAME_ACTUAL = 1e-9  # a re-reported actual within this is the same report, not a conflict
PURGE_CHUNK = 20_000  # predictions per purge transaction, so flushes and jobs interleave
_IDS_PER_QUERY = 500  # well under SQLite's bound-parameter limit

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # The implicit rowid grows in logging order: retention deletes the oldest rows
        # with one range on it instead of sorting by time.
        """CREATE TABLE predictions (
            prediction_id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            logged_at REAL NOT NULL,
            order_date TEXT,
            median REAL NOT NULL,
            lower REAL NOT NULL,
            upper REAL NOT NULL,
            promised_days INTEGER
        )""",
        "CREATE INDEX predictions_logged_at ON predictions (logged_at)",
        # Outcomes never change once recorded, so the per-outcome terms of the accuracy
        # figures are stored with them and accuracy() needs no join.
        """CREATE TABLE outcomes (
            prediction_id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            actual_days REAL NOT NULL,
            delivery_date TEXT,
            reported_at REAL NOT NULL,
            error REAL NOT NULL,
            covered INTEGER NOT NULL,
            on_time INTEGER
        ) WITHOUT ROWID""",
        "CREATE INDEX outcomes_model_reported_at ON outcomes (model, reported_at)",
        # AUTOINCREMENT: event ids are clients' cursors (after_id) and must never be reused.
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            rule TEXT NOT NULL,
            state TEXT NOT NULL,
            value REAL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            detail TEXT NOT NULL
        )""",
        "CREATE INDEX events_model ON events (model, id)",
        """CREATE TABLE overrides (
            model TEXT PRIMARY KEY,
            override TEXT NOT NULL,
            saved_at TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # Model kinds: intervals are optional, classifiers log their class probabilities
        # (float64, packed) and their outcomes add log loss, accuracy and Brier terms.
        # SQLite cannot relax NOT NULL in place, so both tables are rebuilt.
        """CREATE TABLE predictions_v2 (
            prediction_id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            logged_at REAL NOT NULL,
            order_date TEXT,
            value REAL NOT NULL,
            lower REAL,
            upper REAL,
            promised_days INTEGER,
            probabilities BLOB
        )""",
        """INSERT INTO predictions_v2 (rowid, prediction_id, model, version, logged_at,
            order_date, value, lower, upper, promised_days)
            SELECT rowid, prediction_id, model, version, logged_at, order_date, median, lower,
            upper, promised_days FROM predictions ORDER BY rowid""",
        "DROP TABLE predictions",
        "ALTER TABLE predictions_v2 RENAME TO predictions",
        "CREATE INDEX predictions_logged_at ON predictions (logged_at)",
        """CREATE TABLE outcomes_v2 (
            prediction_id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            actual REAL NOT NULL,
            label TEXT,
            delivery_date TEXT,
            reported_at REAL NOT NULL,
            error REAL,
            covered INTEGER,
            on_time INTEGER,
            log_loss REAL,
            correct INTEGER,
            brier REAL
        ) WITHOUT ROWID""",
        """INSERT INTO outcomes_v2 (prediction_id, model, version, actual, delivery_date,
            reported_at, error, covered, on_time)
            SELECT prediction_id, model, version, actual_days, delivery_date, reported_at,
            error, covered, on_time FROM outcomes""",
        "DROP TABLE outcomes",
        "ALTER TABLE outcomes_v2 RENAME TO outcomes",
        "CREATE INDEX outcomes_model_reported_at ON outcomes (model, reported_at)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_INSERT_PREDICTION = (
    "INSERT OR IGNORE INTO predictions (prediction_id, model, version, logged_at, order_date,"
    " value, lower, upper, promised_days, probabilities) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_OUTCOME = (
    "INSERT INTO outcomes (prediction_id, model, version, actual, label, delivery_date,"
    " reported_at, error, covered, on_time, log_loss, correct, brier)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_EVENT_COLUMNS = "id, at, kind, model, version, rule, state, value, reason, actor, detail"


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


class UnknownPredictions(Exception):
    """Some ids were never logged here, or were purged; nothing of the batch was recorded."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = tuple(ids)
        super().__init__(f"unknown prediction ids: {_preview(self.ids)}")


class ConflictingOutcomes(Exception):
    """Some ids already have a different actual; nothing of the batch was recorded."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = tuple(ids)
        super().__init__(f"outcomes already reported with a different actual: {_preview(self.ids)}")


class Store:
    """The server's SQLite state. Start it before blocking calls; close it at exit."""

    def __init__(
        self,
        path: Path,
        *,
        retention_s: float = 7 * 86400,
        max_predictions: int = 5_000_000,
        queue_max: int = 200_000,
        flush_interval_s: float = 0.2,
        purge_interval_s: float = 60.0,
        max_events: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("retention_s", retention_s), ("flush_interval_s", flush_interval_s),
                            ("purge_interval_s", purge_interval_s)):
            if not value > 0:
                raise ValueError(f"Store {name} has value {value!r}; it must be > 0")
        for name, count in (("max_predictions", max_predictions), ("queue_max", queue_max),
                            ("max_events", max_events)):
            if count < 1:
                raise ValueError(f"Store {name} has value {count!r}; it must be >= 1")
        self.path = Path(path)
        self._retention_s = retention_s
        self._max_predictions = max_predictions
        self._queue_max = queue_max
        # Wake the writer early when a quarter of the queue fills between flushes, so a
        # burst is written before the bound drops anything.
        self._wake_rows = max(1, queue_max // 4)
        self._flush_interval_s = flush_interval_s
        self._purge_interval_s = purge_interval_s
        self._max_events = max_events
        self._clock = clock

        self.dropped = 0  # predictions refused because the queue was full or the store closed
        self.written = 0  # predictions written
        self.failed = 0  # predictions lost to a failed write (logged)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _open_writer(self.path)
        try:
            _migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise

        self._lock = threading.Lock()  # guards the queues, _queued and _closing
        self._rows: deque[tuple[float, Sequence[LoggedPrediction]]] = deque()
        self._queued = 0  # rows queued or being written: the bound counts both
        self._jobs: deque[tuple[Job, Future[Any]]] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        self._hot_path_error_logged = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closing:
                raise RuntimeError("Store.start() may be called once, before close()")
            self._thread = threading.Thread(target=self._run, name="waybill-store", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, run the jobs already submitted, then stop. Idempotent."""
        with self._lock:
            self._closing = True
            thread = self._thread
        if thread is None:
            # Never started: nobody else owns the connection, so finish here.
            if not self._finished.is_set():
                self._flush()
                self._conn.close()
                self._finished.set()
            return
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("store writer still busy at close", extra={"fields": {
                "path": str(self.path), "pending": self.pending, "timeout_s": timeout}})

    @property
    def pending(self) -> int:
        """Predictions queued and not yet written."""
        return self._queued

    # -- predictions and outcomes ----------------------------------------------------

    def register_metrics(self, observer: Observer, models: Callable[[], Iterable[str]],
                         accuracy_window_s: float) -> None:
        """The log's drops, and accuracy per version of ``models()`` over the window."""

        def accuracy() -> list[Accuracy]:
            return [a for model in models() for a in self.accuracy(model, accuracy_window_s)]

        def figures(read: str) -> list[tuple[float, dict[str, str]]]:
            return [(value, {"model": a.model, "version": a.version})
                    for a in accuracy() if (value := getattr(a, read)) is not None]

        for name, unit, what, read in (
            # No unit in the name: each version's is its own (GetModel's output.unit).
            ("waybill.accuracy.mae", "",
             "Mean absolute error over recent outcomes, in the model's unit", "mae"),
            ("waybill.accuracy.bias", "",
             "Mean (predicted - actual) over recent outcomes, in the model's unit",
             "bias"),
            ("waybill.accuracy.coverage", "{ratio}", "Share of outcomes inside the interval",
             "coverage"),
            ("waybill.accuracy.on_time", "{ratio}",
             "Share of deliveries by the predicted date", "on_time"),
            ("waybill.accuracy.log_loss", "{nat}",
             "Classifiers: mean log loss over recent outcomes", "log_loss"),
            ("waybill.accuracy.accuracy", "{ratio}",
             "Classifiers: share of recent outcomes whose most probable class was right",
             "accuracy"),
            ("waybill.accuracy.brier", "{score}",
             "Classifiers: mean Brier score over recent outcomes", "brier"),
            ("waybill.accuracy.outcomes", "{outcome}", "Outcomes in the accuracy window",
             "outcomes"),
        ):
            observer.observe_gauge(name, unit, what, functools.partial(figures, read),
                                   up_down=read == "bias")
        observer.observe_counter(
            "waybill.prediction_log.dropped", "{prediction}",
            "Predictions not logged because the log's queue was full",
            lambda: [(self.dropped, {})])

    def log_predictions(self, rows: Sequence[LoggedPrediction]) -> None:
        """Queue rows for the writer. Never blocks and never raises: the event loop calls it.

        Rows beyond the queue bound are dropped and counted in ``dropped``; losing some
        of the feedback log is better than stalling predictions or growing without limit.
        """
        try:
            n = len(rows)
            if n == 0:
                return
            at = self._clock()
            with self._lock:
                space = 0 if self._closing else self._queue_max - self._queued
                if n > space:
                    self.dropped += n - max(space, 0)
                    if space <= 0:
                        return
                    rows, n = rows[:space], space
                before = self._queued
                # A tuple so a caller reusing its list cannot change what gets written.
                self._rows.append((at, tuple(rows)))
                self._queued = before + n
            if before < self._wake_rows <= before + n:
                self._wake.set()
        except Exception:
            if not self._hot_path_error_logged:  # a bug upstream; say it once, not per call
                self._hot_path_error_logged = True
                log.exception("prediction log refused a batch")

    def flush(self) -> None:
        """Block until every prediction queued before this call is written."""
        self._call(lambda conn: None)  # the writer flushes before each job

    def report_outcomes(self, outcomes: Sequence[Outcome], score: Score) -> list[OutcomeResult]:
        """Record actuals, all or nothing; ``score`` turns each into its accuracy terms.
        Blocking: call it off the event loop."""
        for index, outcome in enumerate(outcomes):
            if not isinstance(outcome.prediction_id, str) or not outcome.prediction_id:
                raise OutcomeRefused(f"outcomes[{index}].prediction_id", "required",
                                     "a prediction id is required")
        if not outcomes:
            return []
        reported_at = self._clock()
        results: list[OutcomeResult] = self._call(
            lambda conn: _record_outcomes(conn, outcomes, score, reported_at))
        return results

    def accuracy(self, model: str, since_s: float) -> list[Accuracy]:
        """Per version of ``model``, over outcomes reported in the last ``since_s`` seconds."""
        if not since_s >= 0:
            raise ValueError(f"since_s has value {since_s!r}; it must be >= 0")
        cutoff = self._clock() - since_s
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT version, count(*), avg(abs(error)), avg(error), avg(covered), avg(on_time),"
                " avg(log_loss), avg(correct), avg(brier)"
                " FROM outcomes WHERE model = ? AND reported_at >= ?"
                " GROUP BY version ORDER BY version",
                (model, cutoff),
            ).fetchall()
        return [Accuracy(model, *row) for row in rows]

    def loss_sums(self, model: str, versions: Sequence[str], period_s: float, *,
                  reported_from: float = 0.0,
                  reported_to: float | None = None) -> list[LossSums]:
        """Per (period, version) of ``versions``: the count, sum and sum of squares of the
        per-outcome loss of the outcomes reported at ``reported_from`` or later (and before
        ``reported_to``, when given), the period being ``floor(logged_at / period_s)`` of
        the *prediction* the outcome is for (unix seconds). Ordered by period, then version.

        The loss is the outcome's kind's: ``abs(error)`` for regression kinds, ``log_loss``
        (-ln of the probability given to the actual class) for classifiers, whose ``error``
        is NULL. The report-time range lets a reader add only what is new: the
        ``(model, reported_at)`` index serves it, and only those outcomes are joined.
        """
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ValueError(f"period_s has value {period_s!r}; it must be > 0")
        versions = list(dict.fromkeys(versions))
        if not versions:
            return []
        until = "" if reported_to is None else " AND o.reported_at < ?"
        # One plain GROUP BY: logged_at >= 0, so CAST truncates as floor() would.
        sql = ("SELECT CAST(p.logged_at / ? AS INTEGER) AS period, o.version, count(*),"
               " sum(coalesce(abs(o.error), o.log_loss)),"
               " sum(coalesce(o.error * o.error, o.log_loss * o.log_loss))"
               " FROM outcomes o JOIN predictions p ON p.prediction_id = o.prediction_id"
               f" WHERE o.model = ? AND o.reported_at >= ?{until}"
               f" AND o.version IN ({', '.join('?' * len(versions))})"
               " AND coalesce(o.error, o.log_loss) IS NOT NULL"
               " GROUP BY period, o.version ORDER BY period, o.version")
        params = [period_s, model, reported_from,
                  *(() if reported_to is None else (reported_to,)), *versions]
        with self._reader() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [LossSums(int(period), version, int(count), float(total), float(total_sq))
                for period, version, count, total, total_sq in rows]

    # -- events and overrides -----------------------------------------------------------

    def record_event(
        self,
        kind: str,
        model: str,
        *,
        version: str = "",
        rule: str = "",
        state: str = "",
        value: float | None = None,
        reason: str = "",
        actor: str = "",
        detail: dict[str, Any] | None = None,
    ) -> Event:
        """Append an event durably and return it with its id and time."""
        if not kind:
            raise ValueError("an event needs a kind")
        # Serialized here so a value JSON cannot hold fails in the caller, not the writer.
        detail_json = _to_json(detail or {})
        number = None if value is None else float(value)

        def insert(conn: sqlite3.Connection) -> Event:
            # Stamped by the writer so times never run backwards against ids.
            at = utc_text(self._clock())
            with _transaction(conn, durable=True):
                cursor = conn.execute(
                    f"INSERT INTO events ({_EVENT_COLUMNS})"
                    " VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (at, kind, model, version, rule, state, number, reason, actor, detail_json))
            event_id = cursor.lastrowid
            if event_id is None:  # cannot happen after an INSERT into a rowid table
                raise RuntimeError("SQLite returned no id for the new event")
            return Event(event_id, at, kind, model, version, rule, state, number,
                         reason, actor, json.loads(detail_json))

        event: Event = self._call(insert)
        return event

    def events(
        self,
        *,
        model: str | None = None,
        after_id: int = 0,
        limit: int = 100,
        kinds: Collection[str] = (),
    ) -> list[Event]:
        """Events after ``after_id``, oldest first."""
        if limit < 1:
            raise ValueError(f"limit has value {limit!r}; it must be >= 1")
        if isinstance(kinds, str):  # a str is a Collection[str] of its characters
            kinds = (kinds,)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        if kinds:
            kinds = list(kinds)
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params.extend(kinds)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._reader() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_event(row) for row in rows]

    def save_override(self, model: str, override: dict[str, Any]) -> None:
        text = _to_json(override)
        saved_at = utc_text(self._clock())

        def save(conn: sqlite3.Connection) -> None:
            with _transaction(conn, durable=True):
                conn.execute(
                    "INSERT INTO overrides (model, override, saved_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (model) DO UPDATE SET override = excluded.override,"
                    " saved_at = excluded.saved_at",
                    (model, text, saved_at))

        self._call(save)

    def drop_override(self, model: str) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            with _transaction(conn, durable=True):
                conn.execute("DELETE FROM overrides WHERE model = ?", (model,))

        self._call(drop)

    def overrides(self) -> dict[str, dict[str, Any]]:
        with self._reader() as conn:
            rows = conn.execute("SELECT model, override FROM overrides ORDER BY model").fetchall()
        return {model: json.loads(text) for model, text in rows}

    # -- retention ---------------------------------------------------------------------

    def purge(self) -> int:
        """Apply retention now; returns the predictions deleted (their outcomes go too)."""

        def run(conn: sqlite3.Connection) -> int:
            total = 0
            while deleted := self._purge_chunk(conn):
                total += deleted
            return total

        deleted: int = self._call(run)
        return deleted

    def _purge_chunk(self, conn: sqlite3.Connection) -> int:
        cutoff = self._clock() - self._retention_s
        deleted = 0
        with _transaction(conn):
            # Two subqueries: SQLite answers a lone min() or max() from the b-tree's ends,
            # but both in one SELECT would scan the table.
            lo, hi = conn.execute("SELECT (SELECT min(rowid) FROM predictions),"
                                  " (SELECT max(rowid) FROM predictions)").fetchone()
            if lo is not None:
                # Rows are written in logging order, so everything up to the newest
                # expired row is expired too (up to clock steps, which retention tolerates),
                # and the newest max_predictions rows are the last rowids.
                bound = hi - self._max_predictions
                newest_expired = conn.execute(
                    "SELECT rowid FROM predictions WHERE logged_at < ?"
                    " ORDER BY logged_at DESC LIMIT 1", (cutoff,)).fetchone()
                if newest_expired is not None:
                    bound = max(bound, newest_expired[0])
                bound = min(bound, lo + PURGE_CHUNK - 1)
                if bound >= lo:
                    conn.execute("DELETE FROM outcomes WHERE prediction_id IN"
                                 " (SELECT prediction_id FROM predictions WHERE rowid <= ?)",
                                 (bound,))
                    deleted = conn.execute("DELETE FROM predictions WHERE rowid <= ?",
                                           (bound,)).rowcount
            conn.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
                         (self._max_events,))
        return deleted

    # -- the writer ----------------------------------------------------------------------

    def _call(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` on the writer after the predictions queued so far; wait for it."""
        future: Future[T] = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the store is closed")
            if self._thread is None:
                raise RuntimeError("the store is not started (call Store.start())")
            self._jobs.append((job, future))
        self._wake.set()
        return future.result()

    def _run(self) -> None:
        purging = True  # retention runs at start, then every purge_interval_s
        next_purge = time.monotonic() + self._purge_interval_s
        purged = 0
        try:
            while True:
                # Purging goes a chunk per turn, without waiting between chunks.
                self._wake.wait(0 if purging else self._flush_interval_s)
                self._wake.clear()
                closing = self._closing  # once set, nothing new is queued
                try:
                    self._flush()
                    while (job := self._next_job()) is not None:
                        self._flush()
                        _run_job(self._conn, *job)
                    if closing:
                        return
                    if not purging and time.monotonic() >= next_purge:
                        purging, next_purge = True, time.monotonic() + self._purge_interval_s
                    if purging:
                        deleted = self._purge_chunk(self._conn)
                        purged += deleted
                        purging = deleted >= PURGE_CHUNK
                        if not purging and purged:
                            log.info("store purged", extra={"fields": {"predictions": purged}})
                            purged = 0
                except Exception:
                    # Keep the thread alive: a job's own errors already went to its caller.
                    purging = False
                    log.exception("store writer error", extra={"fields": {"path": str(self.path)}})
        finally:
            self._conn.close()
            self._finished.set()

    def _next_job(self) -> tuple[Job, Future[Any]] | None:
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def _flush(self) -> None:
        with self._lock:
            if not self._rows:
                return
            batches, self._rows = self._rows, deque()
        n = sum(len(rows) for _, rows in batches)
        try:
            with _transaction(self._conn):
                cursor = self._conn.executemany(_INSERT_PREDICTION, _prediction_params(batches))
            self.written += max(cursor.rowcount, 0)
        except Exception:
            # Never raised into the hot path; the rows are lost, and say so.
            self.failed += n
            log.exception("prediction log write failed", extra={"fields": {
                "path": str(self.path), "rows": n}})
        finally:
            with self._lock:
                self._queued -= n

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)) as conn:
            yield conn


def _open_writer(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit, so a flush is exactly one.
    conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            log.warning("store is not in WAL mode; readers will block the writer",
                        extra={"fields": {"path": str(path), "journal_mode": mode}})
        # NORMAL in WAL mode survives a process crash; events and overrides ask for FULL.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        # The prediction id index takes random inserts; a larger cache keeps its pages hot.
        conn.execute("PRAGMA cache_size = -32768")
        conn.execute("PRAGMA journal_size_limit = 67108864")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    # IMMEDIATE, then read the version: two processes starting at once migrate once.
    with _transaction(conn):
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"store schema version {current} is newer than this server's {SCHEMA_VERSION}")
        for statements in _MIGRATIONS[current:]:
            for statement in statements:
                conn.execute(statement)
        if current != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def _transaction(conn: sqlite3.Connection, *, durable: bool = False) -> Iterator[None]:
    if durable:  # fsync this commit: events and overrides should survive power loss too
        conn.execute("PRAGMA synchronous = FULL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        if durable:
            conn.execute("PRAGMA synchronous = NORMAL")


def _run_job(conn: sqlite3.Connection, job: Job, future: Future[Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = job(conn)
    except Exception as err:
        future.set_exception(err)
    else:
        future.set_result(result)


def _prediction_params(
    batches: Iterable[tuple[float, Sequence[LoggedPrediction]]],
) -> Iterator[tuple[Any, ...]]:
    for at, rows in batches:
        for p in rows:
            yield (p.prediction_id, p.model, p.version, at, p.order_date,
                   p.value, p.lower, p.upper, p.promised_days, p.probabilities)


def _record_outcomes(
    conn: sqlite3.Connection, outcomes: Sequence[Outcome], score: Score, reported_at: float,
) -> list[OutcomeResult]:
    ids = list(dict.fromkeys(item.prediction_id for item in outcomes))
    with _transaction(conn):
        logged = _by_id(conn, "SELECT prediction_id, model, version, order_date, value, lower,"
                              " upper, promised_days, probabilities FROM predictions", ids)
        unknown = [pid for pid in ids if pid not in logged]
        if unknown:
            raise UnknownPredictions(unknown)
        known = {pid: row[1] for pid, row in _by_id(
            conn, "SELECT prediction_id, actual FROM outcomes", ids).items()}
        results: list[OutcomeResult] = []
        new: list[tuple[Any, ...]] = []
        conflicts: list[str] = []
        for index, item in enumerate(outcomes):
            pid = item.prediction_id
            _, model, version, order_date, value, lower, upper, promised, blob = logged[pid]
            proba = None if blob is None else tuple(np.frombuffer(blob, dtype=np.float64))
            terms = score(index, item.actual, model, version,
                          Logged(value, lower, upper, proba, order_date, promised))
            previous = known.get(pid)
            if previous is not None:
                if abs(previous - terms.actual) > SAME_ACTUAL:
                    conflicts.append(pid)
                results.append(OutcomeResult(pid, model, version, duplicate=True))
                continue
            known[pid] = terms.actual  # a repeat later in this batch is a duplicate of this one
            new.append((pid, model, version, terms.actual, terms.label, terms.delivery_date,
                        reported_at, terms.error, terms.covered, terms.on_time, terms.log_loss,
                        terms.correct, terms.brier))
            results.append(OutcomeResult(pid, model, version, duplicate=False))
        if conflicts:
            raise ConflictingOutcomes(list(dict.fromkeys(conflicts)))
        conn.executemany(_INSERT_OUTCOME, new)
    return results


def _by_id(conn: sqlite3.Connection, select: str, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    found: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start:start + _IDS_PER_QUERY]
        sql = f"{select} WHERE prediction_id IN ({', '.join('?' * len(chunk))})"
        found.update((row[0], row) for row in conn.execute(sql, chunk))
    return found


def _event(row: tuple[Any, ...]) -> Event:
    event_id, at, kind, model, version, rule, state, value, reason, actor, detail = row
    return Event(event_id, at, kind, model, version, rule, state, value, reason, actor,
                 json.loads(detail))


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _preview(ids: Sequence[str], shown: int = 5) -> str:
    text = ", ".join(ids[:shown])
    return f"{text} and {len(ids) - shown} more" if len(ids) > shown else text
