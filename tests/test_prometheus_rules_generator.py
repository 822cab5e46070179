"""`waybill rules`: Prometheus rules generated from a routing file's alert rules
(server/monitoring/prometheus_rules.py). Every Metric has a PromQL template; each option of
an in-process rule (threshold, operator, window, `for`, min_samples, severity, scope,
feature/exclude, quantile, status_class, summary) reaches the Prometheus alert; what
Prometheus only approximates is said; promtool accepts the output for every metric.
The shipped file and its promtool unit tests are tests/test_prometheus_rules.py's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config import RoutingConfigError
from server.monitoring import prometheus_rules
from server.monitoring.prometheus_rules import (
    TEMPLATES,
    PrometheusRulesError,
    alert_name,
    duration,
    render,
)
from server.monitoring.rules import Metric
from server.runtime.cli import main
from server.serving.routing_file import parse_routing_file

ROUTES = """\
version = 1

[models.delivery_eta]
stable = "1.1.0"
routes = [
  { version = "1.1.0", weight = 90, label = "stable" },
  { version = "1.2.0", weight = 10, label = "canary" },
]
shadow = { version = "1.0.0", fraction = 0.1 }
"""

# One rule per metric, with every option a template reads.
EVERY_METRIC = ROUTES + """
[[models.delivery_eta.alerts]]
name = "client-errors"
metric = "error_rate"
status_class = "client"
scope = "canary"
op = ">="
threshold = 0.2
for = "90s"
window = "10m"
min_samples = 50
severity = "info"
summary = "callers send junk to the canary"

[[models.delivery_eta.alerts]]
name = "any-errors"
metric = "error_rate"
status_class = "any"
op = ">"
threshold = 0.5

[[models.delivery_eta.alerts]]
name = "latency_p95"
metric = "latency"
quantile = 0.95
op = ">"
threshold = 0.1
window = "2m"

[[models.delivery_eta.alerts]]
name = "distance-drift"
metric = "feature_psi"
feature = "distance_km"
scope = "1.2.0"
op = ">"
threshold = 0.3
min_samples = 700

[[models.delivery_eta.alerts]]
name = "input-drift"
metric = "feature_psi"
exclude = ["day_of_year"]
op = ">"
threshold = 0.25

[[models.delivery_eta.alerts]]
name = "prediction-drift"
metric = "prediction_psi"
op = ">"
threshold = 0.25

[[models.delivery_eta.alerts]]
name = "mae"
metric = "mae"
op = ">"
threshold = 1.5
window = "30m"
min_samples = 300

[[models.delivery_eta.alerts]]
name = "canary-accuracy"
metric = "mae_ratio"
scope = "canary"
op = ">"
threshold = 1.25
for = "5m"
window = "1h"
min_samples = 200
severity = "critical"
action = "rollback"

[[models.delivery_eta.alerts]]
name = "coverage"
metric = "coverage"
op = "<"
threshold = 0.7

[[models.delivery_eta.alerts]]
name = "on-time"
metric = "on_time"
op = "<="
threshold = 0.6

[[models.delivery_eta.alerts]]
name = "shadow-divergence"
metric = "shadow_divergence"
op = ">"
threshold = 1.0
window = "15m"

[[models.delivery_eta.alerts]]
name = "log-loss"
metric = "log_loss"
op = ">"
threshold = 0.7

[[models.delivery_eta.alerts]]
name = "class-accuracy"
metric = "accuracy"
op = "<"
threshold = 0.8

[[models.delivery_eta.alerts]]
name = "brier"
metric = "brier"
op = ">"
threshold = 0.3

