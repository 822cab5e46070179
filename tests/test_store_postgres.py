"""What only the PostgreSQL store has: several processes on one database (migrations under
a lock, outcomes reported through two stores at once, events in commit order, the lead
lock and its hand-over), and outages (rows kept and written after, bounded and counted
drops, UNAVAILABLE for blocking calls, reconnection). Outages stop a cluster of their own,
so the session's cluster (tests/conftest.py) keeps serving the other tests."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from models.artifact import OutputSpec
from models.kinds import Actual, Logged, Terms, kind_of
from server.storage import backends
from server.storage.base import LoggedPrediction, Outcome, Store, StoreUnavailable
from server.storage.postgres import SCHEMA_VERSION, PostgresStore, redact
from tests import pgcluster
from tests.pgcluster import Cluster

MODEL = "delivery_eta"
DELIVERY = OutputSpec()


def score(index: int, actual: Actual, model: str, version: str, logged: Logged) -> Terms:
    return kind_of(DELIVERY).terms(DELIVERY, f"outcomes[{index}]", actual, logged)


def prediction(prediction_id: str, version: str = "1.0.0") -> LoggedPrediction:
    return LoggedPrediction(prediction_id, MODEL, version, "2025-01-01", 3.0, 2.0, 5.0, 4)


def days(prediction_id: str, value: float) -> Outcome:
    return Outcome(prediction_id, Actual(value=value, number_field="transit_days"))


def pid() -> str:
    return uuid.uuid4().hex


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def url(postgres: Cluster) -> str:
    return postgres.database()


@pytest.fixture
def stores() -> Iterator[Callable[..., PostgresStore]]:
    opened: list[PostgresStore] = []

    def make(target: str, start: bool = True, **kwargs: Any) -> PostgresStore:
        store = backends.open_store(target, **kwargs)
        assert isinstance(store, PostgresStore)
        opened.append(store)
        if start:
            store.start()
        return store

    yield make
    for store in opened:
        store.close()


def test_replicas_starting_together_migrate_once(url: str,
                                                 stores: Callable[..., Store]) -> None:
    opened: list[Store] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(stores(url, start=False))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(opened) == 4
    with psycopg.connect(url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM waybill_schema")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_an_outcome_reported_through_another_store_finds_the_prediction(
        url: str, stores: Callable[..., Store]) -> None:
    one, two = stores(url), stores(url)
    a = pid()
    one.log_predictions([prediction(a)])
    one.flush()
    (result,) = two.report_outcomes([days(a, 4)], score)
    assert not result.duplicate
    (figures,) = one.accuracy(MODEL, since_s=60)
    assert (figures.outcomes, figures.mae, figures.coverage, figures.on_time) == (
        1, 1.0, 1.0, 1.0)
    assert isinstance(figures.coverage, float)  # avg(smallint) is numeric: read as float


def test_the_same_outcome_through_two_stores_at_once_is_recorded_once(
        url: str, stores: Callable[..., Store]) -> None:
    one, two = stores(url), stores(url)
    ids = [pid() for _ in range(200)]
    one.log_predictions([prediction(i) for i in ids])
    one.flush()
    results: list[list[bool]] = []
    barrier = threading.Barrier(2)

    def report(store: Store) -> None:
        barrier.wait()
        results.append([r.duplicate for r in store.report_outcomes(
            [days(i, 3) for i in ids], score)])

    threads = [threading.Thread(target=report, args=(s,)) for s in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 2
    # Each id was new to exactly one of the two reports.
    assert all(a != b for a, b in zip(*results, strict=True))
    assert one.accuracy(MODEL, since_s=60)[0].outcomes == 200


def test_events_of_two_stores_take_ids_in_commit_order(
        url: str, stores: Callable[..., Store]) -> None:
    one, two = stores(url), stores(url)

    def record(store: Store, name: str) -> None:
        for n in range(25):
            store.record_event("alert", MODEL, rule=name, value=n)

    threads = [threading.Thread(target=record, args=(s, name))
               for s, name in ((one, "one"), (two, "two"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    events = one.events(limit=100)
    assert len(events) == 50
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_one_store_leads_and_another_takes_over_when_it_goes(
        url: str, stores: Callable[..., Store]) -> None:
    one, two = stores(url), stores(url)
    assert one.lead() and one.lead()  # held, and asked again: still held
    assert not two.lead()
    one.close()
    wait_for(two.lead, "the second store to take the lead")
    assert not one.lead()  # closed: never leads again


def test_the_url_password_never_shows() -> None:
    assert redact("postgresql://waybill:s3cret@db.internal:5432/waybill") == (
        "postgresql://waybill:***@db.internal:5432/waybill")
    assert redact("postgresql://waybill@db/waybill") == "postgresql://waybill@db/waybill"
    assert "s3cret" not in backends.describe("postgres://u:s3cret@[::1]:5/x")


def test_an_unreachable_database_refuses_to_open() -> None:
    port = pgcluster.free_port()  # nothing listens there
    with pytest.raises(StoreUnavailable, match="cannot connect") as caught:
        backends.open_store(f"postgresql://u:s3cret@127.0.0.1:{port}/x")
    assert "s3cret" not in str(caught.value)


# -- outages -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    reason = pgcluster.unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.close()


def test_an_outage_keeps_rows_queued_refuses_outcomes_and_catches_up(
        own_cluster: Cluster, stores: Callable[..., PostgresStore],
        caplog: pytest.LogCaptureFixture) -> None:
    url = own_cluster.database()
    store = stores(url, flush_interval_s=0.05, queue_max=1000, op_timeout_s=1.0)
    a = pid()
    store.log_predictions([prediction(a)])
    store.flush()
    with caplog.at_level(logging.INFO, logger="waybill.store"):
        own_cluster.stop()
        try:
            early = [pid() for _ in range(300)]
            store.log_predictions([prediction(i) for i in early])  # queued, never raised
            wait_for(lambda: not store.up, "the store to notice the outage")
            with pytest.raises(StoreUnavailable):
                store.report_outcomes([days(a, 4)], score)
            with pytest.raises(StoreUnavailable):
                store.accuracy(MODEL, since_s=60)
            with pytest.raises(StoreUnavailable):
                store.flush()
            late = [pid() for _ in range(900)]  # 700 fit, 200 beyond the bound
            store.log_predictions([prediction(i) for i in late])
            assert (store.pending, store.dropped) == (1000, 200)
            wait_for(lambda: any(r.getMessage().startswith("prediction log dropped")
                                 for r in caplog.records), "the dropped-rows log line")
        finally:
            own_cluster.start()
        wait_for(lambda: store.up and store.pending == 0, "the backlog to be written")
    assert (store.written, store.failed) == (1001, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("store database unreachable") for m in messages)
    assert any(m.startswith("store database reachable again") for m in messages)
    (result,) = store.report_outcomes([days(early[0], 4)], score)
    assert not result.duplicate
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM predictions").fetchone()
    assert row is not None and row[0] == 1001


def test_close_during_an_outage_counts_what_it_could_not_write(
        own_cluster: Cluster, stores: Callable[..., PostgresStore]) -> None:
    url = own_cluster.database()
    store = stores(url, flush_interval_s=0.05, op_timeout_s=1.0)
    own_cluster.stop()
    try:
        store.log_predictions([prediction(pid()) for _ in range(10)])
        wait_for(lambda: not store.up, "the store to notice the outage")
        store.close(timeout=10)
        assert (store.pending, store.failed, store.written) == (0, 10, 0)
    finally:
        own_cluster.start()
