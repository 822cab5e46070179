"""Alert rules as a state machine: pure, no clock, no I/O.

Each (rule, model, version) is one alert instance with a state::

    inactive --breached--> pending --breached for `for`--> firing --not breached--> inactive
        ^                    |                                           (a "resolved" change)
        +----not breached----+

A reading with no value or fewer samples than the rule's ``min_samples`` holds the
state as it is: too little data never fires an alert and never resolves one.

A ``judge`` rule's condition is its verdict, latched (:func:`decide`): its error rates are
those of the *first* time the evidence crosses ``1/alpha``, so the first WORSE is final
for the experiment (this canary against this stable version) and a NOT_WORSE stands until
a WORSE. WORSE breaches, NOT_WORSE does not, UNDECIDED holds: a judge alert fires on the
first WORSE and stays firing until the experiment ends (the rule changes, or the version
is no longer a canary of that stable version; :func:`same_experiment`).
:func:`advance` is the state machine; :func:`scoped_versions` says which versions one
rule watches. The engine that reads signals and acts on changes is
:mod:`server.serving.alerting`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from models.calendar import utc_now
from router.table import ModelRoutes
from server.monitoring.judge import Outcome
from server.monitoring.rules import MODEL_SCOPE, AlertRule, Metric
from server.monitoring.signals import Judged, Reading

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class State(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"  # only as a change: firing -> inactive


@dataclass(frozen=True, slots=True)
class Instance:
    """One rule on one version; ``since`` is the monotonic time the state began."""

    rule: AlertRule
    model: str
    version: str
    state: State = State.INACTIVE
    since: float = 0.0
    started_at: str = ""  # wall time the current pending/firing episode began
    value: float | None = None
    samples: int = 0
    judged: Judged | None = None  # judge rules: the newest verdict read
    decided: Outcome = Outcome.UNDECIDED  # judge rules: the decision, latched (decide)


@dataclass(frozen=True, slots=True)
class Change:
    instance: Instance  # after the change
    previous: State
    state: State  # the state reported: pending, firing, resolved or inactive


def breached(rule: AlertRule, reading: Reading) -> bool | None:
    """True/False, or None to hold (no value, or too few samples to judge). A judge
    reading breaches when its own verdict is WORSE (:func:`holds` adds the latch)."""
    if rule.metric == Metric.JUDGE:
        return _judged(_outcome(reading))
    if reading.value is None or reading.samples < rule.min_samples:
        return None
    return COMPARE[rule.op](reading.value, rule.threshold)


def _outcome(reading: Reading) -> Outcome:
    return reading.judged.verdict.outcome if reading.judged is not None else Outcome.UNDECIDED


def _judged(outcome: Outcome) -> bool | None:
    return {Outcome.WORSE: True, Outcome.NOT_WORSE: False}.get(outcome)


def decide(before: Outcome, reading: Reading) -> Outcome:
    """The judge's decision after ``reading``: WORSE is final, NOT_WORSE stands until a
    WORSE, UNDECIDED changes nothing."""
    now = _outcome(reading)
    if before == Outcome.WORSE or now == Outcome.UNDECIDED:
        return before
    return now


def holds(instance: Instance, reading: Reading) -> bool | None:
    """Whether the condition of ``instance`` (after :func:`advance` on ``reading``) holds:
    :func:`breached`, or for a judge rule its latched decision."""
    if instance.rule.metric == Metric.JUDGE:
        return _judged(instance.decided)
    return breached(instance.rule, reading)


def same_experiment(instance: Instance, reading: Reading) -> bool:
    """False when a judge reading compares the canary with another stable version than
    the instance's verdict did: a new experiment, whose decision starts undecided."""
    return (instance.judged is None or reading.judged is None
            or instance.judged.stable == reading.judged.stable)