[[models.delivery_eta.alerts]]
name = "canary-judge"
metric = "judge"
alpha = 0.05
min_effect = 0.2
period = "30m"
min_samples = 80
severity = "critical"
action = "rollback"
"""


def generate(text: str, operations: str | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    parsed = parse_routing_file(text, "routing.toml")
    out = render(parsed.config.models, parsed.alerts, source="routing.toml",
                 operations=operations, operations_source="operations.yml")
    alerts = {rule["labels"]["rule"]: rule for group in yaml.safe_load(out)["groups"]
              for rule in group["rules"] if "rule" in rule.get("labels", {})}
    return out, alerts


def test_every_metric_has_a_template() -> None:
    assert set(TEMPLATES) == set(Metric)
    for metric, template in TEMPLATES.items():
        assert template.group in prometheus_rules.GROUPS, metric


def test_names_and_durations() -> None:
    assert alert_name("server-errors") == "WaybillServerErrors"
    assert alert_name("latency_p99") == "WaybillLatencyP99"
    assert [duration(s) for s in (90, 300, 3600, 5400, 0)] == ["90s", "5m", "1h", "90m", "0s"]


def test_each_rule_option_reaches_its_alert() -> None:
    _, alerts = generate(EVERY_METRIC)
    assert len(alerts) == len(Metric) + 2  # error_rate and feature_psi twice
    for rule_name, alert in alerts.items():
        assert alert["alert"] == alert_name(rule_name)
        assert alert["annotations"]["runbook_url"].endswith("#" + alert["alert"].lower())
        assert 'model="delivery_eta"' in alert["expr"]

    for rule_name, series, compare in (("log-loss", "waybill_accuracy_log_loss", "> 0.7"),
                                       ("class-accuracy", "waybill_accuracy_accuracy", "< 0.8"),
                                       ("brier", "waybill_accuracy_brier", "> 0.3")):
        expr = alerts[rule_name]["expr"]
        assert f"{series}{{" in expr and f"{compare}\n" in expr, expr
        assert "waybill_accuracy_outcomes" in expr  # fleet-weighted by outcome counts

    client = alerts["client-errors"]
    expr = client["expr"]
    # Label scope "canary" resolves to the version the file names, as scoped_versions does.
    assert 'version="1.2.0"' in expr and "_unknown" not in expr
    assert 'code!~"OK|' in expr and "[10m]" in expr and ">= 0.2\n" in expr
    assert ">= 50" in expr
    assert client["for"] == "90s"
    assert client["labels"] == {"severity": "info", "rule": "client-errors"}
    assert client["annotations"]["summary"].endswith(": callers send junk to the canary")

    anyone = alerts["any-errors"]
    assert 'code!="OK"' in anyone["expr"] and 'version!="_unknown"' in anyone["expr"]
    assert "for" not in anyone  # `for` 0: fires at once, as in process
    assert ">= 100" in anyone["expr"] and "[5m]" in anyone["expr"]  # the defaults

    latency = alerts["latency_p95"]
    assert latency["alert"] == "WaybillLatencyP95"
    assert "histogram_quantile(0.95," in latency["expr"] and "[2m]" in latency["expr"]
    assert "p95 latency" in latency["annotations"]["summary"]

    distance = alerts["distance-drift"]
    assert 'waybill_drift_psi{model="delivery_eta",version="1.2.0",feature="distance_km"}' \
        in distance["expr"]
    assert ">= 700" in distance["expr"] and distance["expr"].rstrip().endswith("> 0.3")
    assert 'feature!~"day_of_year"' in alerts["input-drift"]["expr"]

    ratio = alerts["canary-accuracy"]["expr"]
    # The canary side names 1.2.0; the stable side is the model's stable version.
    assert ratio.count('waybill_accuracy_mae{model="delivery_eta",version="1.2.0"}') == 1
    assert ratio.count('waybill_accuracy_mae{model="delivery_eta"}') == 1
    assert ratio.count(">= 200") == 2 and ratio.rstrip().endswith("> 1.25")
    assert alerts["canary-accuracy"]["labels"]["severity"] == "critical"

    assert "waybill_accuracy_mae" in alerts["mae"]["expr"]
    assert ">= 300" in alerts["mae"]["expr"]
    assert "waybill_accuracy_coverage" in alerts["coverage"]["expr"]
    assert "\n< 0.7\n" in alerts["coverage"]["expr"]
    assert "waybill_accuracy_on_time" in alerts["on-time"]["expr"]
    assert "\n<= 0.6\n" in alerts["on-time"]["expr"]
    assert "[15m]" in alerts["shadow-divergence"]["expr"]

    # The judge: Prometheus reads the server's verdict and shows its effect (max over
    # replicas, which judge the shared store alike); model scope reads every canary.
    judged = alerts["canary-judge"]
    assert judged["expr"] == (
        "max by (namespace, model, version) "
        '(waybill_judge_effect{model="delivery_eta",rule="canary-judge"})\n'
        "and on (namespace, model, version)\n"
        "  max by (namespace, model, version) "
        '(waybill_judge_verdict{model="delivery_eta",rule="canary-judge"}) == 1\n')
    assert "for" not in judged and judged["labels"]["severity"] == "critical"
    assert "alpha 0.05, periods of 30 minutes, at least 80 outcomes each" in \
        judged["annotations"]["description"]


def test_what_prometheus_approximates_is_said() -> None:
    out, _ = generate(EVERY_METRIC)
    header, body = out.split("\ngroups:\n")
    gauges = ("WaybillMae", "WaybillCanaryAccuracy", "WaybillCoverage", "WaybillOnTime",
              "WaybillLogLoss", "WaybillClassAccuracy", "WaybillBrier")
    for name in gauges:
        assert f"- {name} (delivery_eta): reads the server's accuracy gauges" in header
    assert "- WaybillCanaryAccuracy (delivery_eta): action rollback" in header
    assert "- WaybillClientErrors (" not in header and "- WaybillInputDrift (" not in header
    # And at the rule, beside the in-process rule it comes from.
    assert body.count("# approximate: reads the server's accuracy gauges") == len(gauges)
    assert body.count("# approximate: action rollback") == 2
    assert "# rule canary-accuracy of model delivery_eta: mae_ratio > 1.25, scope canary" in body
    assert ("- WaybillCanaryJudge (delivery_eta): Prometheus cannot run the sequential test"
            in header)
    assert ("# rule canary-judge of model delivery_eta: judge alpha 0.05, min_effect 0.2, "
            "period 30m,\n      # for 0s, min_samples 80") in body


def test_operations_are_appended_as_written_and_names_cannot_clash() -> None:
    operations = ("# hand-written\ngroups:\n  - name: ops\n    rules:\n"
                  "      # kept comment\n      - alert: WaybillDown\n        expr: up == 0\n")
    out, _ = generate(ROUTES, operations)
    assert out.endswith("\n  - name: ops\n    rules:\n      # kept comment\n"
                        "      - alert: WaybillDown\n        expr: up == 0\n")
    assert yaml.safe_load(out)["groups"] == yaml.safe_load(operations)["groups"]
    assert "# (nowhere)" in out  # no in-process rules, nothing approximated
    clash = ROUTES + ('\n[[models.delivery_eta.alerts]]\nname = "down"\nmetric = "error_rate"\n'
                      'op = ">"\nthreshold = 0.5\n')
    with pytest.raises(PrometheusRulesError, match="WaybillDown"):
        generate(clash, operations)
    with pytest.raises(PrometheusRulesError, match="groups"):
        generate(ROUTES, "rules: []\n")
    twins = ROUTES + "".join(
        f'\n[[models.delivery_eta.alerts]]\nname = "{name}"\nmetric = "error_rate"\n'
        'op = ">"\nthreshold = 0.5\n' for name in ("a-b", "a_b"))
    with pytest.raises(PrometheusRulesError, match="WaybillAB"):
        generate(twins)


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routing = tmp_path / "routing.toml"
    routing.write_text(EVERY_METRIC)
    assert main(["rules", "--routing", str(routing)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Prometheus alerting rules for Waybill. Generated; do not edit"
                          f" by hand:\n#   waybill rules --routing {routing} \\\n")
    assert yaml.safe_load(out)["groups"][0]["name"] == "waybill-traffic"
    # A routing file with problems is refused with its messages, and nothing is printed.
    routing.write_text(EVERY_METRIC.replace('threshold = 0.2\n', 'threshold = "high"\n'))
    assert main(["rules", "--routing", str(routing)]) == 2
    shown = capsys.readouterr()
    assert shown.out == "" and "threshold" in shown.err
    assert main(["rules", "--routing", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(RoutingConfigError):
        parse_routing_file(routing.read_text(), str(routing))


def test_promtool_accepts_every_metrics_rule(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (tests/test_prometheus_rules.py installs it)")
    out, alerts = generate(EVERY_METRIC)
    (tmp_path / "rules.yml").write_text(out)
    result = subprocess.run([promtool, "check", "rules", "rules.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout
