"""Prometheus alerting rules generated from the routing file's alert rules.

One Prometheus alert per in-process rule and model: named after the rule (``server-errors``
becomes ``WaybillServerErrors``, with a ``rule`` label), with the rule's operator,
threshold, window, ``for``, ``min_samples`` guard, severity and scope. The PromQL of each
:class:`~server.monitoring.rules.Metric` is one template in :data:`TEMPLATES` (complete, or
this module refuses to import, like ``signals.READERS``), over the series the server
exports. Where Prometheus can only approximate the in-process rule (the accuracy metrics
read the server's ``--accuracy-window`` gauges, not the rule's window; the canary judge's
sequential test runs only in the server, so its alert reads the server's exported verdict;
only the in-process engine can roll back), the output says so, per rule and in its header.

Hand-written rules with no in-process twin (rollbacks, refused configs, failed loads,
down targets) are appended as written from an operations rule file, so that one command,
``waybill rules``, produces the whole rule file.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from router.config import ModelConfig
from server.monitoring.rules import (
    MODEL_SCOPE,
    OUTCOME_METRICS,
    Action,
    AlertRule,
    Metric,
    StatusClass,
)
from server.telemetry.observe import SERVER_ERROR_CODES

RUNBOOK_URL = "https://github.com/OWNER/waybill/blob/main/docs/runbook.md"
ALERT_PREFIX = "Waybill"
BY = "namespace, model, version"  # every generated alert aggregates to one version
WHERE = ("{{ $labels.model }} {{ $labels.version }}"
         "{{ with $labels.namespace }} in {{ . }}{{ end }}")
OP_WORDS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below"}
ACCURACY = OUTCOME_METRICS


class PrometheusRulesError(ValueError):
    """The rules cannot be turned into one Prometheus rule file."""


@dataclass(frozen=True, slots=True)
class Target:
    """One in-process rule of one model, as Prometheus will judge it."""

    rule: AlertRule
    model: str
    version: str | None  # the version a label or version scope names; None: every version

    def match(self, *extra: str, versioned: bool = True) -> str:
        """The label matchers of one selector: this model (and version), and ``extra``."""
        matchers = [f"model={_quote(self.model)}"]
        if versioned and self.version is not None:
            matchers.append(f"version={_quote(self.version)}")
        return "{" + ",".join([*matchers, *extra]) + "}"

    @property
    def window(self) -> str:
        return duration(self.rule.window)

    @property
    def compare(self) -> str:
        return f"{self.rule.op} {number(self.rule.threshold)}"


@dataclass(frozen=True, slots=True)
class Template:
    """How one metric reads in PromQL, and what its alert says."""

    group: str
    expr: Callable[[Target], str]
    summary: Callable[[Target], str]
    description: Callable[[Target], str]


GROUPS = {"waybill-traffic": "30s", "waybill-model-quality": "1m"}


# --------------------------------------------------------------------------- formatting


def _quote(value: str) -> str:
    return json.dumps(value)


def number(value: float) -> str:
    """A threshold as PromQL reads it: 1 for 1.0, 0.01 for 0.01."""
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: 300 -> "5m", 3600 -> "1h", 90 -> "90s"."""
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def spoken(seconds: float) -> str:
    """Seconds in words: "5 minutes", "1 hour", "90 seconds"."""
    whole = int(seconds)
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if whole % size == 0:
            count = whole // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    raise AssertionError(seconds)  # every whole number is whole seconds


def percent(value: float) -> str:
    return f"{value * 100:g}%"


def _for(target: Target) -> str:
    return f" for {spoken(target.rule.for_s)}" if target.rule.for_s > 0 else ""


def _threshold(target: Target, shown: str, samples: str) -> str:
    rule = target.rule
    return f"(threshold {rule.op} {shown}, at least {rule.min_samples} {samples})"


# --------------------------------------------------------------------------- PromQL


def _guarded(value: str, target: Target, guard: str) -> str:
    """``value`` compared with the threshold, and-ed with the minimum-sample guard."""
    return (f"{value}\n{target.compare}\nand on ({BY})\n"
            f"  {guard} >= {target.rule.min_samples}")


