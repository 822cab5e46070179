"""Alert rules end to end: a real server, real routing files, real models, real SQLite.

- a canary trained on corrupted labels, at 20 %, is rolled back by an accuracy rule
  fed by outcome feedback, with no failed request, one recorded rollback, and the
  rollback survives SIGKILL and a restart;
- a drifted input stream (the generator's ``zip_shift`` scenario) raises a warning,
  posted to a webhook in Alertmanager's format, and moves no traffic;
- a stream without drift over many windows raises nothing at all.

The webhook receiver is a stand-in for Alertmanager (which could run here but is not
needed to check the payload): a plain HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
import pandas as pd
import pytest
from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from models import datagen, dataset, training
from tests.conftest import tiny_spec
from tests.harness import ServerProcess
from tests.routing_fixtures import admin, routing, wait_for
from tests.test_metrics import label_values, scrape, value
from tests.test_server_predict import struct_rows

MODEL = "delivery_eta"


@pytest.fixture(scope="module")
def bad_registry(registry: Path, orders: pd.DataFrame,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stable 1.0.0 from the shared registry, and 1.2.0 trained on shuffled, late labels."""
    root = tmp_path_factory.mktemp("bad-registry")
    shutil.copytree(registry / MODEL / "1.0.0", root / MODEL / "1.0.0")
    spec = tiny_spec("1.0.0")
    frame = dataset.coerce_frame(spec, orders)
    rng = np.random.default_rng(5)
    frame[spec.target] = rng.permutation(frame[spec.target].to_numpy()) + 3
    result = training.train(spec, frame, progress=None)
    training.publish_version(result, root=root, version="1.2.0", revision="corrupted-labels")
    return root


def request_rows(frame: pd.DataFrame, version: str = "1.1.0") -> list[dict[str, Any]]:
    """Rows with the features of ``version``'s schema."""
    features = [f.name for f in tiny_spec(version).features]
    out = []
    for record in frame[features].to_dict("records"):
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()
               if not (isinstance(v, float) and np.isnan(v))}
        out.append(row)
    return out


def stream(n: int, seed: int, scenario: str = "none") -> pd.DataFrame:
    """Orders from the training period, shuffled so every window spans all seasons."""
    frame = datagen.generate(n, seed=seed, start=date(2024, 1, 1), end=date(2025, 9, 30),
                             scenario=scenario)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def routing_file(path: Path, body: str) -> Path:
    path.write_text("version = 1\n\n[models.delivery_eta]\n" + body)
    return path


def events(target: str, kinds: tuple[str, ...] = ()) -> list[admin_pb2.Event]:
    reply = admin(target).ListEvents(admin_pb2.ListEventsRequest(kinds=kinds, limit=1000),
                                     timeout=5)
    return list(reply.events)


def alerts(target: str) -> list[admin_pb2.Alert]:
    return list(admin(target).ListAlerts(admin_pb2.ListAlertsRequest(), timeout=5).alerts)


CANARY_RULES = """\
stable = "1.0.0"
routes = [
  { version = "1.0.0", weight = 80, label = "stable" },
  { version = "1.2.0", weight = 20, label = "canary" },
]

[[models.delivery_eta.alerts]]
name = "canary-accuracy"
metric = "mae_ratio"
scope = "canary"
op = ">"
threshold = 1.3
for = "1s"
window = "10m"
min_samples = 30
severity = "critical"
action = "rollback"
"""


