"""The in-process alert engine: the routing file's alert rules, evaluated periodically.

Every ``interval_s`` the engine takes the snapshot in force, reads each rule's signal for
each version it watches (:mod:`server.monitoring.signals`), advances the pure state
machine (:mod:`server.monitoring.alerts`) and acts on the changes: every change goes to
the journal (the durable event log) and the notifier, which is also handed the firing
set after every evaluation (to re-send it to Alertmanager); a rule with ``action = "rollback"``
that fires on a version with traffic rolls the model back to its stable version by
publishing an override, the way an operator's Rollback does.

A ``judge`` rule's decision (WORSE, NOT_WORSE) is latched per instance
(:func:`server.monitoring.alerts.decide`); each change of it is recorded as a ``judge``
event (a NOT_WORSE is a promotion recommendation, and nothing else happens), and a WORSE
fires the alert, which rolls back when the rule's action says so.

Where processes share one store (replicas on PostgreSQL), rules on evidence they all read
alike (accuracy, from the shared outcomes; ``shared``) are acted on by one of them, the
one the store lets lead (:meth:`~server.storage.base.Store.lead`): one alert event, one
page, one rollback, which every process then follows. The others evaluate those rules
too, silently, so that a process that takes the lead over carries on where the last left
off. Rules on a process's own evidence (drift, errors, latency, shadow) are each
process's, and a rollback one of them makes holds for all (the journal claims it). The
canary judge reads the shared outcomes too: with a shared store, only the leading process
records its decisions and acts on them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from router.table import OverrideRefused
from server.monitoring.alerts import (
    Change,
    Instance,
    State,
    advance,
    ended,
    evidence,
    holds,
    same_experiment,
    scoped_versions,
    verdict_text,
)
from server.monitoring.judge import Outcome
from server.monitoring.notify import Notifier
from server.monitoring.rules import Action, AlertRule, Metric
from server.monitoring.signals import Reading, Signals
from server.serving.journal import Journal
from server.serving.overrides import rollback
from server.serving.state import ServingState, Snapshot
from server.telemetry.observe import Observer

log = logging.getLogger("waybill.alerts")
_VERDICT_VALUE = {Outcome.WORSE: 1, Outcome.UNDECIDED: 0, Outcome.NOT_WORSE: -1}


class AlertEngine:
    def __init__(self, state: ServingState, signals: Signals, journal: Journal,
                 notifier: Notifier, interval_s: float,
                 before: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic,
                 lead: Callable[[], bool] = lambda: True,
                 shared: Callable[[AlertRule], bool] = lambda rule: False) -> None:
        self._state = state
        self._signals = signals
        self._journal = journal
        self._notifier = notifier
        self._interval = interval_s
        self._before = before  # e.g. close idle drift windows
        self._clock = clock
        self._lead = lead  # blocking: asked off the event loop
        self._shared = shared
        self.leading = True  # as of the last evaluation that had a shared rule
        self._instances: dict[tuple[str, str, str], Instance] = {}
        # (model, rule, version) -> wall time, for alerts the event log says were firing
        # when the process last stopped: they start firing, so that clearing is reported
        # as resolved, and a condition still true is no new change (no second webhook
        # post); the notifier posts them to Alertmanager again at the first evaluation.
        self._firing_before: dict[tuple[str, str, str], str] = {}
        # (model, rule, version) -> (decision, stable version): the judge decisions the
        # event log holds, so a restart neither forgets nor announces them again.
        self._decided_before: dict[tuple[str, str, str], tuple[Outcome, str]] = {}
        self.evaluations = 0
        self.transitions: dict[tuple[str, str, str], int] = {}  # (rule, severity, state)

    def seed(self, firing: dict[tuple[str, str, str], str],
             decided: dict[tuple[str, str, str], tuple[str, str]] | None = None) -> None:
        """Alerts firing when the process last stopped, and the judge decisions then in
        force, (decision, stable version) (both from the event log)."""
        self._firing_before = dict(firing)
        self._decided_before = {key: (Outcome(outcome), stable)
                                for key, (outcome, stable) in (decided or {}).items()
                                if outcome in (Outcome.WORSE, Outcome.NOT_WORSE)}

    def register_metrics(self, observer: Observer) -> None:
        observer.observe_gauge(
            "waybill.alerts.firing", "{alert}", "1 while an in-process alert rule fires",
            lambda: [(1 if i.state == State.FIRING else 0,
                      {"rule": i.rule.name, "model": i.model, "version": i.version,
                       "severity": i.rule.severity.value}) for i in self.instances()])
        observer.observe_counter(
            "waybill.alerts.transitions", "{transition}", "Alert state changes",
            lambda: [(n, {"rule": r, "severity": sev, "state": st})
                     for (r, sev, st), n in list(self.transitions.items())])
        self._register_judge_metrics(observer)

    def _judged(self) -> list[tuple[Instance, dict[str, str]]]:
        return [(i, {"rule": i.rule.name, "model": i.model, "version": i.version})
                for i in self.instances() if i.judged is not None]

    def _register_judge_metrics(self, observer: Observer) -> None:
        """The judge rules' verdicts, one series per (rule, model, canary version)."""
        def gauge(name: str, unit: str, what: str,
                  read: Callable[[Instance], float | None]) -> None:
            observer.observe_gauge(name, unit, what, lambda: [
                (value, labels) for i, labels in self._judged()
                if (value := read(i)) is not None])

        def effect(i: Instance) -> float | None:
            return i.judged.verdict.effect if i.judged is not None else None

        def bound(i: Instance, high: bool) -> float | None:
            if i.judged is None or i.judged.verdict.effect is None:
                return None
            value = i.judged.verdict.high if high else i.judged.verdict.low
            return value if math.isfinite(value) else None

        gauge("waybill.judge.verdict", "{verdict}",
              "Canary judge decision: 1 worse (rollback), -1 not worse by min_effect "
              "(promotion recommended), 0 undecided", lambda i: _VERDICT_VALUE[i.decided])
        gauge("waybill.judge.effect", "{ratio}",
              "Canary judge: canary mean loss / stable's - 1 over paired periods", effect)
        gauge("waybill.judge.low", "{ratio}",
              "Canary judge: lower end of the effect's confidence sequence",
              lambda i: bound(i, high=False))
        gauge("waybill.judge.high", "{ratio}",
              "Canary judge: upper end of the effect's confidence sequence (absent while "
              "unbounded)", lambda i: bound(i, high=True))
        gauge("waybill.judge.evidence", "{e_value}",
              "Canary judge: the e-value behind the decision (it decides at 1/alpha)",
              evidence)
        observer.observe_gauge(
            "waybill.judge.samples", "{outcome}",
            "Canary judge: outcomes used, in periods where both sides have two or more",
            lambda: [(n, {**labels, "side": side}) for i, labels in self._judged()
                     if i.judged is not None
                     for side, n in (("canary", i.judged.verdict.samples_canary),
                                     ("stable", i.judged.verdict.samples_stable))])

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
        leading = self.leading
        now = self._clock()
        changes: list[Change] = []
        decisions: list[tuple[Instance, Outcome]] = []
        rollbacks: list[Instance] = []
        live: set[tuple[str, str, str]] = set()
        for key, rule, reading in readings:
            live.add(key)
            current = self._instances.get(key)
            if current is not None and (current.rule != rule  # edited: start again
                                        or not same_experiment(current, reading)):
                changes.extend(ended(current, now))
                current = None
            if current is None:
                current = self._new_instance(key, rule, reading, now)
            nxt, change = advance(current, reading, now)
            self._instances[key] = nxt
            if not self._acts(rule, leading):
                continue  # another process acts on this rule; this one only keeps up
            if nxt.decided != current.decided:
                decisions.append((nxt, current.decided))
            if change is not None:
                changes.append(change)
            elif (nxt.state == State.FIRING and rule.action == Action.ROLLBACK
                  and holds(nxt, reading)):
                # Level-triggered: a canary that gets traffic back (an operator cleared
                # the override, or the rollback was refused) while the rule still fires
                # is taken out again. _rollback does nothing when it has no traffic.
                rollbacks.append(nxt)
        for key in set(self._instances) - live:  # rule or version no longer configured
            gone = self._instances.pop(key)
            if self._acts(gone.rule, leading):
                changes.extend(ended(gone, now))
        self.evaluations += 1
        for instance, before in decisions:  # the verdict first, then the alert it fires
            await self._decided(instance, before)
        for change in changes:
            await self._act(change)
        # Every evaluation tells the notifier what fires now: it re-sends firing alerts to
        # Alertmanager so they stay active there (and posts those restored as firing after
        # a restart, which change nothing here and so are never a change to notify).
        self._notifier.firing(i for i in self._instances.values()
                              if self._acts(i.rule, leading))
        for instance in rollbacks:
            await self._rollback(instance)
        return changes

    def _new_instance(self, key: tuple[str, str, str], rule: AlertRule, reading: Reading,
                      now: float) -> Instance:
        """A new instance, firing if the event log says it was, and for a judge rule with
        the decision recorded for the same experiment (same stable version)."""
        started = self._firing_before.pop(key, None)
        seeded = self._decided_before.pop(key, None)
        instance = (Instance(rule, key[0], key[2], State.FIRING, now, started)
                    if started is not None else Instance(rule, key[0], key[2]))
        if rule.metric == Metric.JUDGE and seeded is not None and reading.judged is not None \
                and seeded[1] == reading.judged.stable:
            instance = replace(instance, decided=seeded[0], judged=reading.judged)
        return instance

    async def _decided(self, instance: Instance, before: Outcome) -> None:
        """A judge decision changed: logged and recorded; WORSE fires the alert (and its
        rollback) through the state machine, NOT_WORSE only recommends."""
        text = verdict_text(instance)
        log.log(logging.WARNING if instance.decided == Outcome.WORSE else logging.INFO,
                "canary judged %s", instance.decided.value, extra={"fields": {
                    "rule": instance.rule.name, "model": instance.model,
                    "version": instance.version, "from": before.value, "verdict": text}})
        await self._journal.judged(instance, before, text)

    def _acts(self, rule: AlertRule, leading: bool) -> bool:
        return leading or not self._shared(rule)

    @staticmethod
    def _rules(snapshot: Snapshot) -> Iterator[tuple[str, AlertRule]]:
        for model, rules in snapshot.alerts.items():
            for rule in rules:
                yield model, rule

    def _read(self, snapshot: Snapshot, rules: list[tuple[str, AlertRule]],
              horizon: float) -> list[tuple[tuple[str, str, str], AlertRule, Reading]]:
        self._before()
        if any(self._shared(rule) for _, rule in rules):
            self.leading = self._lead()
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
        await self._journal.alert(change, own_evidence=not self._shared(rule))
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
        if rule.metric == Metric.JUDGE:
            reason = f"{rule.name}: judge: {instance.version} {verdict_text(instance)}"
        else:
            reason = (f"{rule.name}: {rule.metric.value} = {instance.value:.4g} {rule.op} "
                      f"{rule.threshold:g} over {instance.samples} samples")
        try:
            changed, after = rollback(self._state, instance.model, reason,
                                              actor=f"alert:{rule.name}")
        except OverrideRefused as err:
            log.error("rollback refused", extra={"fields": {
                "rule": rule.name, "model": instance.model, "error": str(err)}})
            return
        if changed:
            await self._journal.rolled_back(instance.model, after, rule=rule.name,
                                            version=instance.version, value=instance.value)