def _error_rate(t: Target) -> str:
    codes = "|".join(sorted(SERVER_ERROR_CODES))
    code = {StatusClass.SERVER: f'code=~"{codes}"',
            StatusClass.CLIENT: f'code!~"OK|{codes}"',
            StatusClass.ANY: 'code!="OK"'}[t.rule.status_class]
    # Like the in-process rule, judge served versions: calls that fail before routing
    # (version "_unknown": unknown versions, refused requests, draining) are left out.
    served = () if t.version is not None else ('version!="_unknown"',)
    calls = f"waybill_requests_total{t.match(*served)}"
    errors = f"waybill_requests_total{t.match(*served, code)}"
    value = (f"(\n    sum by ({BY}) (rate({errors}[{t.window}]))\n  /\n"
             f"    sum by ({BY}) (rate({calls}[{t.window}]))\n)")
    return _guarded(value, t, f"sum by ({BY}) (increase({calls}[{t.window}]))")


def _latency(t: Target) -> str:
    buckets = "waybill_request_duration_seconds_bucket"
    # Served versions only, as for error_rate: a call answered before routing (refused,
    # or held by a drain) is recorded under version "_unknown".
    served = () if t.version is not None else ('version!="_unknown"',)
    value = (f"histogram_quantile({number(t.rule.quantile)},\n"
             f"  sum by ({BY}, le) (rate({buckets}{t.match(*served)}[{t.window}]))\n)")
    total = t.match(*served, 'le="+Inf"')
    return _guarded(value, t, f"sum by ({BY}) (increase({buckets}{total}[{t.window}]))")


def _feature_psi(t: Target) -> str:
    rule = t.rule
    if rule.feature is not None:
        features: tuple[str, ...] = (f"feature={_quote(rule.feature)}",)
    elif rule.exclude:
        features = (f"feature!~{_quote('|'.join(re.escape(f) for f in rule.exclude))}",)
    else:
        features = ()
    return (f"max by ({BY}) (\n  waybill_drift_psi{t.match(*features)}\n"
            f"    and ignoring (feature) (waybill_drift_window_rows{t.match()} "
            f">= {rule.min_samples})\n) {t.compare}")


def _prediction_psi(t: Target) -> str:
    return (f"max by ({BY}) (\n  waybill_drift_prediction_psi{t.match()} and "
            f"(waybill_drift_window_rows{t.match()} >= {t.rule.min_samples})\n) {t.compare}")


def _fleet(series: str, match: str) -> str:
    """One version's accuracy over every replica, each weighted by its outcome count
    (a replica without outcomes reports NaN and must not count)."""
    return (f"sum by ({BY}) ({series}{match} * (waybill_accuracy_outcomes{match} > 0))\n"
            f"  / sum by ({BY}) (waybill_accuracy_outcomes{match})")


def _accuracy(series: str) -> Callable[[Target], str]:
    def expr(t: Target) -> str:
        return _guarded(_fleet(series, t.match()), t,
                        f"sum by ({BY}) (waybill_accuracy_outcomes{t.match()})")
    return expr


def _mae_ratio(t: Target) -> str:
    n = t.rule.min_samples
    canary, stable = t.match(), t.match(versioned=False)
    on = f"and on ({BY})"
    # Model scope: a canary is routed by the file (weight > 0, rolled back or not) and not
    # the stable version, as the in-process rule watches. A label or version scope names
    # the version to compare.
    routed = (f"  {on} (max by ({BY}) (waybill_model_configured_weight{canary}) > 0)\n"
              if t.version is None else "")
    return (f"(\n    {_fleet('waybill_accuracy_mae', canary)}\n"
            f"  {on} (sum by ({BY}) (waybill_accuracy_outcomes{canary}) >= {n})\n"
            f"{routed}"
            f"  unless on ({BY}) (max by ({BY}) (waybill_model_stable{canary}) == 1)\n)\n"
            f"/ on (namespace, model) group_left ()\n"
            f"(\n    {_fleet('waybill_accuracy_mae', stable)}\n"
            f"  {on} (sum by ({BY}) (waybill_accuracy_outcomes{stable}) >= {n})\n"
            f"  {on} (max by ({BY}) (waybill_model_stable{stable}) == 1)\n)\n"
            f"{t.compare}")


