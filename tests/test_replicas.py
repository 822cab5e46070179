"""Three `waybill serve` replicas on one PostgreSQL database: one truth for all of them.

In order, on the same three processes and database:

1. predictions on one replica, outcomes reported to another right away: all accepted;
2. an operator's Rollback on one replica is in force on all three within 2 s, and a
   ClearOverride on another clears all three, with one event each;
3. an accuracy rule fed by outcomes spread over the three replicas rolls the canary back
   on all three within 2 s of the first, with exactly one rollback event and one page;
4. SIGKILL of one replica under load loses no outcome that was acknowledged;
5. PostgreSQL stopped for 10 s under load fails no Predict call, ReportOutcome answers
   UNAVAILABLE, health reports the store NOT_SERVING (predictions still SERVING), and the
   log catches up or counts what it dropped.

Intervals are shrunk by flags (alerts every 0.2 s, log flushed every 0.05 s); overrides
are followed at the default interval (0.5 s).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests import pgcluster
from tests.harness import ServerProcess
from tests.pgcluster import Cluster
from tests.routing_fixtures import admin, routing, wait_for
from tests.test_metrics import scrape, value
from tests.test_server_predict import struct_rows

pytestmark = pytest.mark.slow

MODEL = "delivery_eta"
REPLICAS = 3
IN_FORCE_S = 2.0  # every replica follows a rollback or a clear within this
OUTAGE_S = 10.0
ROUTING = """\
version = 1

[models.delivery_eta]
stable = "1.0.0"
routes = [
  { version = "1.0.0", weight = 50, label = "stable" },
  { version = "1.1.0", weight = 50, label = "canary" },
]

[[models.delivery_eta.alerts]]
name = "canary-accuracy"
metric = "mae"
scope = "canary"
op = ">"
threshold = 3
window = "10m"
min_samples = 40
severity = "critical"
action = "rollback"
"""


class Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Fleet:
    def __init__(self, cluster: Cluster, url: str, replicas: list[ServerProcess],
                 pages: list[dict[str, Any]]) -> None:
        self.cluster = cluster
        self.url = url
        self.replicas = replicas
        self.pages = pages
        self.channels = [grpc.insecure_channel(r.target) for r in replicas]

    def stub(self, i: int) -> pb_grpc.PredictionServiceStub:
        return pb_grpc.PredictionServiceStub(self.channels[i])

    def reconnect(self, i: int) -> None:
        self.channels[i].close()
        self.channels[i] = grpc.insecure_channel(self.replicas[i].target)

    def predict(self, i: int, row: dict[str, object], version: str) -> pb.Prediction:
        reply = self.stub(i).Predict(
            pb.PredictRequest(model=MODEL, rows=struct_rows([row])),
            metadata=(("x-model-version", version),), timeout=10)
        assert reply.version == version
        return reply.predictions[0]

    def report(self, i: int, outcomes: list[pb.Outcome]) -> pb.ReportOutcomeResponse:
        reply: pb.ReportOutcomeResponse = self.stub(i).ReportOutcome(
            pb.ReportOutcomeRequest(outcomes=outcomes), timeout=10)
        return reply

    def overridden(self) -> list[bool]:
        return [routing(r.admin_target).models[0].HasField("override") for r in self.replicas]

    def events(self, kind: str) -> list[admin_pb2.Event]:
        reply = admin(self.replicas[0].admin_target).ListEvents(
            admin_pb2.ListEventsRequest(kinds=[kind], limit=1000), timeout=5)
        return list(reply.events)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return list(conn.execute(query, params).fetchall())  # type: ignore[arg-type]


def spread_over(fleet: Fleet, expect: bool) -> float:
    """Seconds from the first replica to the last showing the override (``expect``)."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + 30
    while len(seen) < REPLICAS:
        assert time.monotonic() < deadline, f"replicas {sorted(seen)} only, after 30 s"
        for i, state in enumerate(fleet.overridden()):
            if state == expect and i not in seen:
                seen[i] = time.monotonic()
        time.sleep(0.01)
    return max(seen.values()) - min(seen.values())


