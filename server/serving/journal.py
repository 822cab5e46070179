"""The record of what changed routing and why, kept in the store's event log.

Rollbacks, cleared overrides, config revisions applied, alert state changes and the
canary judge's decisions each become one event (time, kind, model, version, rule, state,
value, reason, actor).
The overrides in force are saved with them, so a server killed without warning comes
back rolled back: :meth:`Journal.restore` re-applies them to the first table it loads
under the same rule a config reload follows (:func:`router.table.restore_overrides`).

Where several processes share the store (worker processes, or replicas on PostgreSQL),
each follows what the others save (:meth:`Journal.follow`), and a rollback is *claimed*
(:meth:`~server.storage.base.Store.claim_override`): when two processes roll one model
back at once, the one whose override is saved records the rollback event, and the other
follows that override instead of recording a second one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from typing import Any

from router.table import (
    ModelRoutes,
    Override,
    RoutingTable,
    restore_overrides,
    without_override,
)
from server.monitoring.alerts import Change, Instance, evidence, p_value
from server.monitoring.judge import Outcome
from server.serving.state import ServingState, Snapshot
from server.storage.base import Store, StoreUnavailable
from server.telemetry.observe import Observer

log = logging.getLogger("waybill.journal")

# Every kind of event the journal records; ListEvents refuses a filter on any other, so
# a typo is an error rather than an empty answer.
EVENT_KINDS = ("alert", "config_applied", "judge", "override_cleared", "rollback")


def _cleared(model: str) -> Callable[[Snapshot], Snapshot]:
    """The state update that drops ``model``'s override."""
    return lambda cur: cur.with_table(without_override(cur.table, model))


def _overridden(model: str, override: Override) -> Callable[[Snapshot], Snapshot]:
    """The state update that puts ``override`` in force for ``model`` instead of its own."""
    return lambda cur: cur.with_table(restore_overrides(
        without_override(cur.table, model), {model: override}))


def _override_record(override: Override) -> dict[str, Any]:
    return {"reason": override.reason, "at": override.at, "actor": override.actor,
            "rolled_back": list(override.rolled_back)}


def _override_from(record: dict[str, Any]) -> Override:
    return Override(reason=str(record["reason"]), at=str(record["at"]),
                    actor=str(record["actor"]),
                    rolled_back=tuple(str(v) for v in record["rolled_back"]))