def _judge(t: Target) -> str:
    """The server's own verdict (Prometheus cannot run the sequential test): the effect,
    where the verdict is worse (1). Replicas judge the shared store alike; max over them."""
    rule = f"rule={_quote(t.rule.name)}"
    return (f"max by ({BY}) (waybill_judge_effect{t.match(rule)})\n"
            f"and on ({BY})\n"
            f"  max by ({BY}) (waybill_judge_verdict{t.match(rule)}) == 1")


def _shadow(t: Target) -> str:
    total, count = "waybill_shadow_divergence_sum", "waybill_shadow_divergence_count"
    value = (f"sum by ({BY}) (rate({total}{t.match()}[{t.window}]))\n"
             f"  / sum by ({BY}) (rate({count}{t.match()}[{t.window}]))")
    return _guarded(value, t, f"sum by ({BY}) (increase({count}{t.match()}[{t.window}]))")


# --------------------------------------------------------------------------- what it says


def _error_summary(t: Target) -> str:
    fail = {StatusClass.SERVER: "fail server-side", StatusClass.CLIENT: "fail on the caller's side",
            StatusClass.ANY: "fail"}[t.rule.status_class]
    return f"{{{{ $labels.model }}}} {{{{ $labels.version }}}}: " \
           f"{{{{ $value | humanizePercentage }}}} of requests {fail}"


def _error_description(t: Target) -> str:
    codes = sorted(SERVER_ERROR_CODES)
    status, which = {
        StatusClass.SERVER: ("a server-side status", " Server-side: " + ", ".join(codes[:-1])
                             + f" and {codes[-1]}."),
        StatusClass.CLIENT: ("a caller's error", " A caller's error: any status but OK and "
                             "the server-side ones (" + ", ".join(codes) + ")."),
        StatusClass.ANY: ("a status other than OK", ""),
    }[t.rule.status_class]
    return (f"Over the last {spoken(t.rule.window)} {{{{ $value | humanizePercentage }}}} of "
            f"Predict calls to {WHERE} ended with {status} "
            f"{_threshold(t, percent(t.rule.threshold), 'requests')}.{which} "
            "If this version is a canary, roll it back.")


def _quantile_name(t: Target) -> str:
    return f"p{t.rule.quantile * 100:g}"


def _latency_summary(t: Target) -> str:
    return ("{{ $labels.model }} {{ $labels.version }}: "
            f"{_quantile_name(t)} latency {{{{ $value | humanizeDuration }}}}")


def _latency_description(t: Target) -> str:
    rule = t.rule
    return (f"The {_quantile_name(t)} of Predict latency over {spoken(rule.window)} for "
            f"{WHERE} has been {OP_WORDS[rule.op]} {number(rule.threshold * 1000)} ms"
            f"{_for(t)} (now {{{{ $value | humanizeDuration }}}}, at least "
            f"{rule.min_samples} requests in {spoken(rule.window)}).")


def _psi(name: str) -> Callable[[Target], str]:
    def summary(t: Target) -> str:
        what = f"feature {t.rule.feature} drift" if t.rule.feature else name
        return ("{{ $labels.model }} {{ $labels.version }}: "
                f"{what}, PSI {{{{ $value | printf \"%.2f\" }}}}")
    return summary


def _feature_description(t: Target) -> str:
    rule = t.rule
    guard = _threshold(t, number(rule.threshold), "rows in the window")
    if rule.feature is not None:
        return (f"The population stability index of feature {rule.feature} of {WHERE} "
                "against its training reference is {{ $value | printf \"%.2f\" }} "
                f"{guard}.")
    skipped = (" (leaving out " + ", ".join(rule.exclude) + ")") if rule.exclude else ""
    return (f"The largest per-feature population stability index{skipped} of {WHERE} "
            "against its training reference is {{ $value | printf \"%.2f\" }} "
            f"{guard}. waybill_drift_psi{{model=\"{{{{ $labels.model }}}}\","
            "version=\"{{ $labels.version }}\"} names the features.")


