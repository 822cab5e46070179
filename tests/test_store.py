"""The store on both backends, SQLite on real files and PostgreSQL on a throwaway cluster
(tests/pgcluster.py): outcomes and accuracy on known numbers, all-or-nothing batches, the
bounded hot-path queue, events and overrides across reopen and SIGKILL, claims, retention.
A settable clock makes time windows and retention deterministic; a long flush interval
keeps predictions queued until a blocking call makes the writer flush. What only one
backend has (SQLite's file and its migration from the first schema; PostgreSQL's outages,
lead and concurrent replicas) is tested below the shared tests and in
tests/test_store_postgres.py."""

from __future__ import annotations

import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from models.artifact import OutputSpec
from models.kinds import Actual, Logged, OutcomeRefused, Terms, kind_of
from server.serving.ids import new_prediction_ids
from server.storage import backends
from server.storage.base import (
    Accuracy,
    AnsweredBatch,
    Claim,
    ConflictingOutcomes,
    LoggedPrediction,
    Outcome,
    OutcomeResult,
    Store,
    UnknownPredictions,
)
from server.storage.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteStore
from tests.pgcluster import Cluster

ROOT = Path(__file__).resolve().parent.parent
MODEL = "delivery_eta"
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# The demo's delivery model: transit days of 0 to 365, counted from order_date.
DELIVERY = OutputSpec()


def score(index: int, actual: Actual, model: str, version: str, logged: Logged) -> Terms:
    return kind_of(DELIVERY).terms(DELIVERY, f"outcomes[{index}]", actual, logged)


def report(store: Store, outcomes: list[Outcome]) -> list[OutcomeResult]:
    return store.report_outcomes(outcomes, score)


def days(prediction_id: str, value: object) -> Outcome:
    return Outcome(prediction_id, Actual(value=value, number_field="transit_days"))  # type: ignore[arg-type]


def dated(prediction_id: str, when: str) -> Outcome:
    return Outcome(prediction_id, Actual(delivery_date=when))


def pid() -> str:
    return uuid.uuid4().hex


def prediction(prediction_id: str, version: str = "1.0.0", *, model: str = MODEL,
               order_date: str | None = "2025-01-01", median: float = 3.0, lower: float = 2.0,
               upper: float = 5.0, promised_days: int | None = 4) -> LoggedPrediction:
    return LoggedPrediction(prediction_id, model, version, order_date, median, lower, upper,
                            promised_days)


def count_sqlite(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        n: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    conn.close()
    return n


def count_postgres(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


class Database:
    """Where a test's stores live: an SQLite file, or a fresh PostgreSQL database."""

    def __init__(self, backend: str, target: str) -> None:
        self.backend = backend
        self.target = target  # the --database value

    def count(self, table: str) -> int:
        if self.backend == "sqlite":
            return count_sqlite(Path(self.target), table)
        return count_postgres(self.target, table)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database("sqlite", str(tmp_path / "state" / "state.db"))
    cluster: Cluster = request.getfixturevalue("postgres")
    return Database("postgresql", cluster.database())


@pytest.fixture
def open_store(database: Database, clock: Clock) -> Iterator[Callable[..., Store]]:
    """Started stores on the test's database; all closed at teardown."""
    opened: list[Store] = []

    def make(start: bool = True, **kwargs: Any) -> Store:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("flush_interval_s", 60.0)  # only blocking calls flush
        store = backends.open_store(database.target, **kwargs)
        opened.append(store)
        if start:
            store.start()
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., Store]) -> Store:
    return open_store()


# -- outcomes and accuracy -----------------------------------------------------------------


