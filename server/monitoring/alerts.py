"""The in-process alert engine: rules from the routing config, evaluated periodically.

Each (rule, model, version) is one alert instance with a state::

    inactive --breached--> pending --breached for `for`--> firing --not breached--> inactive
        ^                    |                                           (a "resolved" change)
        +----not breached----+

A reading with no value or fewer samples than the rule's ``min_samples`` holds the
state as it is: too little data never fires an alert and never resolves one.
:func:`advance` is the pure state machine; :class:`AlertEngine` reads the signals,
applies it, and acts on the changes: every change goes to the journal (the durable
event log) and the notifier; a rule with ``action = "rollback"`` that fires on a
version with traffic rolls the model back to its stable version.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

from router.config import MODEL_SCOPE, Action, AlertRule, Metric
from router.table import ModelRoutes, OverrideRefused
from server.monitoring.notify import Notifier
from server.monitoring.signals import Reading, Signals
from server.serving import reloads as routing
from server.serving.journal import Journal
from server.serving.state import ServingState, Snapshot, utc_now

log = logging.getLogger("waybill.alerts")

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


def _ended(instance: Instance, now: float) -> list[Change]:
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


class AlertEngine:
    def __init__(self, state: ServingState, signals: Signals, journal: Journal,
                 notifier: Notifier, interval_s: float,
                 before: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._signals = signals
        self._journal = journal
        self._notifier = notifier
        self._interval = interval_s
        self._before = before  # e.g. close idle drift windows
        self._clock = clock
        self._instances: dict[tuple[str, str, str], Instance] = {}
        # (model, rule, version) -> wall time, for alerts the event log says were firing
        # when the process last stopped: they start firing, so that clearing is reported
        # as resolved, and a condition still true does not page a second time.
        self._firing_before: dict[tuple[str, str, str], str] = {}
        self.evaluations = 0
        self.transitions: dict[tuple[str, str, str], int] = {}  # (rule, severity, state)

    def seed(self, firing: dict[tuple[str, str, str], str]) -> None:
        """Alerts firing when the process last stopped (from the event log)."""
        self._firing_before = dict(firing)

    def instances(self) -> list[Instance]:
        return sorted(self._instances.values(), key=lambda i: (i.model, i.rule.name, i.version))

    async def run(self) -> None:
        while True:
            try:
                await self.evaluate()
            except Exception:  # one bad evaluation must not end alerting for good
                log.exception("alert evaluation failed")
            await asyncio.sleep(self._interval)

    async def evaluate(self) -> list[Change]:
        snapshot = self._state.current
        rules = list(self._rules(snapshot))
        horizon = max((r.window for _, r in rules), default=0.0)
        # Reading signals touches locks and SQLite: off the event loop.
        readings = await asyncio.to_thread(self._read, snapshot, rules, horizon)
        now = self._clock()
        changes: list[Change] = []
        rollbacks: list[Instance] = []
        live: set[tuple[str, str, str]] = set()
        for key, rule, reading in readings:
            live.add(key)
            current = self._instances.get(key)
            if current is not None and current.rule != rule:  # edited: start again
                changes.extend(_ended(current, now))
                current = None
            if current is None:
                started = self._firing_before.pop(key, None)
                current = (Instance(rule, key[0], key[2], State.FIRING, now, started)
                           if started is not None else Instance(rule, key[0], key[2]))
            nxt, change = advance(current, reading, now)
            self._instances[key] = nxt
            if change is not None:
                changes.append(change)
            elif (nxt.state == State.FIRING and rule.action == Action.ROLLBACK
                  and breached(rule, reading)):
                # Level-triggered: a canary that gets traffic back (an operator cleared
                # the override, or the rollback was refused) while the rule still fires
                # is taken out again. _rollback does nothing when it has no traffic.
                rollbacks.append(nxt)
        for key in set(self._instances) - live:  # rule or version no longer configured
            changes.extend(_ended(self._instances.pop(key), now))
        self.evaluations += 1
        for change in changes:
            await self._act(change)
        for instance in rollbacks:
            await self._rollback(instance)
        return changes

    @staticmethod
    def _rules(snapshot: Snapshot) -> Iterator[tuple[str, AlertRule]]:
        for model, rules in snapshot.alerts.items():
            for rule in rules:
                yield model, rule

    def _read(self, snapshot: Snapshot, rules: list[tuple[str, AlertRule]],
              horizon: float) -> list[tuple[tuple[str, str, str], AlertRule, Reading]]:
        self._before()
        self._signals.sample(horizon)
        out = []
        for model, rule in rules:
            routes = snapshot.table.models.get(model)
            if routes is None:
                continue
            for version in scoped_versions(rule, routes):
                reading = self._signals.read(rule, model, version, routes.default)
                out.append(((model, rule.name, version), rule, reading))
        return out

    async def _act(self, change: Change) -> None:
        instance, rule = change.instance, change.instance.rule
        key = (rule.name, rule.severity.value, change.state.value)
        self.transitions[key] = self.transitions.get(key, 0) + 1
        log_at = logging.WARNING if change.state == State.FIRING else logging.INFO
        log.log(log_at, "alert %s", change.state.value, extra={"fields": {
            "rule": rule.name, "model": instance.model, "version": instance.version,
            "severity": rule.severity.value, "metric": rule.metric.value,
            "value": instance.value, "threshold": rule.threshold, "op": rule.op,
            "samples": instance.samples, "from": change.previous.value}})
        await self._journal.alert(change)
        self._notifier.notify(change)
        if change.state == State.FIRING and rule.action == Action.ROLLBACK:
            await self._rollback(instance)

    async def _rollback(self, instance: Instance) -> None:
        rule = instance.rule
        routes = self._state.current.table.models.get(instance.model)
        if routes is None or instance.version == routes.default:
            return  # the stable version is where a rollback goes; nothing to take away
        if routes.effective_weight(instance.version) == 0:
            return  # no traffic to take away (already rolled back, or never routed)
        reason = (f"{rule.name}: {rule.metric.value} = {instance.value:.4g} {rule.op} "
                  f"{rule.threshold:g} over {instance.samples} samples")
        try:
            changed, after = routing.rollback(self._state, instance.model, reason,
                                              actor=f"alert:{rule.name}")
        except OverrideRefused as err:
            log.error("rollback refused", extra={"fields": {
                "rule": rule.name, "model": instance.model, "error": str(err)}})
            return
        if changed:
            await self._journal.rolled_back(instance.model, after, rule=rule.name,
                                            version=instance.version, value=instance.value)
