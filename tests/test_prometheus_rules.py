"""The Prometheus alert rules in deploy/prometheus: the committed waybill-rules.yml is what
`waybill rules` generates from deploy/routing.toml and operations.yml (stale fails here),
promtool accepts them, their unit tests pass (and fail when an expectation or a rule is
wrong), every rule carries a severity, a summary and a runbook link that exists, and every
metric they query is one the server exports (the list below is the contract: a renamed
metric fails here). tests/test_prometheus_rules_generator.py tests the generator itself.

promtool comes with Debian's ``prometheus`` package, which ``make test`` installs; when it
is missing this module installs it if it can (root with apt-get, as tests/test_prometheus.py
does) and is skipped only when that is impossible.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_metrics import promql_metric_names
from tests.test_prometheus import prometheus_binary

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "waybill-rules.yml"
OPERATIONS = RULES_DIR / "operations.yml"
ROUTING = ROOT / "deploy" / "routing.toml"
COMMAND = ["rules", "--routing", "deploy/routing.toml",
           "--operations", "deploy/prometheus/operations.yml"]
RULE_TESTS = RULES_DIR / "waybill-rules.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"critical", "warning", "info"}

# Every name the rules may query: what the server exports on /metrics (see
# docs/observability.md), plus Prometheus' own `up`. Renaming a metric in the server
# without updating the rules must fail here, not silently stop an alert.
EXPORTED = {
    # requests and latency
    "waybill_requests_total",
    "waybill_request_duration_seconds_bucket",
    "rpc_server_call_duration_seconds_bucket",
    "waybill_predictions_inflight",
    # model and routing state
    "waybill_model_loaded",
    "waybill_model_loads_total",
    "waybill_config_reloads_total",
    "waybill_routing_generation",
    "waybill_model_route_weight",
    "waybill_model_configured_weight",
    "waybill_model_stable",
    "waybill_routing_override",
    "waybill_config_refused",
    # shadow
    "waybill_shadow_sampled_total",
    "waybill_shadow_dropped_total",
    "waybill_shadow_failed_total",
    "waybill_shadow_compared_rows_total",
    "waybill_shadow_outside_interval_total",
    "waybill_shadow_divergence_sum",
    "waybill_shadow_divergence_count",
    "waybill_shadow_difference",
    # drift (gauges of the newest completed window with enough rows)
    "waybill_drift_psi",
    "waybill_drift_prediction_psi",
    "waybill_drift_ks_statistic",
    "waybill_drift_unseen_rate",
    "waybill_drift_window_rows",
    # accuracy on reported outcomes (the accuracy window, by default the last hour)
    "waybill_accuracy_mae",
    "waybill_accuracy_bias",
    "waybill_accuracy_coverage",
    "waybill_accuracy_on_time",
    "waybill_accuracy_outcomes",
    "waybill_outcomes_reported_total",
    "waybill_prediction_log_dropped_total",
    # the in-process alert engine, the canary judge's verdicts, and rollbacks
    "waybill_alerts_firing",
    "waybill_judge_verdict",
    "waybill_judge_effect",
    "waybill_judge_low",
    "waybill_judge_high",
    "waybill_judge_evidence",
    "waybill_judge_samples",
    "waybill_alerts_transitions_total",
    "waybill_rollbacks_total",
    # Prometheus itself: 1 when the target was scraped
    "up",
}

# The alerts the shipped rules hold, and their severities: the ones generated from
# deploy/routing.toml's in-process rules (and the rule each comes from), then operations.yml's.
GENERATED = {
    "WaybillServerErrors": "server-errors",
    "WaybillLatencyP99": "latency-p99",
    "WaybillInputDrift": "input-drift",
    "WaybillPredictionDrift": "prediction-drift",
    "WaybillCanaryAccuracy": "canary-accuracy",
    "WaybillIntervalCoverage": "interval-coverage",
    "WaybillShadowDivergence": "shadow-divergence",
}
REQUIRED = {
    "WaybillServerErrors": "critical",
    "WaybillLatencyP99": "warning",
    "WaybillInputDrift": "warning",
    "WaybillPredictionDrift": "warning",
    "WaybillCanaryAccuracy": "critical",
    "WaybillIntervalCoverage": "warning",
    "WaybillShadowDivergence": "info",
    "WaybillCanaryRolledBack": "warning",
    "WaybillConfigRejected": "warning",
    "WaybillModelLoadFailed": "warning",
    "WaybillPredictionLogDropping": "warning",
    "WaybillDown": "critical",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None and prometheus_binary() is not None:  # installs Debian's prometheus
        found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed and cannot be installed here "
                    "(make test installs Debian's prometheus package, which ships it)")
    return found


def run(promtool: str, *args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


# --------------------------------------------------------------------------- promtool


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _wrong_expectation(tests: Any, rule_groups: Any) -> str:
    """The first expected firing alert names a version that is not firing."""
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            if case["exp_alerts"] and "version" in case["exp_alerts"][0]["exp_labels"]:
                case["exp_alerts"][0]["exp_labels"]["version"] = "9.9.9"
                return str(case["alertname"])
    raise AssertionError("no expected alert with a version label to make wrong")


def _error_guard_removed(tests: Any, rule_groups: Any) -> str:
    """Without its 100-request guard the error-rate rule fires on 1.3.0's 75 requests."""
    return _edit_rule(rule_groups, "WaybillServerErrors", ">= 100", ">= 1")