def _prediction_description(t: Target) -> str:
    return (f"The distribution of the predictions of {WHERE} has moved away from "
            "its training reference: PSI {{ $value | printf \"%.2f\" }} "
            f"{_threshold(t, number(t.rule.threshold), 'rows in the window')}.")


def _mae_summary(t: Target) -> str:
    return ("{{ $labels.model }} {{ $labels.version }}: "
            "MAE {{ $value | printf \"%.2f\" }}")


def _mae_description(t: Target) -> str:
    return (f"On reported outcomes, the mean absolute error of {WHERE} is "
            "{{ $value | printf \"%.2f\" }} in the model's unit "
            f"{_threshold(t, number(t.rule.threshold), 'outcomes')}.")


def _ratio_summary(t: Target) -> str:
    return ("{{ $labels.model }} canary {{ $labels.version }}: "
            "MAE {{ $value | printf \"%.2f\" }}x stable's")


def _ratio_description(t: Target) -> str:
    then = ("The server's own rule rolls the canary back; follow WaybillCanaryRolledBack."
            if t.rule.action == Action.ROLLBACK else "Roll the canary back.")
    return (f"On reported outcomes, the mean absolute error of canary {WHERE} is "
            "{{ $value | printf \"%.2f\" }} times the stable version's "
            f"{_threshold(t, number(t.rule.threshold), 'outcomes each')}. {then}")


def _judge_summary(t: Target) -> str:
    return ("{{ $labels.model }} canary {{ $labels.version }}: judged worse than stable, "
            "loss {{ $value | humanizePercentage }} above")


def _judge_description(t: Target) -> str:
    rule = t.rule
    then = ("The server's own rule rolls the canary back; follow WaybillCanaryRolledBack."
            if rule.action == Action.ROLLBACK else "Roll the canary back.")
    return (f"The server's canary judge found canary {WHERE} worse than the stable version "
            "on reported outcomes: its mean loss per outcome is "
            "{{ $value | humanizePercentage }} above stable's in the same periods "
            f"(sequential test at alpha {number(rule.alpha)}, periods of "
            f"{spoken(rule.period_s)}, at least {rule.min_samples} outcomes each). "
            "waybill_judge_low and waybill_judge_high bound the effect, "
            f"waybill_judge_evidence is the evidence. {then}")


def _coverage_summary(t: Target) -> str:
    return ("{{ $labels.model }} {{ $labels.version }}: interval covers "
            "{{ $value | humanizePercentage }} of outcomes")


def _coverage_description(t: Target) -> str:
    return ("{{ $value | humanizePercentage }} of the reported delivery times of "
            f"{WHERE} fell inside the predicted interval "
            f"{_threshold(t, percent(t.rule.threshold), 'outcomes')}.")


def _on_time_summary(t: Target) -> str:
    return ("{{ $labels.model }} {{ $labels.version }}: "
            "{{ $value | humanizePercentage }} of deliveries on time")


def _on_time_description(t: Target) -> str:
    return ("{{ $value | humanizePercentage }} of the reported deliveries of "
            f"{WHERE} arrived by the predicted date "
            f"{_threshold(t, percent(t.rule.threshold), 'outcomes')}.")


def _classes_summary(words: str, shown: str) -> Callable[[Target], str]:
    def summary(t: Target) -> str:
        return "{{ $labels.model }} {{ $labels.version }}: " + f"{words} {shown}"
    return summary


def _classes_description(words: str, shown: str) -> Callable[[Target], str]:
    def description(t: Target) -> str:
        return (f"On reported outcomes, the {words} of {WHERE} is {shown} "
                f"{_threshold(t, number(t.rule.threshold), 'outcomes')}.")
    return description


_NUMBER = "{{ $value | printf \"%.3f\" }}"
_PERCENT = "{{ $value | humanizePercentage }}"


def _shadow_summary(t: Target) -> str:
    return ("{{ $labels.model }} shadow {{ $labels.version }}: "
            "{{ $value | printf \"%.2f\" }} from the served answer")


def _shadow_description(t: Target) -> str:
    return (f"Over {spoken(t.rule.window)} the shadow {WHERE} predicted on average "
            "{{ $value | printf \"%.2f\" }} (in the model's unit) away from the served "
            f"version {_threshold(t, number(t.rule.threshold), 'compared rows')}.")


