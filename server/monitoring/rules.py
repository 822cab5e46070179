"""Alert rules: ``[[models.<name>.alerts]]`` tables of the routing file, as frozen objects.

The router owns the rest of the file and knows nothing of these tables; the file's
parser (:mod:`server.serving.routing_file`) hands them here with the model's parsed
routes, so a rule can be checked against the labels and versions it names. Messages
name the field path and the bad value the way the router's do, for example::

    models.delivery_eta.alerts[0].for = "5d": must be a duration such as "30s", "5m" or "1h"

What a metric measures is :mod:`server.monitoring.signals`' business (one reader per
:class:`Metric`); how a rule fires is :mod:`server.monitoring.alerts`'.

``metric = "judge"`` is the canary judge (:mod:`server.monitoring.judge`, docs/judge.md):
a sequential test of the canary's per-outcome loss against the stable version's, with
``alpha``, ``min_effect`` and ``period`` instead of ``op``, ``threshold`` and ``window``.
Its condition is fixed, the hypothesis it tests: the canary's effect (its mean loss over
stable's, minus 1) is above 0, so such a rule reads as ``op = ">"``, ``threshold = 0``
and writing either is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import core_schema

from models.naming import SEMVER_RE
from router.config import (
    LABEL_RE,
    STABLE_LABEL,
    Frozen,
    ModelConfig,
    describe,
    rule_error,
    show,
)
from server.monitoring.judge import JudgeSpec

ALERTS_KEY = "alerts"  # the per-model table of the routing file these rules come from
# A rule name is a metric label and an event field: short, lowercase, no spaces.
RULE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DURATION_RE = re.compile(r"^(\d+)(s|m|h)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
OPERATORS = (">", ">=", "<", "<=")
MODEL_SCOPE = "model"


class Metric(StrEnum):
    """What an alert rule measures, per model version (docs/routing.md has the units)."""

    ERROR_RATE = "error_rate"  # share of calls ending in a status of `status_class`
    LATENCY = "latency"  # the `quantile` of Predict latency, seconds
    FEATURE_PSI = "feature_psi"  # PSI of `feature`, or the largest over features
    PREDICTION_PSI = "prediction_psi"  # PSI of the predictions against training
    MAE = "mae"  # regression: mean absolute error over reported outcomes, model's unit
    MAE_RATIO = "mae_ratio"  # MAE divided by the stable version's MAE in the same window
    COVERAGE = "coverage"  # share of outcomes inside the predicted interval
    ON_TIME = "on_time"  # share of deliveries that arrived by the predicted date
    LOG_LOSS = "log_loss"  # classifiers: mean -ln p(actual class) over reported outcomes
    CLASS_ACCURACY = "accuracy"  # classifiers: share whose most probable class was right
    BRIER = "brier"  # classifiers: mean Brier score over reported outcomes
    SHADOW_DIVERGENCE = "shadow_divergence"  # mean |shadow - served|, model's unit
    JUDGE = "judge"  # the canary judge: is the canary's loss worse than stable's (effect)


# Metrics of reported outcomes, read over the rule's `window`.
OUTCOME_METRICS = frozenset({Metric.MAE, Metric.MAE_RATIO, Metric.COVERAGE, Metric.ON_TIME,
                             Metric.LOG_LOSS, Metric.CLASS_ACCURACY, Metric.BRIER})
# Metrics read over the rule's `window`; the drift ones use the newest closed drift window.
WINDOWED = frozenset({Metric.ERROR_RATE, Metric.LATENCY, Metric.SHADOW_DIVERGENCE}
                     | OUTCOME_METRICS)


# Keys of the judge alone, and keys it refuses (its condition and its span are fixed).
JUDGE_KEYS = ("alpha", "min_effect", "period")
JUDGE_OP, JUDGE_THRESHOLD = ">", 0.0  # the effect above 0: what WORSE establishes
# Judge keys, written as in the file: the default of each (JudgeSpec's).
DEFAULT_ALPHA, DEFAULT_MIN_EFFECT, DEFAULT_PERIOD_S = 0.01, 0.10, 900.0


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Action(StrEnum):
    NOTIFY = "notify"
    ROLLBACK = "rollback"  # take the version's traffic away (an override to stable)


class StatusClass(StrEnum):
    SERVER = "server"  # UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, ...
    CLIENT = "client"  # INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, ...
    ANY = "any"  # everything but OK


def _duration(value: str | int) -> float:
    """``"90s"``, ``"5m"``, ``"1h"`` or whole seconds, as seconds."""
    if isinstance(value, bool):
        raise rule_error("must be a duration such as \"30s\", \"5m\" or \"1h\"")
    if isinstance(value, int):
        seconds = value
    else:
        match = DURATION_RE.match(value)
        if match is None:
            raise rule_error("must be a duration such as \"30s\", \"5m\" or \"1h\"")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 <= seconds <= 7 * 86400:
        raise rule_error("must be from 0 seconds to 7 days")
    return float(seconds)


# How a duration is written in the file: "90s", "5m", "1h", or whole seconds.
_WrittenDuration = Annotated[str, Strict()] | Annotated[int, Strict()]


class _DurationSchema:
    """Makes ``Annotated[float, _DurationSchema()]`` a duration field: validated as a
    :data:`_WrittenDuration` and converted by :func:`_duration`, so the field holds
    seconds as a float (and is typed so); serialized as that float."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            _duration, handler.generate_schema(_WrittenDuration),
            serialization=core_schema.simple_ser_schema("float"))


