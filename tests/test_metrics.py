"""The Prometheus endpoint of the real server: the documented series with the right labels,
label values that callers cannot multiply, observable state, and a Grafana dashboard
that only queries what the server exports."""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ROOT, ServerProcess
from tests.routing_fixtures import admin, routing_text, split
from tests.test_server_predict import columns_of, struct_rows

DASHBOARD = ROOT / "deploy" / "grafana" / "waybill.json"
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def served(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("metrics")
    routing = workdir / "routing.toml"
    # Every request 1.0.0 serves is also scored by 1.1.0, so shadow series always exist.
    routing.write_text(routing_text(split(10), shadow=("1.1.0", 1.0)))
    with ServerProcess(workdir, "--registry", str(registry), "--routing", str(routing),
                       "--routing-poll", "0") as proc:
        proc.routing_path = routing  # type: ignore[attr-defined]
        yield proc


def scrape(server: ServerProcess) -> Series:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def label_values(series: Series, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for n, labels in series if n == name and label in dict(labels)}


def call(server: ServerProcess, rows: list[dict[str, object]], *, model: str = "delivery_eta",
         metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    stub = pb_grpc.PredictionServiceStub(server.channel())
    try:
        stub.Predict(pb.PredictRequest(model=model, rows=struct_rows(rows)), metadata=metadata,
                     timeout=10)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_requests_are_counted_by_model_version_route_and_code(
        served: ServerProcess, rows: list[dict[str, object]]) -> None:
    before = scrape(served)
    pin = (("x-model-version", "1.0.0"),)
    for _ in range(3):
        assert call(served, rows[:2], metadata=pin) == grpc.StatusCode.OK
    for _ in range(2):
        assert call(served, rows[:1], metadata=(("x-model-version", "canary"),)) == \
            grpc.StatusCode.OK
    assert call(served, [{**rows[0], "distance_km": -3.0}], metadata=pin) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert call(served, rows[:1], model="no_such_model") == grpc.StatusCode.NOT_FOUND
    assert call(served, rows[:1], metadata=(("x-model-version", "7.7.7"),)) == \
        grpc.StatusCode.NOT_FOUND
    after = scrape(served)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "waybill_requests_total"
    assert delta(requests, model="delivery_eta", version="1.0.0", route="pinned", code="OK") == 3
    assert delta(requests, model="delivery_eta", version="1.1.0", route="label", code="OK") == 2
    assert delta(requests, model="delivery_eta", version="1.0.0", route="pinned",
                 code="INVALID_ARGUMENT") == 1
    assert delta(requests, model="_unknown", version="_unknown", route="none",
                 code="NOT_FOUND") == 1
    # A known model asking for a version it does not have keeps its model label.
    assert delta(requests, model="delivery_eta", version="_unknown", route="none",
                 code="NOT_FOUND") == 1
    assert delta("waybill_validation_failures_total", model="delivery_eta", version="1.0.0",
                 field="distance_km", rule="out_of_range") == 1
    rpc = {"rpc_system": "grpc", "rpc_service": "waybill.v1.PredictionService",
           "rpc_method": "Predict"}
    assert delta("rpc_server_call_duration_seconds_count", **rpc, rpc_grpc_status_code="0") == 5
    assert delta("rpc_server_call_duration_seconds_count", **rpc, rpc_grpc_status_code="5") == 2
    assert delta("waybill_rows_count", model="delivery_eta", version="1.0.0") == 3
    assert delta("waybill_rows_sum", model="delivery_eta", version="1.0.0") == 6
    assert delta("waybill_prediction_transit_days_count", model="delivery_eta",
                 version="1.0.0") == 6
    assert delta("waybill_request_duration_seconds_count", model="delivery_eta",
                 version="1.1.0") == 2
    # Histograms are well formed: cumulative buckets that end in the count.
    buckets = sorted(
        (float(dict(labels)["le"]), v) for (name, labels), v in after.items()
        if name == "rpc_server_call_duration_seconds_bucket"
        and dict(labels).get("rpc_grpc_status_code") == "0"
        and dict(labels).get("rpc_method") == "Predict")
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == float("inf")
    assert counts[-1] == value(after, "rpc_server_call_duration_seconds_count", **rpc,
                               rpc_grpc_status_code="0")


def test_callers_cannot_create_new_series(
        served: ServerProcess, rows: list[dict[str, object]]) -> None:
    def junk(n: int) -> None:
        for _ in range(n):
            word = secrets.token_hex(4)
            call(served, rows[:1], metadata=(("x-model-version", word),))
            call(served, rows[:1], model=f"model-{word}")
            call(served, [{**rows[0], f"field_{word}": 1}],
                 metadata=(("x-routing-key", word), ("x-model-version", "1.0.0")))

    junk(15)
    first = scrape(served)
    junk(15)
    second = scrape(served)
    assert set(second) == set(first), set(second) ^ set(first)
    requests = "waybill_requests_total"
    assert label_values(second, requests, "model") <= {"delivery_eta", "_unknown"}
    assert label_values(second, requests, "version") <= {"1.0.0", "1.1.0", "_unknown"}
    failures = "waybill_validation_failures_total"
    fields = label_values(second, failures, "field")
    assert "_unknown" in fields and not any(f.startswith("field_") for f in fields)
    assert value(second, failures, model="delivery_eta", version="1.0.0", field="_unknown",
                 rule="unknown_field") >= 30


def test_too_many_rows_are_counted_under_the_field_that_carried_them(
        served: ServerProcess, rows: list[dict[str, object]]) -> None:
    many = (rows * 6)[:1001]  # one over the default limit
    stub = pb_grpc.PredictionServiceStub(served.channel())
    before = scrape(served)
    for request in (pb.PredictRequest(model="delivery_eta", rows=struct_rows(many)),
                    pb.PredictRequest(model="delivery_eta", columns=columns_of(many))):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(served)
    failures = "waybill_validation_failures_total"
    counted = {dict(labels)["field"]: v - before.get((name, labels), 0.0)
               for (name, labels), v in after.items()
               if name == failures and dict(labels)["rule"] == "too_many_rows"}
    assert {f: n for f, n in counted.items() if n} == {"rows": 1, "columns": 1}


def test_state_and_process_metrics(served: ServerProcess,
                                   rows: list[dict[str, object]]) -> None:
    call(served, rows[:3], metadata=(("x-model-version", "1.0.0"),))
    deadline = time.monotonic() + 15
    while True:  # shadow scoring happens after the answer: wait for it to be counted
        series = scrape(served)
        if value(series, "waybill_shadow_divergence_count", model="delivery_eta",
                 version="1.1.0") >= 3:
            break
        assert time.monotonic() < deadline, "shadow comparisons never showed up"
        time.sleep(0.05)
    shadow = {"model": "delivery_eta", "version": "1.1.0"}
    assert value(series, "waybill_shadow_compared_rows_total", **shadow) >= 3
    assert value(series, "waybill_shadow_sampled_total", **shadow) >= 1
    assert ("waybill_shadow_outside_interval_total", frozenset(shadow.items())) in series
    assert value(series, "waybill_model_loaded", model="delivery_eta", version="1.0.0") == 1
    assert value(series, "waybill_model_loaded", model="delivery_eta", version="1.1.0") == 1
    assert value(series, "waybill_model_loads_total", outcome="loaded") == 2
    assert value(series, "waybill_model_loads_total", outcome="failed") == 0
    assert value(series, "waybill_config_reloads_total", outcome="applied", reason="none") == 1
    assert value(series, "process_cpu_time_seconds_total", cpu_mode="user") > 0
    assert value(series, "process_memory_usage_bytes") > 20e6
    assert value(series, "waybill_predictions_inflight") == 0
    assert value(series, "waybill_batch_size_count", model="delivery_eta", version="1.0.0") >= 1
    info = [labels for name, labels in series if name == "target_info"]
    assert ("service_name", "waybill") in info[0]

    # A refused config file is counted with its reason; the generation stays.
    path: Path = served.routing_path  # type: ignore[attr-defined]
    good = path.read_text()
    path.write_text("version = 1\n[models.delivery_eta]\nstable = 3\n")
    try:
        with pytest.raises(grpc.RpcError):
            admin(served.admin_target).ReloadConfig(admin_pb2.ReloadConfigRequest(), timeout=30)
    finally:
        path.write_text(good)
    after = scrape(served)
    assert value(after, "waybill_config_reloads_total", outcome="rejected",
                 reason="invalid") == 1
    assert value(after, "waybill_routing_generation") == value(series,
                                                               "waybill_routing_generation")


# --------------------------------------------------------------------------- dashboard

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                 "or", "unless", "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (good enough for dashboard queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        if word in _PROMQL_WORDS or text[match.end():].lstrip().startswith("("):
            continue  # a keyword, or a function or aggregation
        names.add(word)
    return names


def dashboard_queries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            if key in ("expr", "definition") and isinstance(item, str):
                yield item
            else:
                yield from dashboard_queries(item)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def test_promql_names_are_found() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, version) (rate(a_bucket{m=~"$x"}[$__rate_interval])))'
        ' / scalar(sum(rate(b_total[5m]))) > bool 0') == {"a_bucket", "b_total"}