TRAFFIC, QUALITY = "waybill-traffic", "waybill-model-quality"

# One template per Metric: the PromQL over the exported series, and the alert's words.
TEMPLATES: Mapping[Metric, Template] = {
    Metric.ERROR_RATE: Template(TRAFFIC, _error_rate, _error_summary, _error_description),
    Metric.LATENCY: Template(TRAFFIC, _latency, _latency_summary, _latency_description),
    Metric.FEATURE_PSI: Template(QUALITY, _feature_psi, _psi("feature drift"),
                                 _feature_description),
    Metric.PREDICTION_PSI: Template(QUALITY, _prediction_psi, _psi("prediction drift"),
                                    _prediction_description),
    Metric.MAE: Template(QUALITY, _accuracy("waybill_accuracy_mae"), _mae_summary,
                         _mae_description),
    Metric.MAE_RATIO: Template(QUALITY, _mae_ratio, _ratio_summary, _ratio_description),
    Metric.COVERAGE: Template(QUALITY, _accuracy("waybill_accuracy_coverage"),
                              _coverage_summary, _coverage_description),
    Metric.ON_TIME: Template(QUALITY, _accuracy("waybill_accuracy_on_time"),
                             _on_time_summary, _on_time_description),
    Metric.LOG_LOSS: Template(QUALITY, _accuracy("waybill_accuracy_log_loss"),
                              _classes_summary("log loss", _NUMBER),
                              _classes_description("mean log loss", _NUMBER)),
    Metric.CLASS_ACCURACY: Template(QUALITY, _accuracy("waybill_accuracy_accuracy"),
                                    _classes_summary("accuracy", _PERCENT),
                                    _classes_description("share of right classes", _PERCENT)),
    Metric.BRIER: Template(QUALITY, _accuracy("waybill_accuracy_brier"),
                           _classes_summary("Brier score", _NUMBER),
                           _classes_description("mean Brier score", _NUMBER)),
    Metric.SHADOW_DIVERGENCE: Template(QUALITY, _shadow, _shadow_summary, _shadow_description),
    Metric.JUDGE: Template(QUALITY, _judge, _judge_summary, _judge_description),
}
_missing = set(Metric) - set(TEMPLATES)
if _missing:  # a new Metric needs its PromQL here, or the generated file would lack it
    raise ImportError(f"no Prometheus template for metric(s) {sorted(_missing)}")


# --------------------------------------------------------------------------- one alert


def alert_name(rule_name: str) -> str:
    """``server-errors`` -> ``WaybillServerErrors``."""
    return ALERT_PREFIX + "".join(part[:1].upper() + part[1:]
                                  for part in re.split(r"[-_]", rule_name) if part)


def approximations(rule: AlertRule) -> list[str]:
    """What Prometheus judges differently from the in-process engine, in words."""
    notes = []
    if rule.metric in ACCURACY:
        notes.append("reads the server's accuracy gauges, over its --accuracy-window "
                     f"(default 1h), not the rule's window ({duration(rule.window)})")
    if rule.metric == Metric.JUDGE:
        notes.append("Prometheus cannot run the sequential test: this alert reads "
                     "waybill_judge_verdict, the server's own verdict (1 = worse)")
    if rule.action == Action.ROLLBACK:
        notes.append("action rollback: only the in-process engine rolls back; this alert "
                     "notifies")
    return notes


def _summary(t: Target, template: Template) -> str:
    if not t.rule.summary:
        return template.summary(t)
    text = t.rule.summary.replace("{{", "{{ \"{{\" }}")  # the rule's words, not a template
    return f"{{{{ $labels.model }}}} {{{{ $labels.version }}}}: {text}"


def build(target: Target) -> dict[str, Any]:
    """One Prometheus alerting rule, as the rule file holds it."""
    rule, template = target.rule, TEMPLATES[target.rule.metric]
    name = alert_name(rule.name)
    alert: dict[str, Any] = {"alert": name, "expr": template.expr(target) + "\n"}
    if rule.for_s > 0:
        alert["for"] = duration(rule.for_s)
    alert["labels"] = {"severity": rule.severity.value, "rule": rule.name}
    alert["annotations"] = {
        "summary": _summary(target, template),
        "description": template.description(target),
        "runbook_url": f"{RUNBOOK_URL}#{name.lower()}",
    }
    return alert


