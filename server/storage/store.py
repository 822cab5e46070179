"""What both backends share: the hot-path queue, the writer thread, and every query.

The hot path (:meth:`SqlStore.log_predictions`) only appends to a bounded in-memory queue.
One writer thread owns the writer connection: it drains the queue every
``flush_interval_s`` in batched transactions of at most ``FLUSH_ROWS`` rows (earlier when
a quarter of the queue fills), applies retention a chunk at a time between flushes, and
runs the jobs handed to it after the rows queued before them.

Queries are written once, here, in SQL that SQLite and PostgreSQL both read, with ``?``
placeholders (a backend's :meth:`SqlStore._sql` rewrites them for its driver). A backend
says how to connect, how a transaction starts, how predictions are inserted in bulk and
where write jobs run; see ``sqlite.py`` and ``postgres.py``. Adding a read is one method
here, on :meth:`SqlStore._reader`, and nothing in either backend.

When the database cannot be reached (PostgreSQL only: an SQLite file is always there),
the writer keeps the rows queued (the bound still holds: beyond it rows are dropped,
counted in ``dropped`` and said in a log line at most every ``DROP_LOG_S``), reconnects
with backoff, and writes what it kept once it is back; blocking calls raise
:class:`~server.storage.base.StoreUnavailable`.
"""

from __future__ import annotations

import abc
import functools
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from typing import Any, ClassVar, TypeVar

import numpy as np

from models.calendar import utc_text
from models.kinds import Logged, OutcomeRefused
from server.storage.base import (
    Accuracy,
    AnsweredBatch,
    Claim,
    ConflictingOutcomes,
    Event,
    LogRows,
    LossSums,
    Outcome,
    OutcomeResult,
    Score,
    StoreUnavailable,
    UnknownPredictions,
)
from server.telemetry.observe import Observer

log = logging.getLogger("waybill.store")

T = TypeVar("T")
# A DB-API connection of either driver (sqlite3.Connection or psycopg.Connection): both
# have execute(), cursor() with executemany(), fetchone(), fetchall() and rowcount.
Conn = Any
Job = Callable[[Conn], Any]

SAME_ACTUAL = 1e-9  # a re-reported actual within this is the same report, not a conflict
PURGE_CHUNK = 20_000  # predictions per purge transaction, so flushes and jobs interleave
FLUSH_ROWS = 20_000  # predictions per write transaction (a backlog goes in several)
IDS_PER_QUERY = 500  # well under SQLite's bound-parameter limit
DROP_LOG_S = 5.0  # at most one "dropped" line this often

PREDICTION_COLUMNS = ("prediction_id", "model", "version", "logged_at", "order_date", "value",
                      "lower", "upper", "promised_days", "probabilities")