def test_accuracy_per_version_on_known_numbers(store: Store, clock: Clock) -> None:
    a, b, c, d, other = (pid() for _ in range(5))
    store.log_predictions([
        prediction(a, median=3, lower=2, upper=5, promised_days=4),
        prediction(b, median=5, lower=4, upper=6, promised_days=5),
        prediction(c, median=2, lower=1, upper=3, promised_days=None, order_date=None),
        prediction(d, "1.1.0", median=4, lower=3, upper=5, promised_days=None),
        prediction(other, model="other"),
    ])
    results = report(store, [
        days(a, 4),  # error -1, covered, on time (4 <= 4)
        dated(b, "2025-01-08"),  # 7 days: error -2, not covered, late
        days(c, 1),  # error +1, covered (on the lower bound), no promise
        days(other, 9),  # another model: never in MODEL's figures
    ])
    assert [(r.prediction_id, r.model, r.version, r.duplicate) for r in results] == [
        (a, MODEL, "1.0.0", False), (b, MODEL, "1.0.0", False), (c, MODEL, "1.0.0", False),
        (other, "other", "1.0.0", False)]
    clock.now += 1000
    report(store, [days(d, 4.5)])  # error -0.5, covered

    old, new = store.accuracy(MODEL, since_s=2000)
    assert old == Accuracy(MODEL, "1.0.0", 3, pytest.approx(4 / 3), pytest.approx(-2 / 3),
                           pytest.approx(2 / 3), 0.5)
    assert new == Accuracy(MODEL, "1.1.0", 1, 0.5, -0.5, 1.0, None)
    # Reported 1000 s ago: outside a 500 s window (the window is on report time).
    assert store.accuracy(MODEL, since_s=500) == [new]
    assert store.accuracy("nobody", since_s=2000) == []


def test_delivery_date_converts_via_order_date(store: Store) -> None:
    a = pid()
    store.log_predictions([prediction(a, order_date="2024-12-30", median=3, promised_days=3)])
    report(store, [dated(a, "2025-01-02")])  # across the year: 3 days
    (acc,) = store.accuracy(MODEL, since_s=60)
    assert (acc.mae, acc.bias, acc.on_time) == (0.0, 0.0, 1.0)
    # The same date again is the same actual: idempotent.
    (again,) = report(store, [days(a, 3.0)])
    assert again.duplicate


def test_duplicate_report_is_idempotent_and_counted_once(store: Store) -> None:
    a, b = pid(), pid()
    store.log_predictions([prediction(a), prediction(b)])
    first = report(store, [days(a, 4), days(b, 2),
                                   days(b, 2)])  # a repeat inside the batch
    assert [r.duplicate for r in first] == [False, False, True]
    again = report(store, [days(a, 4 + 1e-12)])
    assert [r.duplicate for r in again] == [True]
    (acc,) = store.accuracy(MODEL, since_s=60)
    assert acc.outcomes == 2


def test_conflicting_actual_is_refused_and_nothing_recorded(store: Store) -> None:
    a, b = pid(), pid()
    store.log_predictions([prediction(a), prediction(b)])
    report(store, [days(a, 4)])
    with pytest.raises(ConflictingOutcomes) as caught:
        report(store, [days(b, 3), days(a, 5)])
    assert caught.value.ids == (a,)
    # b was before the conflict in the same batch, and still was not recorded.
    assert [r.duplicate for r in report(store, [days(b, 3)])] == [False]


def test_unknown_ids_refuse_the_whole_batch(store: Store) -> None:
    a, missing, also_missing = pid(), pid(), pid()
    store.log_predictions([prediction(a)])
    with pytest.raises(UnknownPredictions) as caught:
        report(store, [days(a, 4), days(missing, 1),
                               days(also_missing, 1),
                               days(missing, 1)])
    assert caught.value.ids == (missing, also_missing)
    assert store.accuracy(MODEL, since_s=60) == []
    # The writer survived the failed job.
    assert [r.duplicate for r in report(store, [days(a, 4)])] == [False]