# A rule that fires on any traffic (median latency above 0 s), so alert series exist.
ALWAYS_FIRING = """
[[models.delivery_eta.alerts]]
name = "always"
metric = "latency"
quantile = 0.5
op = ">"
threshold = 0
min_samples = 1
severity = "info"
"""


@pytest.fixture
def eventful(registry: Path, tmp_path: Path,
             rows: list[dict[str, object]]) -> Iterator[ServerProcess]:
    """A server that has seen everything the dashboard shows: traffic, a refused row,
    shadow comparisons, a closed drift window with enough rows, reported outcomes, a
    firing in-process rule and a rollback."""
    routing = tmp_path / "routing.toml"
    routing.write_text(routing_text(split(20), shadow=("1.1.0", 1.0)) + ALWAYS_FIRING)
    with ServerProcess(tmp_path / "eventful", "--registry", str(registry), "--routing",
                       str(routing), "--routing-poll", "0", "--alert-interval", "0.2",
                       "--drift-window-rows", "20", "--drift-window-s", "0",
                       "--drift-min-rows", "10") as server:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        ids = []
        for pin in ("stable", "canary"):  # 20 rows each: a closed window for both
            reply = stub.Predict(pb.PredictRequest(model="delivery_eta",
                                                   rows=struct_rows(rows[:20])),
                                 metadata=(("x-model-version", pin),), timeout=10)
            ids += [p.prediction_id for p in reply.predictions]
        assert call(server, [{**rows[0], "distance_km": -3.0}]) == \
            grpc.StatusCode.INVALID_ARGUMENT
        outcomes = [pb.Outcome(prediction_id=i, transit_days=3) for i in ids]
        deadline = time.monotonic() + 10
        while True:  # the prediction log is written in the background
            try:
                stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=outcomes), timeout=10)
                break
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        admin(server.admin_target).Rollback(
            admin_pb2.RollbackRequest(model="delivery_eta", reason="dashboard test"), timeout=5)
        yield server