def test_bad_canary_is_rolled_back_by_outcome_feedback_and_stays_rolled_back(
        bad_registry: Path, tmp_path: Path) -> None:
    config = routing_file(tmp_path / "routing.toml", CANARY_RULES)
    args = ("--registry", str(bad_registry), "--routing", str(config),
            "--alert-interval", "0.2", "--database", str(tmp_path / "waybill.db"))
    frame = stream(3000, seed=21)
    rows, actual = request_rows(frame, "1.0.0"), frame["transit_days"].to_numpy()
    failed: list[str] = []
    served: list[str] = []
    with ServerProcess(tmp_path / "run1", *args) as server:
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.PredictionServiceStub(channel)
        sent = 0

        def rolled_back() -> bool:
            return routing(server.admin_target).models[0].HasField("override")

        # Traffic in slices of 20 single-row calls, each slice's outcomes reported
        # right after (deliveries "arrive"), until the rule has rolled the canary back.
        while not rolled_back():
            assert sent + 20 <= len(rows), "the rule never rolled the canary back"
            outcomes = []
            for i in range(sent, sent + 20):
                try:
                    reply = stub.Predict(pb.PredictRequest(
                        model=MODEL, rows=struct_rows([rows[i]]), routing_key=f"c{i}"),
                        timeout=10)
                except grpc.RpcError as err:
                    failed.append(err.code().name)
                    continue
                served.append(reply.version)
                outcomes.append(pb.Outcome(prediction_id=reply.predictions[0].prediction_id,
                                           transit_days=float(actual[i])))
            stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=outcomes), timeout=10)
            sent += 20
        wait_for(lambda: len(events(server.admin_target, ("rollback",))) == 1,
                 "the rollback event")
        series = scrape(server)
        assert value(series, "waybill_rollbacks_total", model=MODEL,
                     actor="alert:canary-accuracy") == 1
        assert value(series, "waybill_alerts_firing", rule="canary-accuracy", model=MODEL,
                     version="1.2.0", severity="critical") == 1
        assert value(series, "waybill_model_route_weight", model=MODEL, version="1.2.0") == 0
        # The file's weight stands: Prometheus' twin of the rule keeps watching the canary.
        assert value(series, "waybill_model_configured_weight", model=MODEL,
                     version="1.2.0") > 0
        assert (value(series, "waybill_accuracy_mae", model=MODEL, version="1.2.0")
                > 1.3 * value(series, "waybill_accuracy_mae", model=MODEL,
                              version="1.0.0") > 0)
        after = [stub.Predict(pb.PredictRequest(model=MODEL, rows=struct_rows([rows[i]]),
                                                routing_key=f"c{i}"), timeout=10)
                 for i in range(20)]
        channel.close()
        server.proc.send_signal(signal.SIGKILL)  # no drain, no flush: as a crash would
        server.proc.wait(10)

    assert failed == []
    assert {"1.0.0", "1.2.0"} <= set(served)
    assert {r.version for r in after} == {"1.0.0"}
    assert {r.route_reason for r in after} == {pb.ROUTE_REASON_OVERRIDE}

    with ServerProcess(tmp_path / "run2", *args) as again:
        override = routing(again.admin_target).models[0].override
        assert override.actor == "alert:canary-accuracy"
        assert list(override.rolled_back) == ["1.2.0"]
        (event,) = events(again.admin_target, ("rollback",))
        assert (event.rule, event.actor, event.version) == (
            "canary-accuracy", "alert:canary-accuracy", "1.2.0")
        assert event.value > 1.3
        firing = [e for e in events(again.admin_target, ("alert",)) if e.state == "firing"]
        assert [(e.rule, e.version) for e in firing] == [("canary-accuracy", "1.2.0")]
        reply = pb_grpc.PredictionServiceStub(grpc.insecure_channel(again.target)).Predict(
            pb.PredictRequest(model=MODEL, rows=struct_rows([rows[0]])), timeout=10)
        assert (reply.version, reply.route_reason) == ("1.0.0", pb.ROUTE_REASON_OVERRIDE)


class Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Handler", (Receiver,), {"received": received})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received
    finally:
        httpd.shutdown()
        httpd.server_close()


DRIFT_RULES = """\
stable = "1.1.0"
routes = [{ version = "1.1.0", weight = 100, label = "stable" }]

[[models.delivery_eta.alerts]]
name = "input-drift"
metric = "feature_psi"
op = ">"
threshold = 0.25
min_samples = 800
severity = "warning"

[[models.delivery_eta.alerts]]
name = "prediction-drift"
metric = "prediction_psi"
op = ">"
threshold = 0.25
min_samples = 800
severity = "warning"
"""