class Journal:
    """Writes events and saved overrides; without a store it only logs."""

    def __init__(self, store: Store | None, *, instance: str = "") -> None:
        self._store = store
        # This process among those sharing the store (host/worker): alert events of rules
        # on its own evidence carry it, so each process restores only its own as firing.
        self._instance = instance
        self._follow_failing = False
        self._unsaved: set[str] = set()  # models whose override this process could not save
        self.rollbacks: dict[tuple[str, str], int] = {}  # (model, actor) -> count
        # The saved overrides as this process last wrote or read them: what changes
        # against this in the store was done by another process sharing it.
        self._seen: dict[str, dict[str, Any]] = {}
        # One writer of saved overrides at a time, in order: a rollback then a quick clear
        # must reach the store in that order, and `follow` must not read between a local
        # change and its save.
        self._lock = asyncio.Lock()

    def register_metrics(self, observer: Observer) -> None:
        observer.observe_counter(
            "waybill.rollbacks", "{rollback}", "Rollbacks by model and actor",
            lambda: [(n, {"model": m, "actor": a})
                     for (m, a), n in list(self.rollbacks.items())])

    # ---- start-up (blocking; before the event loop serves) -------------------------------
    def restore(self, table: RoutingTable) -> RoutingTable:
        """The table with the saved overrides that still apply; stale ones are forgotten."""
        if self._store is None:
            return table
        saved = {model: _override_from(record)
                 for model, record in self._store.overrides().items()}
        restored = restore_overrides(table, saved)
        for model, override in saved.items():
            routes = restored.models.get(model)
            if routes is not None and routes.override == override:
                log.warning("routing override restored", extra={"fields": {
                    "model": model, "actor": override.actor, "reason": override.reason}})
                self._seen[model] = _override_record(override)
            elif self._store.shared:
                # Another replica may still run the config this override was made against
                # (a rolling update): it stays saved for them; this process ignores it.
                self._seen[model] = _override_record(override)
            else:
                self._store.drop_override(model)
        return restored

    async def follow_every(self, state: ServingState, interval_s: float) -> None:
        while True:
            try:
                await self.follow(state)
            except StoreUnavailable:
                if not self._follow_failing:  # said once per outage (the store logs it too)
                    log.warning("cannot follow saved overrides: the store is unavailable")
                self._follow_failing = True
            except Exception:
                log.exception("cannot follow saved overrides")
            else:
                self._follow_failing = False
            await asyncio.sleep(interval_s)

    async def follow(self, state: ServingState) -> None:
        """Apply overrides that another process sharing the store saved or dropped."""
        if self._store is None:
            return
        async with self._lock:
            await self._follow(state, self._store)

    async def _follow(self, state: ServingState, store: Store) -> None:
        for model in sorted(self._unsaved):  # changes made here while the store was away
            await self._save(store, model, state.current.table.models.get(model))
            if model in self._unsaved:
                raise StoreUnavailable("the store is still unavailable")
        stored = await asyncio.to_thread(store.overrides)
        for model in sorted(set(stored) | set(self._seen)):
            now, before = stored.get(model), self._seen.get(model)
            if now == before:
                continue
            if now is None:
                self._seen.pop(model, None)
                state.update(_cleared(model))
                log.warning("routing override cleared by a sibling", extra={"fields": {
                    "model": model}})
            else:
                self._seen[model] = now
                override = _override_from(now)
                state.update(_overridden(model, override))
                log.warning("routing override followed", extra={"fields": {
                    "model": model, "actor": override.actor, "reason": override.reason}})

    def firing(self) -> dict[tuple[str, str, str], str]:
        """(model, rule, version) -> when it began, for alerts whose last recorded state is
        firing (blocking; at start)."""
        if self._store is None:
            return {}
        last: dict[tuple[str, str, str], tuple[str, str]] = {}
        after = 0
        while batch := self._store.events(kinds=("alert",), after_id=after, limit=1000):
            for event in batch:
                # Another process's alert on its own evidence is not this one's.
                if event.detail.get("instance", self._instance) != self._instance:
                    continue
                last[(event.model, event.rule, event.version)] = (event.state, event.at)
            after = batch[-1].id
        return {key: at for key, (state, at) in last.items() if state == "firing"}

    def decided(self) -> dict[tuple[str, str, str], tuple[str, str]]:
        """(model, rule, version) -> (decision, stable version) of the judge's last
        recorded decision for each (blocking; at start)."""
        if self._store is None:
            return {}
        last: dict[tuple[str, str, str], tuple[str, str]] = {}
        after = 0
        while batch := self._store.events(kinds=("judge",), after_id=after, limit=1000):
            for event in batch:
                last[(event.model, event.rule, event.version)] = (
                    event.state, str(event.detail.get("stable", "")))
            after = batch[-1].id
        return last

    def started(self, snapshot: Snapshot) -> None:
        if self._store is not None:
            self._store.record_event(
                "config_applied", "", reason="start", actor="start",
                detail={"source": snapshot.source, "content_hash": snapshot.content_hash,
                        "generation": snapshot.generation})

    # ---- while serving --------------------------------------------------------------------
    async def _record(self, kind: str, model: str, **fields: Any) -> None:
        assert kind in EVENT_KINDS, f"add {kind!r} to EVENT_KINDS"
        if self._store is None:
            return
        try:
            await asyncio.to_thread(self._store.record_event, kind, model, **fields)
        except Exception:  # the change itself happened; losing its record must not undo it
            log.exception("cannot record %s event", kind)

    async def _sync(self, model: str, routes: ModelRoutes | None) -> bool:
        """Save the override in ``routes`` (or its absence); False when another process
        had saved an override of its own first (which :meth:`follow` then applies)."""
        store = self._store
        if store is None:
            return True
        async with self._lock:
            return await self._save(store, model, routes)

    async def _save(self, store: Store, model: str, routes: ModelRoutes | None) -> bool:
        try:
            if routes is not None and routes.override is not None:
                record = _override_record(routes.override)
                claim = await asyncio.to_thread(store.claim_override, model, record,
                                                self._seen.get(model))
                if not claim.won and claim.saved is None:
                    # What this process last saw was cleared meanwhile: a rollback anew.
                    claim = await asyncio.to_thread(store.claim_override, model, record, None)
                if not claim.won:
                    log.warning("routing override: another process rolled back first",
                                extra={"fields": {"model": model}})
                    self._unsaved.discard(model)
                    return False
                self._seen[model] = record
            else:
                await asyncio.to_thread(store.drop_override, model)
                self._seen.pop(model, None)
            self._unsaved.discard(model)
        except StoreUnavailable:
            # In force here already; saved (and so followed by the others) once the
            # store answers again: the next follow tries first.
            self._unsaved.add(model)
            log.warning("routing override not saved: the store is unavailable; it will be "
                        "once the store is back", extra={"fields": {"model": model}})
        except Exception:
            log.exception("cannot save the override of %s", model)
        return True

    async def rolled_back(self, model: str, routes: ModelRoutes, *, rule: str = "",
                          version: str = "", value: float | None = None) -> bool:
        """Save and record a rollback; False when another process's rollback of the same
        model was saved first (it is the one recorded, and followed here)."""
        override = routes.override
        assert override is not None
        if not await self._sync(model, routes):
            return False
        key = (model, override.actor)
        self.rollbacks[key] = self.rollbacks.get(key, 0) + 1
        await self._record("rollback", model, version=version or ",".join(override.rolled_back),
                           rule=rule, value=value, reason=override.reason,
                           actor=override.actor,
                           detail={"stable": routes.default,
                                   "rolled_back": list(override.rolled_back)})
        return True

    async def cleared(self, model: str, routes: ModelRoutes, actor: str) -> None:
        await self._sync(model, routes)
        await self._record("override_cleared", model, actor=actor,
                           detail={"stable": routes.default})

    async def config_applied(self, before: Snapshot, after: Snapshot, trigger: str) -> None:
        # An override the new config ends stays saved: each process (worker) drops it by
        # the same rule when it applies the config, and a restart re-checks it against
        # the config it starts with (restore). Deleting it here would make sibling
        # workers still on the old config follow the deletion and serve the bad canary.
        dropped = [name for name, routes in before.table.models.items()
                   if routes.override is not None
                   and (after.table.models.get(name) is None
                        or after.table.models[name].override is None)]
        await self._record("config_applied", "", reason=trigger, actor=trigger,
                           detail={"source": after.source, "content_hash": after.content_hash,
                                   "generation": after.generation,
                                   "overrides_dropped": dropped, "pid": os.getpid()})

    async def judged(self, instance: Instance, before: Outcome, text: str) -> None:
        """A judge rule's decision changed (``state``: worse or not_worse; ``value``: the
        effect; ``detail``: the verdict's figures and the rule's spec)."""
        rule, judged = instance.rule, instance.judged
        assert judged is not None
        v = judged.verdict
        await self._record(
            "judge", instance.model, version=instance.version, rule=rule.name,
            state=instance.decided.value, value=v.effect, reason=text, actor="judge",
            detail={"stable": judged.stable, "previous": before.value,
                    "effect": v.effect, "low": _finite(v.low), "high": _finite(v.high),
                    "evidence": _finite(evidence(instance)),
                    "e_worse": _finite(v.e_worse), "e_not_worse": _finite(v.e_not_worse),
                    "p_value": p_value(instance),
                    "samples_canary": v.samples_canary, "samples_stable": v.samples_stable,
                    "periods": judged.periods, "alpha": rule.alpha,
                    "min_effect": rule.min_effect, "period_s": rule.period_s,
                    "min_samples": rule.min_samples, "action": rule.action.value})

    async def alert(self, change: Change, *, own_evidence: bool = True) -> None:
        """Record an alert change; ``own_evidence``: the rule reads this process's own
        evidence (drift, errors, latency), so the event names the process."""
        instance, rule = change.instance, change.instance.rule
        detail: dict[str, Any] = {"severity": rule.severity.value, "samples": instance.samples,
                                  "previous": change.previous.value, "action": rule.action.value}
        if own_evidence and self._instance:
            detail["instance"] = self._instance
        await self._record("alert", instance.model, version=instance.version, rule=rule.name,
                           state=change.state.value, value=instance.value,
                           reason=f"{rule.metric.value} {rule.condition}",
                           actor="alerts", detail=detail)


def _finite(value: float) -> float | None:
    """A figure for the event's JSON: None for an unbounded end or an overwhelming e-value."""
    return value if math.isfinite(value) else None