def _rule_name(value: str) -> str:
    if not RULE_NAME_RE.match(value):
        raise rule_error(f"is not a rule name: must match {RULE_NAME_RE.pattern}")
    return value


Duration = Annotated[float, _DurationSchema()]
RuleName = Annotated[str, Strict(), AfterValidator(_rule_name)]


class AlertRule(Frozen):
    """``[[models.<name>.alerts]]``: one condition on one metric of a model's versions.

    ``scope`` is ``"model"`` (each version that takes traffic, and the shadow for
    ``shadow_divergence``), a label (``"canary"``) or a version (``"1.2.0"``).
    """

    name: RuleName
    metric: Metric
    scope: Annotated[str, Strict()] = MODEL_SCOPE
    op: Annotated[str, Strict()]
    threshold: Annotated[float, Strict()]
    for_s: Duration = Field(0.0, alias="for")
    window: Duration = 300.0
    min_samples: Annotated[int, Strict()] = 100
    severity: Severity = Severity.WARNING
    action: Action = Action.NOTIFY
    feature: Annotated[str, Strict()] | None = None
    # Features a largest-PSI rule skips: calendar features (day of year, holidays) differ
    # from a multi-year training mix in every short window, by design.
    exclude: tuple[Annotated[str, Strict()], ...] = ()
    quantile: Annotated[float, Strict()] = 0.99
    status_class: StatusClass = StatusClass.SERVER
    # metric "judge" only: the false-rollback rate, the smallest worsening worth refusing,
    # and the pairing period of prediction time (docs/judge.md).
    alpha: Annotated[float, Strict()] = DEFAULT_ALPHA
    min_effect: Annotated[float, Strict()] = DEFAULT_MIN_EFFECT
    period_s: Duration = Field(DEFAULT_PERIOD_S, alias="period")
    summary: Annotated[str, Strict(), Field(max_length=200)] = ""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)

    @model_validator(mode="before")
    @classmethod
    def _judge_condition(cls, data: Any) -> Any:
        """A judge rule's condition is the test's: ``op``/``threshold`` are implied."""
        if not (isinstance(data, Mapping) and data.get("metric") == Metric.JUDGE.value):
            return data
        for key in ("op", "threshold"):
            if key in data:
                raise rule_error(f"does not apply to metric {Metric.JUDGE.value!r}: it fires "
                                 "when its sequential test finds the canary worse than stable "
                                 "(effect > 0) at its `alpha`", key, data[key])
        return {**data, "op": JUDGE_OP, "threshold": JUDGE_THRESHOLD}

    @model_validator(mode="after")
    def _check(self) -> AlertRule:
        if self.op not in OPERATORS:
            raise rule_error(f"must be one of {', '.join(OPERATORS)}", "op", self.op)
        if self.threshold != self.threshold or abs(self.threshold) == float("inf"):
            raise rule_error("must be a finite number", "threshold", self.threshold)
        if self.scope != MODEL_SCOPE and not (SEMVER_RE.match(self.scope)
                                              or LABEL_RE.match(self.scope)):
            raise rule_error(f"must be {MODEL_SCOPE!r}, a label or a version", "scope",
                             self.scope)
        if self.min_samples < 1:
            raise rule_error("must be at least 1: a rule never judges on no data",
                             "min_samples", self.min_samples)
        if self.feature is not None and self.metric != Metric.FEATURE_PSI:
            raise rule_error(f"only applies to metric {Metric.FEATURE_PSI.value!r}",
                             "feature", self.feature)
        if self.exclude and (self.metric != Metric.FEATURE_PSI or self.feature is not None):
            raise rule_error(f"only applies to metric {Metric.FEATURE_PSI.value!r} without "
                             "`feature`", "exclude", list(self.exclude))
        if not 0.5 <= self.quantile < 1.0:
            raise rule_error("must be from 0.5 to below 1", "quantile", self.quantile)
        if self.window <= 0 and self.metric in WINDOWED:
            raise rule_error("must be longer than 0 seconds", "window", self.window)
        if self.metric == Metric.JUDGE:
            self._check_judge()
        else:
            for key, name in (("alpha", "alpha"), ("min_effect", "min_effect"),
                              ("period_s", "period")):
                if key in self.model_fields_set:
                    raise rule_error(f"only applies to metric {Metric.JUDGE.value!r}", name,
                                     getattr(self, key))
        if self.action == Action.ROLLBACK and self.scope == STABLE_LABEL:
            raise rule_error("the stable version is what a rollback goes back to; it cannot "
                             "be rolled back", "action", self.action.value)
        return self


    def _check_judge(self) -> None:
        """The judge's numbers, as :class:`~server.monitoring.judge.JudgeSpec` wants them."""
        if "window" in self.model_fields_set:
            raise rule_error(f"does not apply to metric {Metric.JUDGE.value!r}: it sums every "
                             "retained outcome of the canary and the stable version (a sliding "
                             "window would start its test again at every look)", "window",
                             self.window)
        if not 0.0 < self.alpha < 0.5:
            raise rule_error("must be a number in (0, 0.5): the false-rollback rate (0.01 is "
                             "1 %)", "alpha", self.alpha)
        if not 0.0 < self.min_effect <= 1.0:
            raise rule_error("must be a fraction in (0, 1]: the smallest relative worsening "
                             "worth refusing (0.10 is 10 %)", "min_effect", self.min_effect)
        if not self.period_s > 0:
            raise rule_error("must be longer than 0 seconds", "period", self.period_s)
        if self.min_samples < 2:
            raise rule_error("must be at least 2 for metric 'judge': outcomes of each side "
                             "before any verdict", "min_samples", self.min_samples)

    @property
    def judge_spec(self) -> JudgeSpec:
        """How a judge rule decides (``min_samples``: outcomes of each side)."""
        return JudgeSpec(alpha=self.alpha, min_effect=self.min_effect, period_s=self.period_s,
                         min_samples=self.min_samples)

    @property
    def condition(self) -> str:
        """The rule's condition in words, for logs, events and notifications."""
        if self.metric == Metric.JUDGE:
            return f"worse than stable (alpha {self.alpha:g})"
        return f"{self.op} {self.threshold:g}"


