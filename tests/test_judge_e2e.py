"""The canary judge end to end: a real server, real models, real SQLite, outcomes over gRPC.

A routing file sends 30 % of traffic to a canary judged by a ``metric = "judge"`` rule with
``action = "rollback"``; predictions go out in small calls with their own routing keys,
and each slice's outcomes (the generator's true transit days) are reported right after.

- A byte-identical copy of stable (1.1.0's model.cbm published as 1.1.1) is not rolled
  back after 2,000 outcomes: no rollback, no firing alert, no WORSE verdict anywhere.
- The demo's older 1.0.0 as the canary of 1.1.0 is rolled back on the judge's evidence:
  one ``judge`` event (worse), one firing alert, one rollback; ListAlerts, GetAccuracy
  and the metrics show the verdict with its effect (> 0) and interval.

Periods of 1 s of prediction time and an alert interval of 0.2 s keep it quick; each test
prints what it measured (``pytest -s``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import grpc
import pandas as pd
import pytest
from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ServerProcess
from tests.routing_fixtures import admin, routing, wait_for
from tests.test_alerts_e2e import alerts, events, request_rows, routing_file, stream
from tests.test_metrics import scrape, value
from tests.test_server_predict import struct_rows

MODEL = "delivery_eta"
RULE = "canary-judge"
ROWS_PER_CALL = 4
CALLS_PER_SLICE = 25  # 100 outcomes reported at a time

JUDGED = """\
stable = "1.1.0"
routes = [
  {{ version = "1.1.0", weight = 70, label = "stable" }},
  {{ version = "{canary}", weight = 30, label = "canary" }},
]

[[models.delivery_eta.alerts]]
name = "canary-judge"
metric = "judge"
period = "1s"
severity = "critical"
action = "rollback"
"""


@pytest.fixture(scope="module")
def judge_registry(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared registry, and 1.1.0's very model.cbm published again as 1.1.1."""
    root = tmp_path_factory.mktemp("judge-registry")
    shutil.copytree(registry / MODEL, root / MODEL)
    copy = root / MODEL / "1.1.1"
    shutil.copytree(root / MODEL / "1.1.0", copy)
    manifest = json.loads((copy / "model.json").read_text())
    manifest["version"] = "1.1.1"
    (copy / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")
    assert (copy / "model.cbm").read_bytes() == (root / MODEL / "1.1.0" / "model.cbm").read_bytes()
    return root


def judge_server(registry: Path, tmp_path: Path, canary: str) -> ServerProcess:
    config = routing_file(tmp_path / "routing.toml", JUDGED.format(canary=canary))
    return ServerProcess(tmp_path / "run", "--registry", str(registry), "--routing",
                         str(config), "--alert-interval", "0.2", "--drift-window-s", "0")


class Traffic:
    """Orders from the generator, sent a slice at a time, each slice's outcomes reported."""

    def __init__(self, server: ServerProcess, frame: pd.DataFrame) -> None:
        self.rows = request_rows(frame, "1.1.0")
        self.actual = frame["transit_days"].to_numpy()
        self.channel = grpc.insecure_channel(server.target)
        self.stub = pb_grpc.PredictionServiceStub(self.channel)
        self.sent = 0
        self.served: dict[str, int] = {}

    def slice(self) -> None:
        outcomes = []
        for _ in range(CALLS_PER_SLICE):
            start = self.sent
            assert start + ROWS_PER_CALL <= len(self.rows), "ran out of orders"
            reply = self.stub.Predict(pb.PredictRequest(
                model=MODEL, rows=struct_rows(self.rows[start:start + ROWS_PER_CALL]),
                routing_key=f"k{start}"), timeout=10)
            self.served[reply.version] = self.served.get(reply.version, 0) + ROWS_PER_CALL
            outcomes += [pb.Outcome(prediction_id=p.prediction_id,
                                    transit_days=float(self.actual[start + i]))
                         for i, p in enumerate(reply.predictions)]
            self.sent += ROWS_PER_CALL
        self.stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=outcomes), timeout=10)


def judge_alert(target: str, version: str) -> admin_pb2.Alert:
    (alert,) = [a for a in alerts(target) if a.rule == RULE and a.version == version]
    assert alert.HasField("judge")
    return alert


def accuracy_verdicts(target: str) -> list[admin_pb2.JudgeVerdict]:
    reply = admin(target).GetAccuracy(admin_pb2.GetAccuracyRequest(model=MODEL), timeout=10)
    print("\nMAE by version: " + ", ".join(f"{a.version} {a.mae:.3f} ({a.outcomes} outcomes)"
                                          for a in reply.versions), end="")
    return list(reply.judged)


def show(what: str, verdict: admin_pb2.JudgeVerdict, outcomes: int, seconds: float) -> None:
    high = f"{verdict.high:+.3f}" if verdict.HasField("high") else "inf"
    print(f"\n{what}: {verdict.outcome} after {outcomes} outcomes ({seconds:.1f} s): effect "
          f"{verdict.effect:+.3f} [{verdict.low:+.3f}, {high}], evidence {verdict.evidence:.3g}, "
          f"{verdict.samples_canary} canary and {verdict.samples_stable} stable outcomes in "
          f"{verdict.periods} periods")