@pytest.mark.parametrize(("outcome", "field", "rule"), [
    (days("ID", -1.0), "outcomes[1].transit_days", "below_min"),
    (days("ID", 365.5), "outcomes[1].transit_days", "above_max"),
    (dated("ID", "2027-01-01"), "outcomes[1].delivery_date", "above_max"),
    (days("ID", math.nan), "outcomes[1].transit_days", "not_finite"),
    (days("ID", math.inf), "outcomes[1].transit_days", "not_finite"),
    (days("ID", "3"), "outcomes[1].transit_days", "wrong_type"),
    (Outcome("ID", Actual(label="late")), "outcomes[1].label", "wrong_kind"),
    (days("", 1), "outcomes[1].prediction_id", "required"),
    (dated("ID", "03/01/2025"), "outcomes[1].delivery_date", "invalid_date"),
    (dated("ID", "2025-02-30"), "outcomes[1].delivery_date", "invalid_date"),
    (dated("ID", "2024-12-31"), "outcomes[1].delivery_date", "before_order_date"),
    (dated("UNDATED", "2025-01-03"), "outcomes[1].delivery_date", "no_order_date"),
])
def test_invalid_outcomes_name_the_field(store: Store, outcome: Outcome, field: str,
                                         rule: str) -> None:
    ok, dated_id, undated = pid(), pid(), pid()
    store.log_predictions([prediction(ok), prediction(dated_id),
                           prediction(undated, order_date=None, promised_days=None)])
    target = {"ID": dated_id, "UNDATED": undated}.get(outcome.prediction_id,
                                                        outcome.prediction_id)
    bad = Outcome(target, outcome.actual)
    with pytest.raises(OutcomeRefused) as caught:
        report(store, [days(ok, 1), bad])
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert isinstance(caught.value, ValueError)
    assert store.accuracy(MODEL, since_s=60) == []  # the valid first item was not recorded


def test_a_prediction_still_queued_is_found(store: Store) -> None:
    store.flush()  # the writer has done its start-up turn and now waits 60 s
    a = pid()
    store.log_predictions([prediction(a)])
    assert store.pending == 1 and store.written == 0
    (result,) = report(store, [days(a, 3)])
    assert (result.prediction_id, result.duplicate) == (a, False)
    assert store.pending == 0 and store.written == 1


def test_close_writes_what_is_queued(open_store: Callable[..., Store],
                                     database: Database) -> None:
    store = open_store()
    store.flush()
    store.log_predictions([prediction(pid()) for _ in range(3)])
    assert store.pending == 3
    store.close()
    assert (store.pending, store.written) == (0, 3)
    assert database.count("predictions") == 3
    with pytest.raises(RuntimeError, match="closed"):
        store.flush()


# -- the hot-path queue --------------------------------------------------------------------


def test_an_answered_batch_is_logged_row_by_row_as_the_answer_had_it(
        open_store: Callable[..., Store]) -> None:
    """The predictor hands over one request's columns; each row is written as if it had
    been made alone: its order date as text, the promised days rounded half up, the
    interval, a classifier's probabilities, and nothing for a row without a date."""
    import numpy as np

    store = open_store()
    ids = new_prediction_ids(3)
    proba = np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
    store.log_predictions(AnsweredBatch(
        "m", "1.0.0", ids, [2.5, 3.49, 1.0], [1.0, 2.0, 0.5], [4.0, 5.0, 1.5],
        [20_000, None, 20_001], proba))
    store.flush()
    seen: dict[str, Logged] = {}

    def keep(index: int, actual: Actual, model: str, version: str, logged: Logged) -> Terms:
        seen[ids[index]] = logged
        return score(index, actual, model, version, logged)

    store.report_outcomes([days(i, 2.0) for i in ids], keep)
    assert seen[ids[0]] == Logged(2.5, 1.0, 4.0, (0.2, 0.8), "2024-10-04", 3)
    assert seen[ids[1]] == Logged(3.49, 2.0, 5.0, (0.5, 0.5), None, None)
    assert seen[ids[2]] == Logged(1.0, 0.5, 1.5, (1.0, 0.0), "2024-10-05", 1)