Rules = Mapping[str, tuple[AlertRule, ...]]  # model -> its alert rules, in file order

_RULES: TypeAdapter[tuple[AlertRule, ...]] = TypeAdapter(tuple[AlertRule, ...])
_RULE_KEYS = tuple(f.alias or name for name, f in AlertRule.model_fields.items())


def check_rules(tables: Mapping[str, Any], models: Mapping[str, ModelConfig],
                ) -> tuple[dict[str, tuple[AlertRule, ...]], list[str]]:
    """Each model's ``alerts`` array (model -> raw value) as rules, and every problem.

    ``models`` are the models whose routes are valid: a rule of another model is checked
    by itself, not against labels and versions that may be wrong.
    """
    rules: dict[str, tuple[AlertRule, ...]] = {}
    problems: list[str] = []
    for name, raw in tables.items():
        prefix = ("models", name, ALERTS_KEY)
        try:
            parsed = _RULES.validate_python(raw)
        except ValidationError as err:
            problems.extend(describe(e, prefix, _RULE_KEYS) for e in err.errors(include_url=False))
            continue
        model = models.get(name)
        if model is not None:
            problems.extend(_against_routes(name, parsed, model))
        rules[name] = parsed
    return rules, problems


def _against_routes(name: str, rules: tuple[AlertRule, ...], model: ModelConfig) -> list[str]:
    """What a rule names must exist in the model's routes, and a rollback must have
    somewhere to go."""
    problems: list[str] = []
    names: dict[str, int] = {}
    labels = model.labels()
    for i, rule in enumerate(rules):
        path = f"models.{name}.{ALERTS_KEY}[{i}]"
        first = names.setdefault(rule.name, i)
        if first != i:
            problems.append(f"{path}.name = {show(rule.name)}: duplicates "
                            f"{ALERTS_KEY}[{first}].name")
        scope = rule.scope
        if scope == MODEL_SCOPE:
            continue
        version = labels.get(scope, scope)
        if SEMVER_RE.match(scope) is None and scope not in labels:
            problems.append(f"{path}.scope = {show(scope)}: is not a label of this model "
                            f"(labels: {', '.join(sorted(labels))})")
        elif version not in model.versions():
            problems.append(f"{path}.scope = {show(scope)}: is not a version this model "
                            "routes or shadows")
        elif rule.metric == Metric.JUDGE and version == model.stable:
            problems.append(f"{path}.scope = {show(scope)}: names the stable version "
                            f"{model.stable}; the judge compares a canary with it")
        elif rule.action == Action.ROLLBACK and version == model.stable:
            problems.append(f"{path}.action = {show(rule.action.value)}: names the stable "
                            f"version {model.stable}; a rollback goes back to it and cannot "
                            "take it out")
    return problems