def test_the_grafana_dashboard_queries_only_exported_metrics(eventful: ServerProcess) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Waybill"
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("split by version", "latency", "error rate by status code",
                  "validation failures", "drift: feature psi", "drift: prediction psi",
                  "accuracy: mae", "accuracy: interval coverage", "alerts firing",
                  "alert state changes", "rolled back now", "rollbacks"):
        assert topic in titles, topic
    queried: set[str] = set()
    for query in dashboard_queries(dashboard):
        grafana = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)\s*", query)
        queried |= {grafana.group(1)} if grafana else promql_metric_names(query)
    for name in ("waybill_drift_psi", "waybill_drift_prediction_psi", "waybill_accuracy_mae",
                 "waybill_accuracy_bias", "waybill_accuracy_coverage",
                 "waybill_accuracy_outcomes", "waybill_alerts_firing",
                 "waybill_alerts_transitions_total", "waybill_routing_override",
                 "waybill_rollbacks_total"):
        assert name in queried, name
    deadline = time.monotonic() + 15
    while True:  # shadow scoring and alert evaluation happen in the background
        exported = {name for name, _ in scrape(eventful)}
        missing = queried - exported
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(queried) > 15
    assert not missing, f"the dashboard queries metrics the server does not export: {missing}"


def test_state_gauges_survive_a_restart(registry: Path, tmp_path: Path) -> None:
    """A rollback and a refused routing file show as gauges (not event counts), so an
    alert on them holds across a restart that restores the override."""
    routing = tmp_path / "routing.toml"
    routing.write_text(routing_text(split(20)))
    args = ("--registry", str(registry), "--routing", str(routing), "--routing-poll", "0")
    with ServerProcess(tmp_path / "run", *args) as server:
        admin(server.admin_target).Rollback(
            admin_pb2.RollbackRequest(model="delivery_eta", reason="test"), timeout=5)
        routing.write_text("not toml [")
        with pytest.raises(grpc.RpcError):
            admin(server.admin_target).ReloadConfig(admin_pb2.ReloadConfigRequest(), timeout=5)
        series = scrape(server)
        assert value(series, "waybill_routing_override", model="delivery_eta",
                     actor="admin") == 1
        assert value(series, "waybill_config_refused", reason="invalid") == 1
    routing.write_text(routing_text(split(20)))
    with ServerProcess(tmp_path / "run", *args) as server:  # same database: restored
        series = scrape(server)
        assert value(series, "waybill_routing_override", model="delivery_eta",
                     actor="admin") == 1
        assert label_values(series, "waybill_config_refused", "reason") == set()