def advance(instance: Instance, reading: Reading, now: float) -> tuple[Instance, Change | None]:
    """The next state of one alert instance after one reading (pure)."""
    rule = instance.rule
    measured = replace(instance, value=reading.value, samples=reading.samples)
    if rule.metric == Metric.JUDGE:
        measured = replace(measured, judged=reading.judged or instance.judged,
                           decided=decide(instance.decided, reading))
    verdict = holds(measured, reading)
    if verdict is None:
        return measured, None
    state = instance.state
    if verdict:
        if state == State.INACTIVE:
            target = State.FIRING if rule.for_s <= 0 else State.PENDING
            moved = replace(measured, state=target, since=now, started_at=utc_now())
            return moved, Change(moved, state, target)
        if state == State.PENDING and now - instance.since >= rule.for_s:
            moved = replace(measured, state=State.FIRING, since=now)
            return moved, Change(moved, state, State.FIRING)
        return measured, None
    if state == State.INACTIVE:
        return measured, None
    moved = replace(measured, state=State.INACTIVE, since=now)
    return moved, Change(moved, state,
                         State.RESOLVED if state == State.FIRING else State.INACTIVE)


def ended(instance: Instance, now: float) -> list[Change]:
    """A firing alert whose rule was edited or removed is resolved, so nobody is left
    paged by a rule that no longer exists."""
    if instance.state != State.FIRING:
        return []
    return [Change(replace(instance, state=State.INACTIVE, since=now), State.FIRING,
                   State.RESOLVED)]


def evidence(instance: Instance) -> float:
    """The e-value behind a judge instance's decision (the larger one while undecided)."""
    if instance.judged is None:
        return 1.0
    v = instance.judged.verdict
    if instance.decided == Outcome.WORSE:
        return v.e_worse
    if instance.decided == Outcome.NOT_WORSE:
        return v.e_not_worse
    return max(v.e_worse, v.e_not_worse)


def p_value(instance: Instance) -> float:
    """The always-valid p-value of the decision's test: ``min(1, 1/evidence)``."""
    e = evidence(instance)
    return min(1.0, 1.0 / e) if e > 0 else 1.0


def verdict_text(instance: Instance) -> str:
    """A judge instance's verdict in words: decision, effect, interval and evidence."""
    rule, judged = instance.rule, instance.judged
    if judged is None:
        return f"{instance.decided.value}: no verdict read yet"
    v = judged.verdict
    words = {Outcome.WORSE: f"worse than {judged.stable}",
             Outcome.NOT_WORSE: f"not worse than {judged.stable} by {rule.min_effect:.0%}",
             Outcome.UNDECIDED: f"undecided against {judged.stable}"}[instance.decided]
    if v.effect is None:
        return f"{words}: no paired outcomes yet"
    high = "inf" if v.high == float("inf") else f"{v.high:+.1%}"
    return (f"{words}: effect {v.effect:+.1%} [{v.low:+.1%}, {high}], evidence "
            f"{evidence(instance):.3g} (decides at {1 / rule.alpha:g}), "
            f"{v.samples_canary} canary and {v.samples_stable} stable outcomes")


def scoped_versions(rule: AlertRule, routes: ModelRoutes) -> list[str]:
    """The versions one rule watches in the table in force.

    ``model`` scope: every version with configured traffic (a rolled-back canary stays
    watched, so its alert is held rather than forgotten), and the shadow version for
    ``shadow_divergence``. A label or version scope names one version.
    """
    if rule.scope != MODEL_SCOPE:
        version = routes.labels.get(rule.scope, rule.scope)
        return [version] if version in routes.versions else []
    if rule.metric == Metric.SHADOW_DIVERGENCE:
        return [routes.shadow.version] if routes.shadow is not None else []
    configured = [r.version for r in routes.routes if r.weight > 0] or [routes.default]
    if rule.metric in (Metric.MAE_RATIO, Metric.JUDGE):
        configured = [v for v in configured if v != routes.default]
    return configured