def drift_server(registry: Path, tmp_path: Path, *extra: str) -> ServerProcess:
    config = routing_file(tmp_path / "routing.toml", DRIFT_RULES)
    return ServerProcess(tmp_path / "run", "--registry", str(registry), "--routing",
                         str(config), "--alert-interval", "0.2", "--drift-window-rows", "1000",
                         "--drift-window-s", "0", "--drift-min-rows", "800", *extra)


def send(target: str, rows: list[dict[str, Any]], per_call: int = 100) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        for start in range(0, len(rows), per_call):
            stub.Predict(pb.PredictRequest(model=MODEL,
                                           rows=struct_rows(rows[start:start + per_call])),
                         timeout=30)


def closed_windows(target: str, version: str = "1.1.0") -> list[admin_pb2.DriftWindow]:
    reply = admin(target).GetDrift(admin_pb2.GetDriftRequest(model=MODEL, version=version),
                                   timeout=30)
    assert [v.version for v in reply.versions] == ["1.1.0"]
    return list(reply.versions[0].completed)


def test_drifted_inputs_raise_a_warning_and_move_no_traffic(
        registry: Path, tmp_path: Path,
        webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    with drift_server(registry, tmp_path, "--alert-webhook", url) as server:
        send(server.target, request_rows(stream(3000, seed=31, scenario="zip_shift")))
        wait_for(lambda: any(a.rule == "input-drift" and a.state == "firing"
                             for a in alerts(server.admin_target)), "the drift alert")
        wait_for(lambda: any(p["status"] == "firing" for p in received), "the webhook post")
        window = closed_windows(server.admin_target, version="stable")[0]
        assert window.status == "ok"
        assert window.max_psi_feature == "zip_code"
        assert not routing(server.admin_target).models[0].HasField("override")
        assert events(server.admin_target, ("rollback",)) == []
        series = scrape(server)
        assert value(series, "waybill_drift_psi", model=MODEL, version="1.1.0",
                     feature="zip_code") > 0.25
        # A closed vocabulary (carriers) has an unseen rate; zip codes (top 50 + other) not.
        assert "carrier" in label_values(series, "waybill_drift_unseen_rate", "feature")
        assert "zip_code" not in label_values(series, "waybill_drift_unseen_rate", "feature")
        assert value(series, "waybill_drift_window_rows", model=MODEL, version="1.1.0") >= 800
        png = tmp_path / "drift.png"
        report = subprocess.run(
            [sys.executable, "-m", "server.runtime.cli", "drift", "--admin", server.admin_target,
             "--model", MODEL, "--version", "1.1.0", "--plot", str(png)],
            capture_output=True, text=True, timeout=60, check=True).stdout
    first_feature = report.splitlines()[2].split()
    assert first_feature[0] == "zip_code" and float(first_feature[2]) > 0.25, report
    assert f"{MODEL} 1.1.0: window" in report and ", ok;" in report
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    post = next(p for p in received if p["status"] == "firing")
    assert post["version"] == "4"
    (alert,) = post["alerts"]
    assert alert["labels"]["alertname"] == "input-drift"
    assert alert["labels"]["severity"] == "warning"
    assert (alert["labels"]["model"], alert["labels"]["version"]) == (MODEL, "1.1.0")


def test_a_stream_without_drift_raises_no_alert_over_many_windows(
        registry: Path, tmp_path: Path) -> None:
    with drift_server(registry, tmp_path) as server:
        send(server.target, request_rows(stream(10_000, seed=41)))
        wait_for(lambda: len(closed_windows(server.admin_target)) >= 6, "six drift windows")
        # Let the engine see the newest window at least once before counting.
        before = len(events(server.admin_target))
        wait_for(lambda: all(a.samples >= 800 for a in alerts(server.admin_target)),
                 "an evaluation of the newest window")
        windows = closed_windows(server.admin_target)
        assert all(w.status == "ok" for w in windows)
        false_alarms = [e for e in events(server.admin_target, ("alert",))]
        assert false_alarms == [], [(e.rule, e.state, e.value) for e in false_alarms]
        assert {a.state for a in alerts(server.admin_target)} == {"inactive"}
        assert len(events(server.admin_target)) == before
