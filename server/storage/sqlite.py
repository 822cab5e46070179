"""The SQLite backend of the store: one file, the embedded default.

Durable local state in one SQLite file: predictions, outcomes, events, overrides. The
prediction log lets clients report what actually happened (outcomes) and lets the
server measure live accuracy per version; the event log keeps rollbacks, clears, applied
configs and alert changes; the overrides table keeps the overrides in force, so a server
killed with SIGKILL and restarted is still rolled back.

SQLite has a single writer anyway, and a queue is cheaper than lock contention: every write
(prediction batches, outcomes, events, overrides) runs on the one writer thread
(``store.py``), in FIFO order, so a job sees every prediction queued before it was
submitted. Readers open their own short-lived read-only connections: WAL lets them read
while the writer writes. Worker processes of one pod share the file (``--workers``).
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from server.storage.base import LogRows
from server.storage.store import Conn, SqlStore, prediction_rows

log = logging.getLogger("waybill.store")

T = TypeVar("T")

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
# Rows per multi-row INSERT: 990 parameters, under the 999 of SQLite before 3.32. One
# statement for 99 rows costs 2.7 us a row against 3.6 for 99 statements (bench numbers
# in bench/RESULTS.md, "Cost table").
ROWS_PER_INSERT = 99
_INSERT_PREDICTIONS = _INSERT_PREDICTION + ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" * (
    ROWS_PER_INSERT - 1)


class SqliteStore(SqlStore):
    """The server's SQLite state. Start it before blocking calls; close it at exit."""

    backend = "sqlite"
    ORDER_COLUMN: ClassVar[str] = "rowid"

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(str(path), **options)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = _open_writer(self.path)
        try:
            _migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise

    def _writer(self) -> sqlite3.Connection | None:
        return self._conn

    def _lost_writer(self, error: BaseException) -> bool:
        return False  # a file does not go away: every failure is the write's own

    def _close_writer(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _transaction(self, conn: Conn, *, durable: bool = False) -> Any:
        return _transaction(conn, durable=durable)

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)) as conn:
            yield conn

    def _job(self, job: Callable[[Conn], T]) -> T:
        return self._call(job)  # the one writer, after the rows queued before

    def _insert_predictions(self, conn: Conn,
                            batches: Sequence[tuple[float, LogRows]]) -> int:
        """Whole statements of ROWS_PER_INSERT rows, then the rest one by one: a
        statement per row cost 3.6 us a row, and let the event loop and this thread
        trade the GIL at every row (sqlite3 releases it around each statement)."""
        rows = list(prediction_rows(batches))
        full = len(rows) - len(rows) % ROWS_PER_INSERT
        written = 0
        for start in range(0, full, ROWS_PER_INSERT):
            cursor = conn.execute(_INSERT_PREDICTIONS, list(itertools.chain.from_iterable(
                rows[start:start + ROWS_PER_INSERT])))
            written += max(int(cursor.rowcount), 0)
        if full < len(rows):
            cursor = conn.executemany(_INSERT_PREDICTION, rows[full:])
            written += max(int(cursor.rowcount), 0)
        return written


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