def test_a_flush_of_hundreds_of_rows_writes_each_once(open_store: Callable[..., Store],
                                                      database: Database) -> None:
    """More rows than one multi-row statement holds, with a duplicate id across two of
    them: every row lands once, and the duplicate is not counted as written."""
    store = open_store()
    ids = new_prediction_ids(250)
    store.log_predictions(AnsweredBatch("m", "1.0.0", ids, [1.0] * 250, None, None))
    store.log_predictions(AnsweredBatch("m", "1.0.0", [ids[7], *new_prediction_ids(99)],
                                        [1.0] * 100, None, None))
    store.flush()
    assert database.count("predictions") == 349
    assert store.written == 349


def test_a_batch_is_cut_to_what_fits_in_the_queue(open_store: Callable[..., Store]) -> None:
    store = open_store(start=False, queue_max=3)
    store.log_predictions(AnsweredBatch("m", "1.0.0", new_prediction_ids(2), [1.0, 2.0],
                                        None, None))
    store.log_predictions(AnsweredBatch("m", "1.0.0", new_prediction_ids(4),
                                        [1.0, 2.0, 3.0, 4.0], None, None, [1, 2, 3, 4]))
    assert (store.pending, store.dropped) == (3, 3)
    store.close()


def test_queue_bound_drops_and_counts_without_raising(open_store: Callable[..., Store],
                                                      database: Database) -> None:
    store = open_store(start=False, queue_max=5)
    store.log_predictions([prediction(pid()) for _ in range(3)])
    store.log_predictions([prediction(pid()) for _ in range(4)])  # 2 fit, 2 dropped
    store.log_predictions([prediction(pid())])
    store.log_predictions([])
    store.log_predictions(None)  # type: ignore[arg-type]  # a bug upstream still must not raise
    assert (store.pending, store.dropped) == (5, 3)
    with pytest.raises(RuntimeError, match="not started"):
        store.flush()
    store.close()  # writes what was queued, on the caller's thread
    assert store.written == 5
    assert database.count("predictions") == 5
    store.log_predictions([prediction(pid())])  # after close: dropped, not raised
    assert store.dropped == 4


def test_a_failed_write_is_logged_counted_and_the_writer_goes_on(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="waybill.store"):
        store.log_predictions([object()])  # type: ignore[list-item]
        store.flush()
    assert store.failed == 1
    assert any(r.getMessage() == "prediction log write failed" for r in caplog.records)
    a = pid()
    store.log_predictions([prediction(a)])
    assert report(store, [days(a, 1)])[0].prediction_id == a


# -- events and overrides ------------------------------------------------------------------


def test_events_filter_page_and_survive_reopen(open_store: Callable[..., Store],
                                               clock: Clock) -> None:
    store = open_store()
    recorded = [
        store.record_event("rollback", MODEL, version="1.1.0", reason="mae above 2",
                           actor="alice", detail={"to": "1.0.0"}),
        store.record_event("alert", MODEL, version="1.1.0", rule="mae", state="firing",
                           value=2.5),
        store.record_event("config_applied", "", detail={"content_hash": "abc", "n": [1, 2]}),
        store.record_event("alert", "other", rule="coverage", state="resolved", value=0.9),
        store.record_event("override_cleared", MODEL, actor="bob"),
    ]
    first = recorded[0]
    assert first.at == "2023-11-14T22:13:20.000Z"
    assert (first.kind, first.model, first.version, first.reason, first.actor, first.detail,
            first.value, first.rule, first.state) == (
        "rollback", MODEL, "1.1.0", "mae above 2", "alice", {"to": "1.0.0"}, None, "", "")
    ids = [e.id for e in recorded]
    assert ids == sorted(ids) and len(set(ids)) == 5

    assert store.events() == recorded
    assert store.events(after_id=ids[1], limit=2) == recorded[2:4]
    assert store.events(model=MODEL) == [recorded[0], recorded[1], recorded[4]]
    assert store.events(kinds=("alert",)) == [recorded[1], recorded[3]]
    assert store.events(kinds="alert") == [recorded[1], recorded[3]]
    assert store.events(model=MODEL, kinds={"alert", "rollback"}, after_id=ids[0]) == [
        recorded[1]]
    with pytest.raises(ValueError, match="limit"):
        store.events(limit=0)
    with pytest.raises(TypeError):
        store.record_event("alert", MODEL, detail={"bad": object()})

    store.close()
    reopened = open_store(start=False)
    assert reopened.events() == recorded