def _judge_verdict_misread(tests: Any, rule_groups: Any) -> str:
    """Reading any verdict (undecided 0, not worse -1) as worse fires on canaries the
    server's judge has not found worse."""
    return _edit_rule(rule_groups, "WaybillCanaryAccuracy", ") == 1", ") >= -1")


def _edit_rule(rule_groups: Any, alert: str, old: str, new: str) -> str:
    for group in rule_groups["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                assert rule["expr"].count(old) == 1, rule["expr"]
                rule["expr"] = rule["expr"].replace(old, new)
                return alert
    raise AssertionError(f"no rule {alert}")


@pytest.mark.parametrize("mutate", [_wrong_expectation, _error_guard_removed,
                                    _judge_verdict_misread])
def test_promtool_unit_tests_can_fail(promtool: str, tmp_path: Path, mutate: Any) -> None:
    """The unit tests have teeth: a wrong expectation, a missing minimum-sample guard and
    a misread verdict each make `promtool test rules` fail, naming the alert."""
    tests, rule_groups = load(RULE_TESTS), load(RULES)
    assert tests["rule_files"] == [RULES.name]
    alert = mutate(tests, rule_groups)
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(tests, sort_keys=False))
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rule_groups, sort_keys=False))
    assert run(promtool, "check", "rules", RULES.name, cwd=tmp_path).returncode == 0
    result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr
    assert f"alertname: {alert}" in result.stdout + result.stderr


# --------------------------------------------------------------------------- the rules


