"""Alert rules as a state machine: pure, no clock, no I/O.

Each (rule, model, version) is one alert instance with a state::

    inactive --breached--> pending --breached for `for`--> firing --not breached--> inactive
        ^                    |                                           (a "resolved" change)
        +----not breached----+

A reading with no value or fewer samples than the rule's ``min_samples`` holds the
state as it is: too little data never fires an alert and never resolves one.
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
from server.monitoring.rules import MODEL_SCOPE, AlertRule, Metric
from server.monitoring.signals import Reading

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


@dataclass(frozen=True, slots=True)
class Change:
    instance: Instance  # after the change
    previous: State
    state: State  # the state reported: pending, firing, resolved or inactive


def breached(rule: AlertRule, reading: Reading) -> bool | None:
    """True/False, or None to hold (no value, or too few samples to judge)."""
    if reading.value is None or reading.samples < rule.min_samples:
        return None
    return COMPARE[rule.op](reading.value, rule.threshold)


def advance(instance: Instance, reading: Reading, now: float) -> tuple[Instance, Change | None]:
    """The next state of one alert instance after one reading (pure)."""
    rule = instance.rule
    verdict = breached(rule, reading)
    measured = replace(instance, value=reading.value, samples=reading.samples)
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
    if rule.metric == Metric.MAE_RATIO:
        configured = [v for v in configured if v != routes.default]
    return configured