def test_overrides_save_drop_and_survive_reopen(open_store: Callable[..., Store]) -> None:
    store = open_store()
    store.save_override(MODEL, {"version": "1.0.0", "reason": "mae"})
    store.save_override("other", {"version": "2.0.0"})
    store.save_override(MODEL, {"version": "0.9.0", "reason": "still bad"})  # replaces
    store.drop_override("other")
    store.drop_override("never-saved")  # nothing to drop is fine
    assert store.overrides() == {MODEL: {"version": "0.9.0", "reason": "still bad"}}
    store.close()
    assert open_store(start=False).overrides() == {
        MODEL: {"version": "0.9.0", "reason": "still bad"}}


def test_a_claim_saves_only_over_what_the_claimant_expected(
        open_store: Callable[..., Store]) -> None:
    """Two processes rolling one model back at once: the first claim wins, the second
    finds the winner's override and saves nothing."""
    first, second = open_store(), open_store()
    mine, theirs = {"actor": "alert:a", "n": 1}, {"actor": "admin", "n": 2}
    assert first.claim_override(MODEL, mine, None) == Claim(True, mine)
    assert second.claim_override(MODEL, theirs, None) == Claim(False, mine)
    # Claimed over the one it expected (a stale override it had followed): saved.
    assert second.claim_override(MODEL, theirs, mine) == Claim(True, theirs)
    assert first.claim_override(MODEL, mine, mine) == Claim(False, theirs)
    first.drop_override(MODEL)
    assert second.claim_override(MODEL, theirs, theirs) == Claim(False, None)
    assert second.overrides() == {}