_INSERT_OUTCOME = (
    "INSERT INTO outcomes (prediction_id, model, version, actual, label, delivery_date,"
    " reported_at, error, covered, on_time, log_loss, correct, brier)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_EVENT_COLUMNS = "id, at, kind, model, version, rule, state, value, reason, actor, detail"


class SqlStore(abc.ABC):
    """The shared implementation of :class:`~server.storage.base.Store`."""

    backend: ClassVar[str]
    shared: bool = False
    # The column that grows in logging order: retention deletes the oldest rows with one
    # range on it instead of sorting by time.
    ORDER_COLUMN: ClassVar[str]

    def __init__(
        self,
        describe: str,
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
        self.describe = describe
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
        # How long a blocking call waits for the writer before StoreUnavailable (None: for
        # ever, as SQLite's writer always gets to it).
        self._call_timeout_s: float | None = None

        self.dropped = 0  # predictions refused because the queue was full or the store closed
        self.written = 0  # predictions written
        self.failed = 0  # predictions lost to a failed write (logged)
        self._dropped_logged = 0
        self._next_drop_log = 0.0

        self._lock = threading.Lock()  # guards the queues, _queued and _closing
        self._rows: deque[tuple[float, LogRows]] = deque()
        self._queued = 0  # rows queued or being written: the bound counts both
        self._jobs: deque[tuple[Job, Future[Any]]] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        self._hot_path_error_logged = False

    # -- what a backend provides ------------------------------------------------------------

    @abc.abstractmethod
    def _writer(self) -> Conn | None:
        """The writer thread's connection; None while the database cannot be reached."""

    @abc.abstractmethod
    def _lost_writer(self, error: BaseException) -> bool:
        """After a failed write: True when the connection was lost (the rows are kept and
        written once it is back), False when the write itself was at fault."""

    @abc.abstractmethod
    def _close_writer(self) -> None: ...

    @abc.abstractmethod
    def _transaction(self, conn: Conn, *, durable: bool = False) -> AbstractContextManager[None]:
        """One write transaction; ``durable``: committed to stable storage before it ends."""

    @abc.abstractmethod
    def _reader(self) -> AbstractContextManager[Conn]:
        """A connection for reads (no transaction needed)."""

    @abc.abstractmethod
    def _job(self, job: Callable[[Conn], T]) -> T:
        """Run a write job (it opens its own transaction) and return its result."""

    @abc.abstractmethod
    def _insert_predictions(self, conn: Conn,
                            batches: Sequence[tuple[float, LogRows]]) -> int:
        """Insert the rows (ignoring ids already there) in the open transaction; returns
        how many were new."""

    def _sql(self, text: str) -> str:
        """A statement with ``?`` placeholders as the driver wants it."""
        return text

    def _before_event(self, conn: Conn) -> None:
        """In the event's transaction, before its insert (PostgreSQL: ids in commit order)."""
        return None

    def _may_purge(self, conn: Conn) -> bool:
        """In the purge transaction: whether this process purges now (one at a time)."""
        return True

    @property
    def up(self) -> bool:
        return True

    def lead(self) -> bool:
        return True

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
                try:
                    conn = self._writer()
                    if conn is None or not self._flush(conn):
                        self._lose_queue("the database cannot be reached")
                finally:
                    self._close_writer()
                    self._closed()
                    self._finished.set()
            return
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("store writer still busy at close", extra={"fields": {
                "store": self.describe, "pending": self.pending, "timeout_s": timeout}})

    def _closed(self) -> None:
        """After the writer stopped: release what else the backend holds."""
        return None

    @property
    def pending(self) -> int:
        """Predictions queued and not yet written."""
        return self._queued

    # -- predictions and outcomes ----------------------------------------------------

    def register_metrics(self, observer: Observer, models: Callable[[], Iterable[str]],
                         accuracy_window_s: float) -> None:
        """The log's state and drops, and accuracy per version of ``models()`` over the
        window."""

        def accuracy() -> list[Accuracy]:
            try:
                return [a for model in models() for a in self.accuracy(model, accuracy_window_s)]
            except StoreUnavailable:
                return []  # no figures while the database is away (waybill_store_up says why)

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
        observer.observe_counter(
            "waybill.prediction_log.written", "{prediction}", "Predictions written to the log",
            lambda: [(self.written, {})])
        observer.observe_counter(
            "waybill.prediction_log.failed", "{prediction}",
            "Predictions lost to a failed write (not an outage: those stay queued)",
            lambda: [(self.failed, {})])
        observer.observe_gauge(
            "waybill.prediction_log.pending", "{prediction}",
            "Predictions queued for the log and not yet written",
            lambda: [(self.pending, {})])
        observer.observe_gauge(
            "waybill.store.up", "", "1 while the store's database answers, 0 while it cannot "
            "be reached", lambda: [(1 if self.up else 0, {"backend": self.backend})])

    def log_predictions(self, rows: LogRows) -> None:
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
                    rows = rows.head(space) if isinstance(rows, AnsweredBatch) else rows[:space]
                    n = space
                before = self._queued
                # A batch is frozen; a list becomes a tuple, so a caller reusing it cannot
                # change what gets written.
                self._rows.append((at, rows if isinstance(rows, AnsweredBatch) else tuple(rows)))
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

        def record(conn: Conn) -> list[OutcomeResult]:
            return self._record_outcomes(conn, outcomes, score, reported_at)

        try:
            return self._job(record)
        except UnknownPredictions:
            if self._queued == 0:
                raise
            # Maybe still in this process's queue: write it, then look again.
            self.flush()
            return self._job(record)

    def accuracy(self, model: str, since_s: float) -> list[Accuracy]:
        """Per version of ``model``, over outcomes reported in the last ``since_s`` seconds."""
        if not since_s >= 0:
            raise ValueError(f"since_s has value {since_s!r}; it must be >= 0")
        cutoff = self._clock() - since_s
        with self._reader() as conn:
            rows = conn.execute(self._sql(
                "SELECT version, count(*), avg(abs(error)), avg(error), avg(covered),"
                " avg(on_time), avg(log_loss), avg(correct), avg(brier)"
                " FROM outcomes WHERE model = ? AND reported_at >= ?"
                " GROUP BY version ORDER BY version"),
                (model, cutoff),
            ).fetchall()
        return [Accuracy(model, row[0], int(row[1]), *(_float(v) for v in row[2:]))
                for row in rows]

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
        # One plain GROUP BY on the period number, floor(logged_at / period_s). Portably:
        # SQLite's CAST truncates toward zero and PostgreSQL's rounds, and SQLite may lack
        # floor(); a CAST above the value is one too many on either.
        whole = "CAST(p.logged_at / ? AS BIGINT)"
        period = (f"CASE WHEN {whole} > p.logged_at / ? THEN {whole} - 1 ELSE {whole} END")
        sql = (f"SELECT {period} AS period, o.version, count(*),"
               " sum(coalesce(abs(o.error), o.log_loss)),"
               " sum(coalesce(o.error * o.error, o.log_loss * o.log_loss))"
               " FROM outcomes o JOIN predictions p ON p.prediction_id = o.prediction_id"
               f" WHERE o.model = ? AND o.reported_at >= ?{until}"
               f" AND o.version IN ({', '.join('?' * len(versions))})"
               " AND coalesce(o.error, o.log_loss) IS NOT NULL"
               " GROUP BY period, o.version ORDER BY period, o.version")
        params = [period_s, period_s, period_s, period_s, model, reported_from,
                  *(() if reported_to is None else (reported_to,)), *versions]
        with self._reader() as conn:
            rows = conn.execute(self._sql(sql), params).fetchall()
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
        detail_json = to_json(detail or {})
        number = None if value is None else float(value)

        def insert(conn: Conn) -> Event:
            with self._transaction(conn, durable=True):
                self._before_event(conn)
                # Stamped in the transaction so times never run backwards against ids.
                at = utc_text(self._clock())
                row = conn.execute(self._sql(
                    "INSERT INTO events (at, kind, model, version, rule, state, value, reason,"
                    " actor, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"),
                    (at, kind, model, version, rule, state, number, reason, actor,
                     detail_json)).fetchone()
            return Event(int(row[0]), at, kind, model, version, rule, state, number,
                         reason, actor, json.loads(detail_json))

        return self._job(insert)

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
            rows = conn.execute(self._sql(sql), params).fetchall()
        return [_event(row) for row in rows]

    def save_override(self, model: str, override: dict[str, Any]) -> None:
        text = to_json(override)
        saved_at = utc_text(self._clock())

        def save(conn: Conn) -> None:
            with self._transaction(conn, durable=True):
                conn.execute(self._sql(
                    "INSERT INTO overrides (model, override, saved_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (model) DO UPDATE SET override = excluded.override,"
                    " saved_at = excluded.saved_at"),
                    (model, text, saved_at))

        self._job(save)

    def claim_override(self, model: str, override: dict[str, Any],
                       expected: dict[str, Any] | None) -> Claim:
        text = to_json(override)
        saved_at = utc_text(self._clock())

        def claim(conn: Conn) -> Claim:
            with self._transaction(conn, durable=True):
                if expected is None:
                    changed = conn.execute(self._sql(
                        "INSERT INTO overrides (model, override, saved_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (model) DO NOTHING"), (model, text, saved_at)).rowcount
                else:
                    changed = conn.execute(self._sql(
                        "UPDATE overrides SET override = ?, saved_at = ?"
                        " WHERE model = ? AND override = ?"),
                        (text, saved_at, model, to_json(expected))).rowcount
                if changed == 1:
                    return Claim(True, json.loads(text))
                row = conn.execute(self._sql("SELECT override FROM overrides WHERE model = ?"),
                                   (model,)).fetchone()
            return Claim(False, None if row is None else json.loads(row[0]))

        return self._job(claim)

    def drop_override(self, model: str) -> None:
        def drop(conn: Conn) -> None:
            with self._transaction(conn, durable=True):
                conn.execute(self._sql("DELETE FROM overrides WHERE model = ?"), (model,))

        self._job(drop)

    def overrides(self) -> dict[str, dict[str, Any]]:
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT model, override FROM overrides ORDER BY model").fetchall()
        return {model: json.loads(text) for model, text in rows}

    # -- retention ---------------------------------------------------------------------

    def purge(self) -> int:
        """Apply retention now; returns the predictions deleted (their outcomes go too)."""

        def run(conn: Conn) -> int:
            total = 0
            while deleted := self._purge_chunk(conn):
                total += deleted
            return total

        deleted: int = self._call(run, forever=True)
        return deleted

    def _purge_chunk(self, conn: Conn) -> int:
        cutoff = self._clock() - self._retention_s
        order = self.ORDER_COLUMN
        deleted = 0
        with self._transaction(conn):
            if not self._may_purge(conn):
                return 0
            # Two subqueries: SQLite answers a lone min() or max() from the b-tree's ends,
            # but both in one SELECT would scan the table.
            lo, hi = conn.execute(f"SELECT (SELECT min({order}) FROM predictions),"
                                  f" (SELECT max({order}) FROM predictions)").fetchone()
            if lo is not None:
                # Rows are written in logging order, so everything up to the newest
                # expired row is expired too (up to clock steps, and rows another replica
                # wrote late, which retention tolerates), and the newest max_predictions
                # rows are the last ones in that order (at most: ids may have gaps).
                bound = hi - self._max_predictions
                newest_expired = conn.execute(self._sql(
                    f"SELECT {order} FROM predictions WHERE logged_at < ?"
                    " ORDER BY logged_at DESC LIMIT 1"), (cutoff,)).fetchone()
                if newest_expired is not None:
                    bound = max(bound, newest_expired[0])
                bound = min(bound, lo + PURGE_CHUNK - 1)
                if bound >= lo:
                    conn.execute(self._sql(
                        "DELETE FROM outcomes WHERE prediction_id IN"
                        f" (SELECT prediction_id FROM predictions WHERE {order} <= ?)"),
                        (bound,))
                    deleted = conn.execute(self._sql(
                        f"DELETE FROM predictions WHERE {order} <= ?"), (bound,)).rowcount
            conn.execute(self._sql(
                "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?"),
                (self._max_events,))
        return int(deleted)

    # -- the writer ----------------------------------------------------------------------

    def _call(self, job: Callable[[Conn], T], *, forever: bool = False) -> T:
        """Run ``job`` on the writer after the predictions queued so far; wait for it (at
        most the backend's call timeout, unless ``forever``)."""
        wait = None if forever else self._call_timeout_s
        future: Future[T] = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the store is closed")
            if self._thread is None:
                raise RuntimeError("the store is not started (call Store.start())")
            self._jobs.append((job, future))
        self._wake.set()
        try:
            return future.result(wait)
        except FutureTimeout:
            future.cancel()
            raise StoreUnavailable(f"the store did not answer in {wait} s") from None

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
                self._say_drops()
                try:
                    conn = self._writer()
                    ok = conn is not None and self._flush(conn)
                    while ok and (job := self._next_job()) is not None:
                        ok = self._flush(conn)
                        if ok:
                            _run_job(conn, *job)
                        else:
                            self._fail(*job)
                    if not ok:
                        self._fail_jobs()
                        if closing:
                            self._lose_queue("the database cannot be reached")
                            return
                        continue
                    if closing:
                        return
                    if not purging and time.monotonic() >= next_purge:
                        purging, next_purge = True, time.monotonic() + self._purge_interval_s
                    if purging:
                        deleted = self._purge_chunk(conn)
                        purged += deleted
                        purging = deleted >= PURGE_CHUNK
                        if not purging and purged:
                            log.info("store purged", extra={"fields": {"predictions": purged}})
                            purged = 0
                except Exception as err:
                    # Keep the thread alive: a job's own errors already went to its caller.
                    purging = False
                    if not self._lost_writer(err):
                        log.exception("store writer error", extra={"fields": {
                            "store": self.describe}})
        finally:
            self._close_writer()
            self._closed()
            self._finished.set()

    def _next_job(self) -> tuple[Job, Future[Any]] | None:
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def _fail(self, job: Job, future: Future[Any]) -> None:
        if future.set_running_or_notify_cancel():
            future.set_exception(StoreUnavailable(
                f"the database of the store ({self.describe}) cannot be reached"))

    def _fail_jobs(self) -> None:
        while (job := self._next_job()) is not None:
            self._fail(*job)

    def _say_drops(self) -> None:
        """The one log line for rows the hot path dropped (it cannot log per call)."""
        dropped = self.dropped
        if dropped == self._dropped_logged or time.monotonic() < self._next_drop_log:
            return
        log.warning("prediction log dropped rows: its queue is full", extra={"fields": {
            "store": self.describe, "dropped": dropped - self._dropped_logged,
            "dropped_total": dropped, "pending": self.pending, "queue_max": self._queue_max,
            "database_up": self.up}})
        self._dropped_logged = dropped
        self._next_drop_log = time.monotonic() + DROP_LOG_S

    def _lose_queue(self, why: str) -> None:
        """At close, with no way to write them: count the queued rows as lost, and say so."""
        with self._lock:
            n = self._queued
            self._rows.clear()
            self._queued = 0
        if n:
            self.failed += n
            log.error("prediction log rows lost at close", extra={"fields": {
                "store": self.describe, "rows": n, "reason": why}})

    def _take(self) -> tuple[list[tuple[float, LogRows]], int]:
        """Batches from the queue's front, about FLUSH_ROWS rows (at least one batch)."""
        with self._lock:
            taken: list[tuple[float, LogRows]] = []
            n = 0
            while self._rows and (not taken or n + len(self._rows[0][1]) <= FLUSH_ROWS):
                batch = self._rows.popleft()
                taken.append(batch)
                n += len(batch[1])
            return taken, n

    def _flush(self, conn: Conn) -> bool:
        """Write everything queued; False when the connection was lost (rows kept)."""
        while True:
            batches, n = self._take()
            if not batches:
                return True
            try:
                with self._transaction(conn):
                    written = self._insert_predictions(conn, batches)
                self.written += written
            except Exception as err:
                if self._lost_writer(err):
                    with self._lock:  # back to the front, still counted against the bound
                        self._rows.extendleft(reversed(batches))
                    return False
                # Never raised into the hot path; the rows are lost, and say so.
                self.failed += n
                log.exception("prediction log write failed", extra={"fields": {
                    "store": self.describe, "rows": n}})
            with self._lock:
                self._queued -= n

    def _record_outcomes(self, conn: Conn, outcomes: Sequence[Outcome], score: Score,
                         reported_at: float) -> list[OutcomeResult]:
        ids = list(dict.fromkeys(item.prediction_id for item in outcomes))
        with self._transaction(conn):
            logged = self._by_id(conn, "SELECT prediction_id, model, version, order_date, value,"
                                       " lower, upper, promised_days, probabilities"
                                       " FROM predictions", ids)
            unknown = [pid for pid in ids if pid not in logged]
            if unknown:
                raise UnknownPredictions(unknown)
            known = {pid: row[1] for pid, row in self._by_id(
                conn, "SELECT prediction_id, actual FROM outcomes", ids).items()}
            results: list[OutcomeResult] = []
            new: list[tuple[Any, ...]] = []
            conflicts: list[str] = []
            for index, item in enumerate(outcomes):
                pid = item.prediction_id
                _, model, version, order_date, value, lower, upper, promised, blob = logged[pid]
                proba = (None if blob is None
                         else tuple(np.frombuffer(bytes(blob), dtype=np.float64)))
                terms = score(index, item.actual, model, version,
                              Logged(value, lower, upper, proba, order_date, promised))
                previous = known.get(pid)
                if previous is not None:
                    if abs(previous - terms.actual) > SAME_ACTUAL:
                        conflicts.append(pid)
                    results.append(OutcomeResult(pid, model, version, duplicate=True))
                    continue
                known[pid] = terms.actual  # a repeat later in this batch is a duplicate of it
                new.append((pid, model, version, float(terms.actual), terms.label,
                            terms.delivery_date, reported_at, _float(terms.error),
                            _int(terms.covered), _int(terms.on_time), _float(terms.log_loss),
                            _int(terms.correct), _float(terms.brier)))
                results.append(OutcomeResult(pid, model, version, duplicate=False))
            if conflicts:
                raise ConflictingOutcomes(list(dict.fromkeys(conflicts)))
            conn.cursor().executemany(self._sql(_INSERT_OUTCOME), new)
        return results

    def _by_id(self, conn: Conn, select: str,
               ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start:start + IDS_PER_QUERY]
            sql = f"{select} WHERE prediction_id IN ({', '.join('?' * len(chunk))})"
            found.update((row[0], tuple(row)) for row in conn.execute(self._sql(sql), chunk))
        return found


def _run_job(conn: Conn, job: Job, future: Future[Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = job(conn)
    except Exception as err:
        future.set_exception(err)
    else:
        future.set_result(result)


def prediction_rows(batches: Iterable[tuple[float, LogRows]]) -> Iterator[tuple[Any, ...]]:
    """The predictions as rows in PREDICTION_COLUMNS order."""
    for at, rows in batches:
        if isinstance(rows, AnsweredBatch):
            yield from rows.rows(at)
            continue
        for p in rows:
            yield (p.prediction_id, p.model, p.version, at, p.order_date,
                   p.value, p.lower, p.upper, p.promised_days, p.probabilities)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _event(row: Sequence[Any]) -> Event:
    event_id, at, kind, model, version, rule, state, value, reason, actor, detail = row
    return Event(int(event_id), at, kind, model, version, rule, state, _float(value), reason,
                 actor, json.loads(detail))


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