def waybill_rules(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The `waybill rules` command, as an operator runs it (the project's own code)."""
    return subprocess.run([sys.executable, "-m", "server.runtime.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_committed_rules_are_generated_and_current(tmp_path: Path) -> None:
    """waybill-rules.yml is exactly what `waybill rules` prints for the shipped routing file
    and operations file: regenerate it (the command in its header) after changing either."""
    current = waybill_rules(*COMMAND)
    assert current.returncode == 0, current.stderr
    assert current.stdout == RULES.read_text(encoding="utf-8"), (
        "deploy/prometheus/waybill-rules.yml is stale: run .venv/bin/waybill "
        + " ".join(COMMAND) + " > deploy/prometheus/waybill-rules.yml")
    # The check can fail: a threshold changed in a copy of the routing file changes the output.
    routing = tmp_path / "deploy" / "routing.toml"
    routing.parent.mkdir()
    assert ROUTING.read_text().count("threshold = 0.01\n") == 1
    routing.write_text(ROUTING.read_text().replace("threshold = 0.01\n", "threshold = 0.02\n"))
    (tmp_path / "deploy" / "prometheus").mkdir()
    shutil.copy(OPERATIONS, tmp_path / "deploy" / "prometheus" / OPERATIONS.name)
    changed = subprocess.run(
        [sys.executable, "-c", "import sys; from server.runtime.cli import main; "
         "sys.exit(main(sys.argv[1:]))", *COMMAND],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout != current.stdout
    assert "\n          > 0.02\n" in changed.stdout
    assert "\n          > 0.01\n" not in changed.stdout


def test_the_rules_are_the_in_process_rules_and_the_operations_rules() -> None:
    """One alert per in-process rule of deploy/routing.toml (its name, `rule` label and
    severity), then operations.yml's groups unchanged; the expected set is written out so
    that a dropped or renamed alert fails here."""
    from server.serving.routing_file import parse_routing_file

    found = {rule["alert"]: rule["labels"]["severity"] for rule in rules()}
    assert len(found) == len(rules()), "an alert name is used twice"
    assert {name: found.get(name) for name in REQUIRED} == REQUIRED
    assert all(name.startswith("Waybill") for name in found)
    shipped = parse_routing_file(ROUTING.read_text(), str(ROUTING)).alerts
    in_process = {rule.name: rule.severity.value for rule in shipped["delivery_eta"]}
    generated = {rule["labels"]["rule"]: rule["labels"]["severity"] for rule in rules()
                 if "rule" in rule["labels"]}
    assert generated == in_process
    assert {rule["alert"]: rule["labels"]["rule"] for rule in rules()
            if "rule" in rule["labels"]} == GENERATED
    groups = load(RULES)["groups"]
    assert [g["name"] for g in groups[:2]] == ["waybill-traffic", "waybill-model-quality"]
    assert groups[2:] == load(OPERATIONS)["groups"]
    # The rules only the in-process engine evaluates exactly are said so, in the header.
    header = RULES.read_text().split("\ngroups:\n")[0]
    assert "- WaybillCanaryAccuracy (delivery_eta): action rollback" in header
    assert ("- WaybillCanaryAccuracy (delivery_eta): Prometheus cannot run the sequential "
            "test" in header)
    assert "- WaybillIntervalCoverage (delivery_eta): reads the server's accuracy gauges" \
        in header


def test_error_rate_counts_the_servers_own_server_side_codes() -> None:
    """The same codes as the in-process error_rate rule (status_class "server")."""
    from server.telemetry.observe import SERVER_ERROR_CODES

    expr = next(r["expr"] for r in rules() if r["alert"] == "WaybillServerErrors")
    [codes] = re.findall(r'code=~"([A-Z_|]+)"', expr)
    assert set(codes.split("|")) == set(SERVER_ERROR_CODES)


def _github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_rule_has_severity_summary_and_a_runbook_section() -> None:
    anchors = _github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    for group in load(RULES)["groups"]:
        assert re.fullmatch(r"\d+[sm]", group["interval"]), group["name"]
        for rule in group["rules"]:
            name = rule["alert"]
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
            assert set(rule["labels"]) <= {"severity", "rule"}, name
            assert rule["labels"]["severity"] in SEVERITIES, name
            notes = rule["annotations"]
            assert set(notes) == {"summary", "description", "runbook_url"}, name
            assert notes["summary"].strip() and notes["description"].strip(), name
            url, _, anchor = notes["runbook_url"].partition("#")
            assert url.endswith("/docs/runbook.md"), name
            assert anchor == name.lower(), name
            assert anchor in anchors, f"docs/runbook.md has no section '### {name}'"


def test_version_rules_hold_back_on_too_little_data() -> None:
    """Every rule about one version's traffic, drift or accuracy also requires a minimum
    count (requests, rows or outcomes) before it can fire; the canary judge's alert reads
    the server's verdict, which holds back until each side has min_samples outcomes."""
    model = '{model="delivery_eta"}'
    guards = {
        "WaybillServerErrors": ">= 100",
        "WaybillLatencyP99": ">= 100",
        "WaybillInputDrift": f"waybill_drift_window_rows{model} >= 500",
        "WaybillPredictionDrift": f"waybill_drift_window_rows{model} >= 500",
        "WaybillIntervalCoverage": f"(waybill_accuracy_outcomes{model}) >= 200",
        "WaybillShadowDivergence": ">= 100",
    }
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    for name, guard in guards.items():
        assert guard in exprs[name], name
    assert ('(waybill_judge_verdict{model="delivery_eta",rule="canary-accuracy"}) == 1'
            in exprs["WaybillCanaryAccuracy"])


def rule_metric_names(expr: str) -> set[str]:
    # promql_metric_names would read the unit of `offset 15m` as a metric called "m".
    return promql_metric_names(re.sub(r"\boffset\s+\w+", "", expr))


def test_rule_metric_names_are_found() -> None:
    assert rule_metric_names(
        'sum by (m) (a_total unless a_total offset 15m) > 0 and on (m) b{le="+Inf"} >= 100'
        ' or absent(up{job="waybill"})') == {"a_total", "b", "up"}


def test_rules_query_only_exported_metrics() -> None:
    used: dict[str, set[str]] = {}
    for rule in rules():
        for name in rule_metric_names(rule["expr"]):
            used.setdefault(name, set()).add(rule["alert"])
    unknown = {name: sorted(alerts) for name, alerts in used.items() if name not in EXPORTED}
    assert not unknown, f"the rules query metrics the server does not export: {unknown}"
    assert len(used) >= 15


def test_every_rule_is_unit_tested_firing_and_not_firing() -> None:
    fired: set[str] = set()
    held: set[str] = set()
    for group in load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else held).add(case["alertname"])
            for alert in case["exp_alerts"]:
                # promtool compares labels exactly: the severity is part of each expectation.
                assert alert["exp_labels"]["severity"] in SEVERITIES
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set(), "rules never shown firing"
    assert names - held == set(), "rules never shown holding back"