def test_event_and_override_survive_sigkill(database: Database) -> None:
    code = (
        "import os, signal, sys\n"
        "from server.storage.backends import open_store\n"
        "store = open_store(sys.argv[1])\n"
        "store.start()\n"
        "store.record_event('rollback', 'delivery_eta', version='1.1.0', actor='test')\n"
        "store.save_override('delivery_eta', {'version': '1.0.0'})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, database.target], cwd=ROOT, env=env,
                          capture_output=True, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    store = backends.open_store(database.target)
    try:
        (event,) = store.events()
        assert (event.kind, event.model, event.version, event.actor) == (
            "rollback", MODEL, "1.1.0", "test")
        assert store.overrides() == {MODEL: {"version": "1.0.0"}}
    finally:
        store.close()


# -- retention and the file ------------------------------------------------------------------


def test_purge_deletes_expired_predictions_with_their_outcomes(
        open_store: Callable[..., Store], clock: Clock, database: Database) -> None:
    store = open_store(retention_s=100)
    old = [pid() for _ in range(4)]
    store.log_predictions([prediction(i) for i in old])
    report(store, [days(i, 1) for i in old[:2]])
    clock.now += 60
    new = [pid() for _ in range(3)]
    store.log_predictions([prediction(i) for i in new])
    report(store, [days(new[0], 1)])
    assert store.purge() == 0  # nothing is older than 100 s yet

    clock.now += 50  # the first batch is 110 s old, the second 50 s
    assert store.purge() == 4
    assert (database.count("predictions"), database.count("outcomes")) == (3, 1)
    with pytest.raises(UnknownPredictions):
        report(store, [days(old[3], 1)])
    (acc,) = store.accuracy(MODEL, since_s=1000)
    assert acc.outcomes == 1


def test_retention_runs_when_the_writer_starts(open_store: Callable[..., Store], clock: Clock,
                                              database: Database) -> None:
    first = open_store(start=False, retention_s=100)
    first.log_predictions([prediction(pid()) for _ in range(3)])
    first.close()
    clock.now += 101
    store = open_store(retention_s=100)
    # The start-up purge runs after the jobs of the writer's first turn, so a second
    # job is the first one certain to come after it.
    store.flush()
    store.flush()
    assert database.count("predictions") == 0


def test_purge_caps_the_count_keeping_the_newest(open_store: Callable[..., Store],
                                                 database: Database) -> None:
    store = open_store(max_predictions=5, max_events=3)
    ids = [pid() for _ in range(12)]
    for i in range(0, 12, 4):
        store.log_predictions([prediction(j) for j in ids[i:i + 4]])
    for n in range(5):
        store.record_event("alert", MODEL, value=n)
    assert store.purge() == 7
    assert database.count("predictions") == 5
    report(store, [days(i, 1) for i in ids[-5:]])  # the newest remain
    assert [e.value for e in store.events()] == [2.0, 3.0, 4.0]


def test_schema_version_and_wal_mode(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    finally:
        conn.close()


def test_a_first_schema_log_is_migrated_with_its_rows(tmp_path: Path, clock: Clock) -> None:
    """A log written before model kinds keeps its predictions and outcomes: an old
    outcome still counts, and an old prediction still takes an outcome."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany(
        "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [("old-a", MODEL, "1.0.0", T0, "2025-01-01", 3.0, 2.0, 5.0, 3),
         ("old-b", MODEL, "1.0.0", T0, "2025-01-01", 4.0, 3.0, 6.0, 4)])
    conn.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 ("old-a", MODEL, "1.0.0", 5.0, None, T0, -2.0, 1, 0))
    conn.commit()
    conn.close()
    store = SqliteStore(path, clock=clock)
    store.start()
    try:
        report(store, [days("old-b", 4)])
        (figures,) = store.accuracy(MODEL, since_s=3600)
        assert (figures.outcomes, figures.mae, figures.bias) == (2, 1.0, -1.0)
        assert (figures.coverage, figures.on_time) == (1.0, 0.5)
    finally:
        store.close()


def test_a_newer_schema_is_refused(database: Database) -> None:
    backends.open_store(database.target).close()
    if database.backend == "sqlite":
        conn = sqlite3.connect(database.target)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(database.target) as pg:
            pg.execute("INSERT INTO waybill_schema (version) VALUES (99)")
    with pytest.raises(RuntimeError, match="newer"):
        backends.open_store(database.target)


def test_throughput(open_store: Callable[..., Store]) -> None:
    """Not a benchmark gate: prints the hot-path cost and the writer's rate (run with -s)."""
    rows_per_call, calls = 32, 1500
    store = open_store(queue_max=10 * rows_per_call * calls)  # no early wake, no drops
    store.flush()
    batches = [[prediction(pid(), median=3.0 + k % 7) for k in range(rows_per_call)]
               for _ in range(calls)]
    started = time.perf_counter()
    for batch in batches:
        store.log_predictions(batch)
    logged = time.perf_counter() - started
    started = time.perf_counter()
    store.flush()
    written = time.perf_counter() - started
    n = rows_per_call * calls
    assert store.written == n and store.dropped == 0
    print(f"\nstore ({store.backend}): log_predictions {logged / n * 1e6:.3f} us/row"
          f" ({rows_per_call} rows/call);"
          f" writer {n / written:,.0f} rows/s ({n} rows in one flush)")


@pytest.mark.parametrize("per_call", [1, 15, 16, 1000])  # the loop, and numpy from 16
def test_prediction_ids_are_version_7_uuids_that_sort_in_minting_order(per_call: int) -> None:
    def mint() -> list[str]:
        return [i for _ in range(1000 // per_call) for i in new_prediction_ids(per_call)]

    before = time.time_ns() // 1_000_000
    first = mint()
    minted = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == minted:  # the next millisecond, not a sleep
        pass
    second = mint()
    assert before <= int(first[0][:12], 16) <= minted  # Unix milliseconds lead
    parsed = [uuid.UUID(i) for i in first + second]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert len(set(first + second)) == len(first) + len(second)
    assert all(len(i) == 32 and i == i.lower() for i in first)
    # Later ids sort after earlier ones, so the log's key index only grows at its end.
    assert max(first) < min(second)