def _scope(rule: AlertRule, model: ModelConfig) -> str | None:
    """The version a label or version scope names, as ``scoped_versions`` resolves it."""
    if rule.scope == MODEL_SCOPE:
        return None
    return model.labels().get(rule.scope, rule.scope)


def _describe(rule: AlertRule, model: str) -> str:
    if rule.metric == Metric.JUDGE:
        parts = [f"judge alpha {number(rule.alpha)}, min_effect {number(rule.min_effect)}, "
                 f"period {duration(rule.period_s)}"]
    else:
        parts = [f"{rule.metric.value} {rule.op} {number(rule.threshold)}"]
    if rule.scope != MODEL_SCOPE:
        parts.append(f"scope {rule.scope}")
    if rule.metric in {Metric.ERROR_RATE, Metric.LATENCY, Metric.SHADOW_DIVERGENCE} | ACCURACY:
        parts.append(f"window {duration(rule.window)}")
    parts += [f"for {duration(rule.for_s)}", f"min_samples {rule.min_samples}",
              f"severity {rule.severity.value}", f"action {rule.action.value}"]
    return f"rule {rule.name} of model {model}: " + ", ".join(parts)


# --------------------------------------------------------------------------- the file


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` (a longer word excepted), never breaking inside a
    template action (``{{ ... }}``)."""
    kept = re.sub(r"\{\{.*?\}\}", lambda m: m.group(0).replace(" ", "\0"), text)
    return [line.replace("\0", " ") for line in textwrap.wrap(
        kept, width=width, break_long_words=False, break_on_hyphens=False)]


def _folded(value: str, indent: str) -> str:
    lines = _wrap(value, 88)
    return ">-\n" + "".join(f"{indent}{line}\n" for line in lines).rstrip("\n")


def _render_alert(alert: dict[str, Any], comments: list[str]) -> list[str]:
    pad = " " * 6
    out = [f"{pad}# {line}" for comment in comments
           for line in _wrap(comment, 94 - len(pad))]
    out.append(f"{pad}- alert: {alert['alert']}")
    out.append(f"{pad}  expr: |")
    out += [f"{pad}    {line}" if line else "" for line in alert["expr"].rstrip("\n").split("\n")]
    if "for" in alert:
        out.append(f"{pad}  for: {alert['for']}")
    out.append(f"{pad}  labels:")
    out += [f"{pad}    {key}: {value}" for key, value in alert["labels"].items()]
    notes = alert["annotations"]
    out.append(f"{pad}  annotations:")
    out.append(f"{pad}    summary: {json.dumps(notes['summary'])}")  # YAML reads JSON strings
    out.append(f"{pad}    description: {_folded(notes['description'], pad + '      ')}")
    out.append(f"{pad}    runbook_url: {notes['runbook_url']}")
    return out


def _operations(text: str, source: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The operations file's group lines (after its ``groups:`` line, comments kept) and
    its groups as parsed."""
    try:
        parsed: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PrometheusRulesError(f"{source}: not YAML: {err}") from err
    if not isinstance(parsed, dict) or set(parsed) != {"groups"} \
            or not isinstance(parsed["groups"], list):
        raise PrometheusRulesError(f"{source}: expected only a top-level `groups:` list")
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.rstrip() == "groups:"]
    if len(starts) != 1:
        raise PrometheusRulesError(f"{source}: expected one top-level `groups:` line")
    return lines[starts[0] + 1:], parsed["groups"]


def render(models: Mapping[str, ModelConfig], alerts: Mapping[str, tuple[AlertRule, ...]],
           *, source: str, operations: str | None = None,
           operations_source: str | None = None) -> str:
    """The Prometheus rule file for these models' alert rules, then the operations file's
    groups as written. ``source`` and ``operations_source`` are the paths the header names."""
    groups: dict[str, list[tuple[dict[str, Any], list[str]]]] = {g: [] for g in GROUPS}
    header_notes: list[str] = []
    names: dict[tuple[str, str], str] = {}
    for model, rules in alerts.items():
        config = models[model]
        for rule in rules:
            name = alert_name(rule.name)
            clash = names.setdefault((model, name), rule.name)
            if clash != rule.name:
                raise PrometheusRulesError(f"models.{model}: rules {clash!r} and {rule.name!r} "
                                           f"both make alert {name}")
            target = Target(rule, model, _scope(rule, config))
            notes = approximations(rule)
            comments = [_describe(rule, model)]
            comments += [f"approximate: {note}" for note in notes]
            header_notes += [f"- {name} ({model}): {note}" for note in notes]
            groups[TEMPLATES[rule.metric].group].append((build(target), comments))

    ops_lines, ops_groups = ([], []) if operations is None else \
        _operations(operations, operations_source or "operations")
    generated = {alert["alert"] for items in groups.values() for alert, _ in items}
    taken = {rule.get("alert") for group in ops_groups for rule in group.get("rules", [])}
    if generated & taken:
        raise PrometheusRulesError(
            f"{operations_source}: alert(s) {sorted(generated & taken)} are also made from "
            f"{source}'s rules")

    command = f"waybill rules --routing {source}"
    if operations is not None:
        command += f" --operations {operations_source}"
    out = [
        "# Prometheus alerting rules for Waybill. Generated; do not edit by hand:",
        f"#   {command} \\",
        "#     > deploy/prometheus/waybill-rules.yml",
        "#",
        f"# {', '.join(g for g in GROUPS)}: one alert per alert rule and model of",
        f"# {source} (the server's in-process rules), named after the rule (server-errors:",
        "# WaybillServerErrors) with a `rule` label, its threshold, window, `for`, min_samples",
        "# guard, severity and scope; the PromQL of each metric is one template in",
        "# server/monitoring/prometheus_rules.py. Change a threshold in the routing file and run",
        "# the command again; tests/test_prometheus_rules.py fails while this file is stale.",
    ]
    if operations is not None:
        out += [f"# The other groups are copied as written from {operations_source}: rules",
                "# with no in-process twin."]
    out += [
        "#",
        "# deploy/k8s/components/monitoring/prometheusrule.yaml (the Operator's PrometheusRule)",
        "# is made from this file by deploy/prometheus/make_prometheusrule.py. The promtool",
        "# unit tests are waybill-rules.test.yml beside this file.",
        "#",
        "# Every generated rule aggregates by (namespace, model, version), and holds back on",
        "# too little data: it is and-ed with the rule's min_samples of requests, rows or",
        "# outcomes. runbook_url points at docs/runbook.md, \"Alerts\"; replace OWNER.",
        "#",
        "# Where Prometheus only approximates the in-process rule:",
    ]
    for note in header_notes:
        first_line, *rest = _wrap(note, 90)
        out += [f"# {first_line}", *(f"#   {line}" for line in rest)]
    if not header_notes:
        out.append("# (nowhere)")
    out.append("groups:")
    first = True
    for group, items in groups.items():
        if not items:
            continue
        if not first:
            out.append("")
        first = False
        out += [f"  - name: {group}", f"    interval: {GROUPS[group]}", "    rules:"]
        for i, (alert, comments) in enumerate(items):
            if i:
                out.append("")
            out += _render_alert(alert, comments)
    if ops_lines:
        out.append("")
        out += [line.rstrip() for line in ops_lines]
    text = "\n".join(out).rstrip("\n") + "\n"
    _check(text, groups, ops_groups)
    return text


def _check(text: str, groups: Mapping[str, list[tuple[dict[str, Any], list[str]]]],
           ops_groups: list[dict[str, Any]]) -> None:
    """The text parses back to exactly the rules built (quoting and folding kept them)."""
    expected = [{"name": g, "interval": GROUPS[g], "rules": [a for a, _ in items]}
                for g, items in groups.items() if items] + ops_groups
    parsed: Any = yaml.safe_load(text)
    if parsed != {"groups": expected}:
        raise AssertionError("the rendered rule file does not parse back to its rules")