def test_an_identical_canary_is_not_rolled_back_after_2000_outcomes(
        judge_registry: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with judge_server(judge_registry, tmp_path, "1.1.1") as server:
        traffic = Traffic(server, stream(2400, seed=61))
        first_period = int(time.time())  # period = "1s": periods are whole wall-clock seconds
        while traffic.sent < 2000:
            if traffic.sent >= 1000:
                # On a fast machine every outcome could fall in one period; the judge
                # pairs within periods, so half of them go into a later one.
                wait_for(lambda: int(time.time()) > first_period, "the next period")
            traffic.slice()
        # Wait for an evaluation that has read (nearly) all of them: a period where one
        # side has fewer than 2 outcomes does not count yet.
        wait_for(lambda: sum((v := judge_alert(server.admin_target, "1.1.1").judge)
                             .samples_canary + v.samples_stable for _ in [0]) >= 1900,
                 "an evaluation of the outcomes")
        alert = judge_alert(server.admin_target, "1.1.1")
        verdict = alert.judge
        series = scrape(server)
        judged_events = events(server.admin_target, ("judge",))
        firing = [e for e in events(server.admin_target, ("alert",)) if e.state == "firing"]
        rollbacks = events(server.admin_target, ("rollback",))
        still_routed = not routing(server.admin_target).models[0].HasField("override")
        (in_accuracy,) = accuracy_verdicts(server.admin_target)
    show("identical canary", verdict, traffic.sent, time.monotonic() - started)

    assert 0.2 < traffic.served["1.1.1"] / traffic.sent < 0.4
    assert rollbacks == [] and firing == [] and still_routed
    assert [e.state for e in judged_events if e.state == "worse"] == []
    assert alert.state == "inactive"
    assert (alert.op, alert.threshold, alert.metric) == (">", 0.0, "judge")
    assert verdict.outcome in ("undecided", "not_worse")
    assert (verdict.version, verdict.stable_version, verdict.rule) == ("1.1.1", "1.1.0", RULE)
    assert verdict.low <= 0.0  # "no worse than stable" is not rejected
    assert verdict.samples_canary >= 500 and verdict.periods >= 2
    assert (verdict.alpha, verdict.min_effect, verdict.period_seconds, verdict.min_samples) == (
        0.01, pytest.approx(0.1), 1.0, 100)
    assert in_accuracy.outcome == verdict.outcome and in_accuracy.version == "1.1.1"
    labels = {"rule": RULE, "model": MODEL, "version": "1.1.1"}
    assert value(series, "waybill_judge_verdict", **labels) in (0.0, -1.0)
    assert ("waybill_judge_effect", frozenset(labels.items())) in series


def test_the_older_model_as_canary_is_rolled_back_on_the_judges_evidence(
        judge_registry: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with judge_server(judge_registry, tmp_path, "1.0.0") as server:
        traffic = Traffic(server, stream(8000, seed=71))

        def rolled_back() -> bool:
            return routing(server.admin_target).models[0].HasField("override")

        while not rolled_back():
            traffic.slice()
            time.sleep(0.1)  # let an evaluation or two see each slice (decisions per slice)
        decided_after = traffic.sent
        seconds = time.monotonic() - started
        wait_for(lambda: len(events(server.admin_target, ("rollback",))) == 1,
                 "the rollback event")
        alert = judge_alert(server.admin_target, "1.0.0")
        (in_accuracy,) = accuracy_verdicts(server.admin_target)
        (rollback,) = events(server.admin_target, ("rollback",))
        judged_events = events(server.admin_target, ("judge",))
        firing = [e for e in events(server.admin_target, ("alert",)) if e.state == "firing"]
        series = scrape(server)
        # Later traffic goes to stable, and nothing more happens.
        traffic.slice()
        time.sleep(0.5)
        assert len(events(server.admin_target, ("rollback",))) == 1
        assert len(events(server.admin_target, ("judge",))) == len(judged_events)
    verdict = alert.judge
    show("1.0.0 as canary of 1.1.0", verdict, decided_after, seconds)
    detail = json.loads(judged_events[0].detail_json)
    print(f"decided on {detail['samples_canary']} canary and {detail['samples_stable']} stable "
          f"outcomes: effect {detail['effect']:+.3f}, low {detail['low']:+.3f}")

    assert (rollback.actor, rollback.rule, rollback.version) == (
        f"alert:{RULE}", RULE, "1.0.0")
    assert rollback.reason.startswith(f"{RULE}: judge: 1.0.0 worse than 1.1.0: effect +")
    assert [(e.state, e.version) for e in judged_events] == [("worse", "1.0.0")]
    assert detail["low"] > 0 and detail["stable"] == "1.1.0"
    assert detail["evidence"] is None or detail["evidence"] >= 100
    assert [(e.rule, e.version) for e in firing] == [(RULE, "1.0.0")]
    assert alert.state == "firing"
    assert verdict.outcome == "worse"
    assert verdict.effect > 0 and alert.value == pytest.approx(verdict.effect)
    assert 0 < verdict.low < verdict.effect
    assert not verdict.HasField("high") or verdict.effect < verdict.high
    assert verdict.evidence >= 1 / verdict.alpha and verdict.p_value <= verdict.alpha
    assert verdict.samples_canary >= 100 and verdict.samples_stable >= 100
    assert in_accuracy.outcome == "worse" and in_accuracy.version == "1.0.0"
    assert in_accuracy.effect == pytest.approx(verdict.effect, rel=0.2)
    labels = {"rule": RULE, "model": MODEL, "version": "1.0.0"}
    assert value(series, "waybill_judge_verdict", **labels) == 1
    assert value(series, "waybill_judge_low", **labels) > 0
    assert value(series, "waybill_judge_effect", **labels) > 0
    assert value(series, "waybill_judge_samples", side="canary", **labels) >= 100
    assert value(series, "waybill_rollbacks_total", model=MODEL, actor=f"alert:{RULE}") == 1