@pytest.fixture(scope="module")
def fleet(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    reason = pgcluster.unavailable()
    if reason is not None:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("replicas")
    config = workdir / "routing.toml"
    config.write_text(ROUTING)
    received: list[dict[str, Any]] = []
    handler = type("Handler", (Hook,), {"received": received})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cluster = Cluster()
    replicas: list[ServerProcess] = []
    try:
        cluster.start()
        url = cluster.database("waybill")
        replicas = [ServerProcess(
            workdir / f"replica{i}", "--registry", str(registry), "--routing", str(config),
            "--database", url, "--alert-interval", "0.2", "--log-flush-interval", "0.05",
            "--database-timeout", "1", "--log-queue-max", "3000", "--no-drift",
            "--alert-webhook", f"http://127.0.0.1:{httpd.server_address[1]}/hook")
            for i in range(REPLICAS)]
        # Started together: the schema is migrated once, under the lock.
        starters = [threading.Thread(target=r.start) for r in replicas]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join(120)
        assert all(r.port for r in replicas), [r.log_text()[-2000:] for r in replicas]
        yield Fleet(cluster, url, replicas, received)
    finally:
        for replica in replicas:
            try:
                replica.stop()
            finally:
                replica.kill()
        cluster.close()
        httpd.shutdown()
        httpd.server_close()


def test_the_schema_was_migrated_once(fleet: Fleet) -> None:
    assert fleet.sql("SELECT version FROM waybill_schema") == [(1,)]


def test_an_outcome_is_accepted_by_any_replica_for_any_prediction(
        fleet: Fleet, rows: list[dict[str, object]]) -> None:
    recorded = 0
    for n in range(30):
        made_on, told = n % REPLICAS, (n + 1) % REPLICAS
        version = ("1.0.0", "1.1.0")[n % 2]
        made = fleet.predict(made_on, rows[n], version)
        # At once: the replica that answered may not have written the prediction yet.
        reply = fleet.report(told, [pb.Outcome(prediction_id=made.prediction_id,
                                               transit_days=made.transit_days)])
        recorded += reply.recorded
    assert recorded == 30
    # Accuracy counts every replica's outcomes, wherever it is asked.
    for replica in fleet.replicas:
        reply = admin(replica.admin_target).GetAccuracy(
            admin_pb2.GetAccuracyRequest(model=MODEL), timeout=5)
        assert sorted((v.version, v.outcomes) for v in reply.versions) == [
            ("1.0.0", 15), ("1.1.0", 15)]


def test_a_rollback_and_a_clear_on_one_replica_hold_on_all(fleet: Fleet) -> None:
    assert fleet.overridden() == [False] * REPLICAS
    reply = admin(fleet.replicas[0].admin_target).Rollback(
        admin_pb2.RollbackRequest(model=MODEL, reason="replica test"), timeout=10)
    assert reply.changed
    assert spread_over(fleet, True) <= IN_FORCE_S
    reply = admin(fleet.replicas[1].admin_target).ClearOverride(
        admin_pb2.ClearOverrideRequest(model=MODEL), timeout=10)
    assert reply.changed
    assert spread_over(fleet, False) <= IN_FORCE_S
    assert [(e.actor, e.reason) for e in fleet.events("rollback")] == [("admin", "replica test")]
    assert len(fleet.events("override_cleared")) == 1
    assert fleet.sql("SELECT count(*) FROM overrides") == [(0,)]


def test_an_accuracy_rollback_from_evidence_on_every_replica_holds_on_all_at_once(
        fleet: Fleet, rows: list[dict[str, object]]) -> None:
    """Canary outcomes 10 days late, reported through every replica: each replica
    received fewer than min_samples (40) of them, the database holds them all."""
    started = time.monotonic()
    told = [0] * REPLICAS
    n = 0
    while not any(fleet.overridden()):
        assert n < 90, "the accuracy rule never rolled the canary back"
        made = fleet.predict(n % REPLICAS, rows[n], "1.1.0")
        target = (n + 1) % REPLICAS
        fleet.report(target, [pb.Outcome(prediction_id=made.prediction_id,
                                          transit_days=made.transit_days + 10)])
        told[target] += 1
        n += 1
    assert spread_over(fleet, True) <= IN_FORCE_S
    assert all(0 < t < 40 for t in told), told
    time.sleep(1.0)  # five more evaluations on every replica: still one of everything
    (event,) = fleet.events("rollback")[1:]  # the operator's, then this one
    assert (event.actor, event.rule, event.version) == (
        "alert:canary-accuracy", "canary-accuracy", "1.1.0")
    firing = [e for e in fleet.events("alert") if e.state == "firing"]
    assert [(e.rule, e.version) for e in firing] == [("canary-accuracy", "1.1.0")]
    pages = [p for p in fleet.pages if p["status"] == "firing"]
    assert len(pages) == 1, pages
    labels = pages[0]["alerts"][0]["labels"]
    assert labels["alertname"] == "canary-accuracy"
    assert "instance" not in labels  # the fleet's alert, not one replica's
    for i in range(REPLICAS):
        assert fleet.stub(i).Predict(pb.PredictRequest(model=MODEL, rows=struct_rows([rows[0]])),
                                     timeout=10).route_reason == pb.ROUTE_REASON_OVERRIDE
    assert time.monotonic() - started < 60


def run_load(fleet: Fleet, rows: list[dict[str, object]], seconds: float,
             work: Callable[[int, int, dict[str, object]], None]) -> None:
    """One thread per replica calling ``work(replica, n, row)`` for ``seconds``."""
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            work(i, n, rows[n % len(rows)])
            n += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(REPLICAS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)


def test_sigkill_of_a_replica_under_load_loses_no_acknowledged_outcome(
        fleet: Fleet, rows: list[dict[str, object]]) -> None:
    acknowledged: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    victim = fleet.replicas[2]

    def work(i: int, n: int, row: dict[str, object]) -> None:
        try:
            made = fleet.stub(i).Predict(pb.PredictRequest(model=MODEL, rows=struct_rows([row])),
                                         timeout=5).predictions[0]
            # Half to the replica that answered, half to the next: the victim gets both.
            told = i if n % 2 else (i + 1) % REPLICAS
            fleet.report(told, [pb.Outcome(prediction_id=made.prediction_id,
                                           transit_days=made.transit_days)])
        except grpc.RpcError as err:
            with lock:
                refused.append(err.code().name)
            time.sleep(0.05)
            return
        with lock:
            acknowledged.append(made.prediction_id)

    killer = threading.Timer(1.5, victim.kill)
    killer.start()
    run_load(fleet, rows, 4.0, work)
    killer.join()
    assert victim.proc is not None and victim.proc.returncode == -9
    assert len(acknowledged) > 30 and refused  # calls to the dead replica failed
    found = fleet.sql("SELECT count(*) FROM outcomes WHERE prediction_id = ANY(%s)",
                      acknowledged)
    assert found == [(len(acknowledged),)]
    victim.start()
    fleet.reconnect(2)
    assert routing(victim.admin_target).models[0].HasField("override")  # restored


def store_health(replica: ServerProcess) -> tuple[int, int]:
    """(the store's status, the predictions' status) on the public port's health."""
    with grpc.insecure_channel(replica.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return (stub.Check(health_pb2.HealthCheckRequest(service="waybill.store"),
                           timeout=5).status,
                stub.Check(health_pb2.HealthCheckRequest(
                    service="waybill.v1.PredictionService"), timeout=5).status)


def counters(fleet: Fleet) -> dict[str, float]:
    totals = {"dropped": 0.0, "failed": 0.0, "pending": 0.0}
    for replica in fleet.replicas:
        series = scrape(replica)
        totals["dropped"] += value(series, "waybill_prediction_log_dropped_total")
        totals["failed"] += value(series, "waybill_prediction_log_failed_total")
        totals["pending"] += value(series, "waybill_prediction_log_pending")
    return totals


def test_a_database_outage_under_load_fails_no_prediction(
        fleet: Fleet, rows: list[dict[str, object]]) -> None:
    serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                            health_pb2.HealthCheckResponse.NOT_SERVING)
    before = counters(fleet)
    made: list[str] = []
    failed: list[str] = []
    lock = threading.Lock()

    def work(i: int, n: int, row: dict[str, object]) -> None:
        try:
            reply = fleet.stub(i).Predict(
                pb.PredictRequest(model=MODEL, rows=struct_rows([row])), timeout=5)
        except grpc.RpcError as err:
            with lock:
                failed.append(f"{err.code().name}: {err.details()}")
            return
        with lock:
            made.append(reply.predictions[0].prediction_id)

    during: dict[str, Any] = {}

    def outage() -> None:
        time.sleep(1.0)
        fleet.cluster.stop()
        stopped = time.monotonic()
        try:
            wait_for(lambda: all(store_health(r) == (not_serving, serving)
                                 for r in fleet.replicas), "health to report the outage")
            with pytest.raises(grpc.RpcError) as caught:
                fleet.report(0, [pb.Outcome(prediction_id=made[0], transit_days=3)])
            during["code"] = caught.value.code()
        finally:
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
            fleet.cluster.start()

    thread = threading.Thread(target=outage)
    thread.start()
    run_load(fleet, rows, 1.0 + OUTAGE_S + 2.0, work)
    thread.join(60)
    assert failed == []
    assert during["code"] == grpc.StatusCode.UNAVAILABLE
    wait_for(lambda: all(store_health(r) == (serving, serving) for r in fleet.replicas),
             "health to report the store back")
    wait_for(lambda: counters(fleet)["pending"] == 0, "the backlog to be written")
    after = counters(fleet)
    written = fleet.sql("SELECT count(*) FROM predictions WHERE prediction_id = ANY(%s)",
                        made)[0][0]
    dropped = after["dropped"] - before["dropped"]
    assert after["failed"] == before["failed"]
    # Every prediction answered during the outage was written, or counted as dropped.
    print(f"outage: {len(made)} predictions, {written} written, {dropped:g} dropped")
    assert written + dropped == len(made), (written, dropped, len(made))
    if dropped:
        assert any("prediction log dropped rows" in r.log_text() for r in fleet.replicas)
