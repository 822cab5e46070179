"""The in-process alert engine, piece by piece, with real objects and injected clocks.

- :func:`server.monitoring.alerts.advance` (the pure state machine) and :func:`breached`;
- :func:`server.monitoring.alerts.scoped_versions` on real routing tables;
- :class:`server.monitoring.signals.Signals` over a real :class:`Observer`, a real :class:`Store`
  and drift windows from a stand-in tracker;
- :class:`server.serving.alerting.AlertEngine` on a real :class:`ServingState` (loaded versions from
  the repository's registry), a real :class:`Journal` over SQLite, and restoring the
  saved override on a fresh table;
- Alertmanager's webhook payload and its API's PostableAlerts, and :class:`Notifier` posting
  to a local HTTP server (tests/test_alertmanager.py posts to a real Alertmanager).

Nothing sleeps: the engine and the signals read a fake monotonic clock, the store a fake
wall clock, and the webhook test waits on a :class:`threading.Event`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from models.artifact import OutputSpec
from models.kinds import Actual, Logged, Terms, kind_of
from models.loaded import LoadedVersion
from router.config import RoutingConfig, parse_routing
from router.table import Override, RoutingTable, with_override
from server.monitoring.alerts import (
    Change,
    Instance,
    State,
    advance,
    breached,
    scoped_versions,
)
from server.monitoring.drift import FeatureDrift, WindowReport
from server.monitoring.notify import Notifier, alertmanager_payload, postable_alert
from server.monitoring.rules import AlertRule
from server.monitoring.signals import NO_DATA, Reading, Signals, _quantile
from server.serving.alerting import AlertEngine
from server.serving.journal import Journal
from server.serving.overrides import clear_override, rollback
from server.serving.routing_file import parse_routing_file
from server.serving.state import ServingState, Snapshot
from server.storage.base import LoggedPrediction, Outcome, Store, StoreUnavailable
from server.storage.sqlite import SqliteStore
from server.telemetry.observe import DURATION_BOUNDS_S, Observer

ROOT = Path(__file__).resolve().parent.parent
MODEL = "delivery_eta"
STABLE, CANARY = "1.0.0", "1.1.0"
ZERO_TIME = "0001-01-01T00:00:00Z"


class FakeClock:
    """A clock the test moves by hand (monotonic seconds, or unix time for the store)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rule(**fields: Any) -> AlertRule:
    """An alert rule validated the way the routing file's rules are (``for`` by alias)."""
    data: dict[str, Any] = {"name": "rule", "metric": "error_rate", "op": ">",
                            "threshold": 0.1, "min_samples": 10}
    data.update(fields)
    return AlertRule.model_validate(data)


def config_text(alerts: str = "", *, canary: str = CANARY, canary_weight: int = 20,
                shadow: str | None = None, extra_routes: str = "") -> str:
    lines = ["version = 1", "", f"[models.{MODEL}]", f'stable = "{STABLE}"', "routes = [",
             f'  {{ version = "{STABLE}", weight = {100 - canary_weight}, label = "stable" }},',
             f'  {{ version = "{canary}", weight = {canary_weight}, label = "canary" }},',
             extra_routes, "]"]
    if shadow is not None:
        lines.append(f'shadow = {{ version = "{shadow}", fraction = 0.1 }}')
    return "\n".join(lines) + "\n" + alerts


def alert_toml(name: str, **fields: Any) -> str:
    """One ``[[models.delivery_eta.alerts]]`` table."""
    out = [f"[[models.{MODEL}.alerts]]", f'name = "{name}"']
    for key, value in fields.items():
        key = "for" if key == "for_" else key
        out.append(f"{key} = {json.dumps(value)}")
    return "\n".join(out) + "\n"


def add_calls(observer: Observer, version: str, ok: int = 0, **codes: int) -> None:
    """Finished Predict calls as the observer counts them: (model, version, route, code)."""
    if ok:
        observer.requests.add((MODEL, version, "weighted", "OK"), ok)
    for code, n in codes.items():
        # Spread over two route reasons: the signal sums a version's routes.
        observer.requests.add((MODEL, version, "weighted", code), n - n // 2)
        if n // 2:
            observer.requests.add((MODEL, version, "sticky", code), n // 2)


# ==========================================================================================
# 1. advance: the pure state machine


def test_pending_fires_only_once_for_has_elapsed_then_resolves() -> None:
    r = rule(**{"for": "1m"})
    instance = Instance(r, MODEL, CANARY)

    instance, change = advance(instance, Reading(0.5, 50), 100.0)
    assert change is not None
    assert (change.previous, change.state) == (State.INACTIVE, State.PENDING)
    assert (instance.state, instance.since, instance.value, instance.samples) == (
        State.PENDING, 100.0, 0.5, 50)
    started = instance.started_at
    assert started  # the episode's wall time, for the webhook's startsAt

    instance, change = advance(instance, Reading(0.6, 60), 159.9)  # 59.9 s: not yet
    assert change is None
    assert (instance.state, instance.since, instance.value) == (State.PENDING, 100.0, 0.6)

    instance, change = advance(instance, Reading(0.6, 70), 160.0)  # exactly `for`
    assert change is not None
    assert (change.previous, change.state) == (State.PENDING, State.FIRING)
    assert change.instance is instance
    assert (instance.state, instance.since, instance.started_at) == (State.FIRING, 160.0, started)

    instance, change = advance(instance, Reading(0.9, 80), 5000.0)  # still breached
    assert change is None
    assert instance.state == State.FIRING

    instance, change = advance(instance, Reading(0.05, 80), 5010.0)  # cleared
    assert change is not None
    assert (change.previous, change.state) == (State.FIRING, State.RESOLVED)
    assert (instance.state, instance.since) == (State.INACTIVE, 5010.0)

    instance, change = advance(instance, Reading(0.05, 80), 5020.0)  # stays quiet
    assert change is None
    assert instance.state == State.INACTIVE


def test_for_zero_fires_at_once() -> None:
    instance, change = advance(Instance(rule(), MODEL, CANARY), Reading(0.2, 10), 7.0)
    assert change is not None
    assert (change.previous, change.state) == (State.INACTIVE, State.FIRING)
    assert (instance.state, instance.since) == (State.FIRING, 7.0)
    assert instance.started_at


def test_pending_that_clears_before_for_goes_back_to_inactive_and_restarts_the_timer() -> None:
    instance = Instance(rule(**{"for": "1m"}), MODEL, CANARY)
    instance, _ = advance(instance, Reading(0.5, 50), 0.0)
    instance, change = advance(instance, Reading(0.01, 50), 30.0)
    assert change is not None
    assert (change.previous, change.state) == (State.PENDING, State.INACTIVE)
    assert instance.state == State.INACTIVE
    # Breached again: a new pending episode, timed from now, not from the first one.
    instance, change = advance(instance, Reading(0.5, 50), 40.0)
    assert change is not None and change.state == State.PENDING
    instance, change = advance(instance, Reading(0.5, 50), 70.0)  # 70 s after the first
    assert change is None and instance.state == State.PENDING
    instance, change = advance(instance, Reading(0.5, 50), 100.0)
    assert change is not None and change.state == State.FIRING


def _in_state(state: State) -> Instance:
    instance = Instance(rule(**{"for": "1m"}), MODEL, CANARY)
    if state == State.INACTIVE:
        return instance
    instance, _ = advance(instance, Reading(0.5, 50), 0.0)
    if state == State.FIRING:
        instance, _ = advance(instance, Reading(0.5, 50), 60.0)
    assert instance.state == state
    return instance


@pytest.mark.parametrize(("state", "held"), [
    # inactive: a high value on too few samples, or no value, does not start anything
    (State.INACTIVE, Reading(0.9, 9)),
    (State.INACTIVE, Reading(None, 500)),
    # pending, long past `for`: would fire if judged
    (State.PENDING, Reading(0.9, 9)),
    (State.PENDING, Reading(None, 500)),
    # firing: a low value on too few samples, or missing data, does not resolve it
    (State.FIRING, Reading(0.0, 9)),
    (State.FIRING, Reading(None, 0)),
    (State.FIRING, NO_DATA),
])
def test_hold_changes_nothing_in_any_state(state: State, held: Reading) -> None:
    instance = _in_state(state)
    assert breached(instance.rule, held) is None
    after, change = advance(instance, held, 10_000.0)
    assert change is None
    assert (after.state, after.since, after.started_at) == (
        instance.state, instance.since, instance.started_at)
    # The reading is remembered (ListAlerts shows it), nothing else.
    assert (after.value, after.samples) == (held.value, held.samples)


def test_min_samples_is_inclusive() -> None:
    r = rule(min_samples=10)
    assert breached(r, Reading(0.9, 9)) is None
    assert breached(r, Reading(0.9, 10)) is True
    assert breached(r, Reading(0.0, 10)) is False


@pytest.mark.parametrize(("op", "value", "expected"), [
    (">", 0.2, True), (">", 0.1, False), (">", 0.05, False),
    (">=", 0.2, True), (">=", 0.1, True), (">=", 0.05, False),
    ("<", 0.2, False), ("<", 0.1, False), ("<", 0.05, True),
    ("<=", 0.2, False), ("<=", 0.1, True), ("<=", 0.05, True),
])
def test_operators(op: str, value: float, expected: bool) -> None:
    r = rule(op=op, threshold=0.1)
    assert breached(r, Reading(value, 100)) is expected
    instance, change = advance(Instance(r, MODEL, CANARY), Reading(value, 100), 1.0)
    assert instance.state == (State.FIRING if expected else State.INACTIVE)
    assert (change is not None) is expected


# ==========================================================================================
# 2. scoped_versions


SCOPE_CONFIG = config_text(canary_weight=10, shadow="1.3.0",
                           extra_routes='  { version = "1.2.0", weight = 0, label = "next" },')


def scope_routes(text: str = SCOPE_CONFIG) -> Any:
    return RoutingTable.from_config(parse_routing(text)).models[MODEL]


@pytest.mark.parametrize(("metric", "expected"), [
    ("error_rate", [STABLE, CANARY]),  # traffic > 0: not the weight-0 route, not the shadow
    ("latency", [STABLE, CANARY]),
    ("mae", [STABLE, CANARY]),
    ("mae_ratio", [CANARY]),  # against the stable version: never the stable itself
    ("shadow_divergence", ["1.3.0"]),  # only the shadow
])
def test_model_scope(metric: str, expected: list[str]) -> None:
    routes = scope_routes()
    assert scoped_versions(rule(metric=metric), routes) == expected


def test_model_scope_keeps_a_rolled_back_canary() -> None:
    table = RoutingTable.from_config(parse_routing(SCOPE_CONFIG))
    rolled = with_override(table, MODEL, "bad canary", "2025-01-01T00:00:00.000Z",
                           actor="alert:x").models[MODEL]
    assert rolled.effective_weight(CANARY) == 0  # no traffic in force ...
    assert scoped_versions(rule(), rolled) == [STABLE, CANARY]  # ... still watched
    assert scoped_versions(rule(metric="mae_ratio"), rolled) == [CANARY]


def test_shadow_divergence_without_a_shadow_watches_nothing() -> None:
    routes = scope_routes(config_text())
    assert scoped_versions(rule(metric="shadow_divergence"), routes) == []


def test_model_scope_without_weights_is_the_default() -> None:
    routes = RoutingTable.from_versions({MODEL: [STABLE, CANARY]}).models[MODEL]
    assert scoped_versions(rule(), routes) == [CANARY]  # newest is the default
    assert scoped_versions(rule(metric="mae_ratio"), routes) == []


@pytest.mark.parametrize(("scope", "expected"), [
    ("canary", [CANARY]),
    ("stable", [STABLE]),
    ("next", ["1.2.0"]),  # a label on a weight-0 route: named, so watched
    ("1.1.0", [CANARY]),
    ("1.2.0", ["1.2.0"]),
    ("1.3.0", ["1.3.0"]),  # the shadow, by version
    ("9.9.9", []),  # a version the table does not hold
    ("nightly", []),  # a label the table does not hold
])
def test_label_and_version_scopes(scope: str, expected: list[str]) -> None:
    routes = scope_routes()
    assert scoped_versions(rule(scope=scope), routes) == expected
    # The metric does not widen or narrow a named scope.
    assert scoped_versions(rule(scope=scope, metric="mae_ratio"), routes) == expected


# ==========================================================================================
# 3. Signals


def signals(observer: Observer, clock: FakeClock, *, store: Store | None = None,
            tracker: Any = None) -> Signals:
    return Signals(observer, tracker or (lambda model, version: None), store, None, clock=clock)


@pytest.mark.parametrize(("status_class", "errors"), [
    ("server", 6 + 3),  # INTERNAL, UNAVAILABLE
    ("client", 4 + 2),  # INVALID_ARGUMENT, NOT_FOUND
    ("any", 6 + 3 + 4 + 2),
])
def test_error_rate_by_status_class(status_class: str, errors: int) -> None:
    clock, observer = FakeClock(), Observer()
    sig = signals(observer, clock)
    add_calls(observer, CANARY, ok=85, INTERNAL=6, UNAVAILABLE=3, INVALID_ARGUMENT=4,
              NOT_FOUND=2)
    add_calls(observer, STABLE, ok=500, INTERNAL=500)  # another version: not counted
    clock.advance(10)
    sig.sample(300)
    r = rule(status_class=status_class, window="5m")
    assert sig.read(r, MODEL, CANARY, STABLE) == Reading(errors / 100, 100)
    assert sig.read(r, MODEL, "1.2.0", STABLE) == Reading(None, 0)  # no calls: no data
    assert sig.read(r, "other_model", CANARY, STABLE) == Reading(None, 0)


def test_error_rate_window_uses_a_baseline_at_or_before_its_start() -> None:
    clock, observer = FakeClock(1000.0), Observer()
    sig = signals(observer, clock)  # the zero snapshot, at 1000
    add_calls(observer, CANARY, INTERNAL=100)
    clock.now = 1010.0
    sig.sample(300)  # A: 100 errors
    add_calls(observer, CANARY, INTERNAL=20)
    clock.now = 1100.0
    sig.sample(300)  # B: 120 errors
    add_calls(observer, CANARY, ok=100)
    clock.now = 1130.0
    sig.sample(300)  # C: 120 errors, 100 OK

    def read(window: str) -> Reading:
        return sig.read(rule(window=window), MODEL, CANARY, STABLE)

    # 20 s: starts at 1110, after B: B is the baseline, only the 100 OK calls are in it.
    assert read("20s") == Reading(0.0, 100)
    # 30 s: starts at 1100 exactly: B is at the start, still the baseline.
    assert read("30s") == Reading(0.0, 100)
    # 60 s: starts at 1070, between A and B: the newest snapshot before it (A) is the
    # baseline, so the 20 errors counted between A and B are in, the 100 before A are not.
    assert read("1m") == Reading(20 / 120, 120)
    # 5 min: reaches before every snapshot: everything since the zero snapshot.
    assert read("5m") == Reading(120 / 220, 220)


def test_error_rate_window_keeps_its_baseline_across_many_evaluations() -> None:
    clock, observer = FakeClock(0.0), Observer()
    sig = signals(observer, clock)
    for _ in range(100):  # one evaluation every 10 s; 1 error in 10 calls each interval
        add_calls(observer, CANARY, ok=9, INTERNAL=1)
        clock.advance(10)
        sig.sample(60)
    # The last 60 s are 6 intervals: 60 calls, 6 errors; older ones are not counted.
    assert sig.read(rule(window="1m"), MODEL, CANARY, STABLE) == Reading(0.1, 60)
    add_calls(observer, CANARY, ok=10)
    clock.advance(10)
    sig.sample(60)
    assert sig.read(rule(window="1m"), MODEL, CANARY, STABLE) == Reading(5 / 60, 60)


def test_long_windows_stay_windows_after_snapshots_are_thinned() -> None:
    clock, observer = FakeClock(1000.0), Observer()
    sig = signals(observer, clock)
    interval = 5.0  # the default alert_interval_s
    for step in range(120 + 3 * 720):  # 10 min with 10 % errors, then 3 h without any
        if step < 120:
            add_calls(observer, CANARY, ok=9, INTERNAL=1)
        else:
            add_calls(observer, CANARY, ok=10)
        clock.advance(interval)
        sig.sample(3600)  # the engine's horizon: its longest rule window, 1 h
    reading = sig.read(rule(window="1h"), MODEL, CANARY, STABLE)
    # The last hour has 720 intervals of 10 OK calls (a baseline up to an interval or so
    # older than the window's start would still hold only OK calls), not the errors from
    # three hours ago (22 800 calls since start would read 0.00526...).
    assert reading.value == 0.0
    assert reading.samples < 8000


def test_quantile_matches_promql_histogram_quantile_by_hand() -> None:
    bounds = (0.1, 0.2, 0.5, 1.0)
    counts = [10, 30, 40, 15, 5]  # last one is (1.0, +Inf); total 100
    # q = 0.5: rank 50; cumulative 10, 40, 80 -> bucket (0.2, 0.5], 10 of its 40 into it
    assert _quantile(bounds, counts, 0.5) == pytest.approx(0.2 + 0.3 * 10 / 40)
    # q = 0.9: rank 90; cumulative 80, 95 -> bucket (0.5, 1.0], 10 of 15
    assert _quantile(bounds, counts, 0.9) == pytest.approx(0.5 + 0.5 * 10 / 15)
    # q = 0.05: rank 5 in the first bucket, whose lower bound is 0
    assert _quantile(bounds, counts, 0.05) == pytest.approx(0.1 * 5 / 10)
    # q = 0.4: rank 40 is exactly the top of (0.1, 0.2]: its upper bound
    assert _quantile(bounds, counts, 0.4) == pytest.approx(0.2)
    # q = 0.99: rank 99 lands in +Inf: the highest finite bound, as PromQL answers
    assert _quantile(bounds, counts, 0.99) == 1.0
    # empty buckets before the rank are skipped
    assert _quantile(bounds, [0, 0, 4, 0, 0], 0.5) == pytest.approx(0.2 + 0.3 * 2 / 4)
    assert _quantile(bounds, [0, 0, 0, 0, 0], 0.5) is None


def test_latency_quantile_over_the_window() -> None:
    clock, observer = FakeClock(), Observer()
    sig = signals(observer, clock)
    key = (MODEL, CANARY)
    for _ in range(500):  # before the window: very slow
        observer.request_duration.record(key, 4.0)
    clock.advance(10)
    sig.sample(300)
    clock.advance(60)
    sig.sample(300)
    for _ in range(50):
        observer.request_duration.record(key, 0.003)  # (0.002, 0.005]
    for _ in range(40):
        observer.request_duration.record(key, 0.02)  # (0.01, 0.025]
    for _ in range(10):
        observer.request_duration.record(key, 0.2)  # (0.1, 0.25]
    clock.advance(10)
    sig.sample(300)
    assert DURATION_BOUNDS_S[2:6] == (0.002, 0.005, 0.01, 0.025)  # the hand computation's
    r = rule(metric="latency", quantile=0.95, window="1m")
    # rank 95 of 100: cumulative 50, 90, 100 -> (0.1, 0.25], 5 of its 10
    assert sig.read(r, MODEL, CANARY, STABLE) == Reading(pytest.approx(0.1 + 0.15 * 5 / 10),
                                                         100)
    r = rule(metric="latency", quantile=0.6, window="1m")
    assert sig.read(r, MODEL, CANARY, STABLE) == Reading(pytest.approx(0.01 + 0.015 * 10 / 40),
                                                         100)
    # A window reaching back before the slow calls sees them: rank 300 of 600 falls
    # 200 calls into the 500 of (2.5, 5.0].
    r = rule(metric="latency", quantile=0.5, window="5m")
    assert sig.read(r, MODEL, CANARY, STABLE) == Reading(pytest.approx(2.5 + 2.5 * 200 / 500),
                                                         600)
    # No calls in the window: no value, no samples; a version never called: no data.
    clock.advance(120)
    sig.sample(300)
    assert sig.read(rule(metric="latency", window="1m"), MODEL, CANARY, STABLE) == Reading(
        None, 0)
    assert sig.read(rule(metric="latency"), MODEL, STABLE, STABLE) == NO_DATA


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Store, FakeClock]]:
    wall = FakeClock(1_750_000_000.0)
    db = SqliteStore(tmp_path / "waybill.db", clock=wall)
    db.start()
    try:
        yield db, wall
    finally:
        db.close()


def log_and_report(db: Store, version: str, prefix: str, median: float, lower: float,
                   upper: float, actuals: list[float], promised: int | None = None) -> None:
    ids = [f"{prefix}-{i}" for i in range(len(actuals))]
    db.log_predictions([LoggedPrediction(pid, MODEL, version, None, median, lower, upper,
                                         promised) for pid in ids])
    delivery = OutputSpec()  # the demo's delivery model: transit days of 0 to 365

    def score(index: int, actual: Actual, _model: str, _version: str, logged: Logged) -> Terms:
        return kind_of(delivery).terms(delivery, f"outcomes[{index}]", actual, logged)

    results = db.report_outcomes([Outcome(pid, Actual(value=a)) for pid, a in zip(
        ids, actuals, strict=True)], score)
    assert [r.duplicate for r in results] == [False] * len(actuals)


def test_outcome_metrics_from_the_store(store: tuple[Store, FakeClock]) -> None:
    db, wall = store
    clock, observer = FakeClock(), Observer()
    sig = signals(observer, clock, store=db)
    # Long ago (outside a 5 min window): a terrible stable version.
    log_and_report(db, STABLE, "old", 3.0, 2.0, 4.0, [30.0] * 5)
    wall.advance(3600)
    # Canary: median 5 in [4, 6]; errors 3, 0, -3, -0.5 -> MAE 1.625; 2 of 4 covered;
    # promised 5 days: 2 and 5 on time, 8 and 5.5 late.
    log_and_report(db, CANARY, "c", 5.0, 4.0, 6.0, [2.0, 5.0, 8.0, 5.5], promised=5)
    # Stable: median 3 in [2, 4]; errors -0.5, 0.5 -> MAE 0.5; both covered.
    log_and_report(db, STABLE, "s", 3.0, 2.0, 4.0, [3.5, 2.5])
    sig.sample(300)

    def read(metric: str, version: str) -> Reading:
        return sig.read(rule(metric=metric, window="5m"), MODEL, version, STABLE)

    assert read("mae", CANARY) == Reading(pytest.approx(1.625), 4)
    assert read("mae", STABLE) == Reading(pytest.approx(0.5), 2)  # the old 30s excluded
    assert read("coverage", CANARY) == Reading(pytest.approx(0.5), 4)
    assert read("coverage", STABLE) == Reading(pytest.approx(1.0), 2)
    assert read("on_time", CANARY) == Reading(pytest.approx(0.5), 4)
    assert read("on_time", STABLE) == Reading(None, 2)  # no promised dates
    # The ratio rests on the smaller side's outcomes.
    assert read("mae_ratio", CANARY) == Reading(pytest.approx(1.625 / 0.5), 2)
    assert read("mae_ratio", STABLE) == NO_DATA  # the stable against itself: nothing
    assert read("mae", "1.2.0") == NO_DATA
    # A longer window reaches the old outcomes too.
    long = sig.read(rule(metric="mae", window="2h"), MODEL, STABLE, STABLE)
    assert long == Reading(pytest.approx((5 * 27.0 + 0.5 + 0.5) / 7), 7)


def test_outcomes_are_read_once_per_evaluation(store: tuple[Store, FakeClock]) -> None:
    db, _ = store
    clock, observer = FakeClock(), Observer()
    sig = signals(observer, clock, store=db)
    log_and_report(db, CANARY, "a", 5.0, 4.0, 6.0, [5.0])
    sig.sample(300)
    r = rule(metric="mae", window="5m")
    assert sig.read(r, MODEL, CANARY, STABLE) == Reading(0.0, 1)
    log_and_report(db, CANARY, "b", 5.0, 4.0, 6.0, [7.0])
    assert sig.read(r, MODEL, CANARY, STABLE) == Reading(0.0, 1)  # same evaluation
    sig.sample(300)
    assert sig.read(r, MODEL, CANARY, STABLE) == Reading(1.0, 2)  # the next one reads afresh


def test_mae_ratio_with_a_perfect_stable_holds(store: tuple[Store, FakeClock]) -> None:
    db, _ = store
    sig = signals(Observer(), FakeClock(), store=db)
    log_and_report(db, STABLE, "s", 3.0, 2.0, 4.0, [3.0, 3.0, 3.0])
    log_and_report(db, CANARY, "c", 5.0, 4.0, 6.0, [3.0, 3.0])
    sig.sample(300)
    reading = sig.read(rule(metric="mae_ratio", window="5m"), MODEL, CANARY, STABLE)
    assert reading == Reading(None, 2)
    assert breached(rule(metric="mae_ratio", min_samples=1), reading) is None


def feature(name: str, psi: float | None) -> FeatureDrift:
    return FeatureDrift(name=name, kind="numeric", rows=500, psi=psi, ks_statistic=None,
                        ks_pvalue=None, chi2_statistic=None, chi2_pvalue=None,
                        unseen_rate=None, missing_rate=0.0, reference_missing_rate=0.0,
                        drifted=False, bins=(), top_bins=())


def window(status: str = "ok", rows: int = 500) -> WindowReport:
    return WindowReport(started_at=0.0, ended_at=60.0, rows=rows, status=status,  # type: ignore[arg-type]
                        features=(feature("zip_code", 0.4), feature("weight_kg", 0.02)),
                        prediction=feature("prediction", 0.15), max_psi=0.4,
                        max_psi_feature="zip_code")


@dataclass
class FakeTracker:
    report: WindowReport | None

    def latest(self) -> WindowReport | None:
        return self.report


def test_drift_readings_from_the_newest_closed_window() -> None:
    trackers = {(MODEL, CANARY): FakeTracker(window()),
                (MODEL, STABLE): FakeTracker(window("not_enough_data", rows=40)),
                (MODEL, "1.2.0"): FakeTracker(None)}
    sig = signals(Observer(), FakeClock(), tracker=lambda m, v: trackers.get((m, v)))
    sig.sample(300)

    def read(version: str, **fields: Any) -> Reading:
        return sig.read(rule(**fields), MODEL, version, STABLE)

    assert read(CANARY, metric="feature_psi") == Reading(0.4, 500)  # the largest
    assert read(CANARY, metric="feature_psi", feature="weight_kg") == Reading(0.02, 500)
    assert read(CANARY, metric="feature_psi", feature="carrier") == NO_DATA  # not in schema
    assert read(CANARY, metric="prediction_psi") == Reading(0.15, 500)
    # Too few rows for a verdict: no value, and the rows so min_samples can be judged.
    held = read(STABLE, metric="feature_psi")
    assert held == Reading(None, 40)
    assert breached(rule(metric="feature_psi", threshold=0.2), held) is None
    assert read("1.2.0", metric="prediction_psi") == NO_DATA  # no closed window yet
    assert read("1.3.0", metric="prediction_psi") == NO_DATA  # no tracker at all


def test_few_samples_hold_an_alert_built_from_signals() -> None:
    clock, observer = FakeClock(), Observer()
    sig = signals(observer, clock)
    add_calls(observer, CANARY, ok=5, INTERNAL=4)  # 44 % errors, but 9 calls
    clock.advance(10)
    sig.sample(300)
    r = rule(threshold=0.05, min_samples=10)
    reading = sig.read(r, MODEL, CANARY, STABLE)
    assert reading == Reading(4 / 9, 9)
    instance, change = advance(Instance(r, MODEL, CANARY), reading, clock())
    assert change is None and instance.state == State.INACTIVE
    add_calls(observer, CANARY, ok=1)  # the tenth call
    clock.advance(10)
    sig.sample(300)
    instance, change = advance(instance, sig.read(r, MODEL, CANARY, STABLE), clock())
    assert change is not None and change.state == State.FIRING


# ==========================================================================================
# 4. AlertEngine on a real ServingState, Journal and Store


@pytest.fixture(scope="module")
def loaded() -> dict[tuple[str, str], LoadedVersion]:
    return {(MODEL, v): LoadedVersion.load(ROOT / "models", MODEL, v) for v in (STABLE, CANARY)}


def build_table(config: RoutingConfig) -> RoutingTable:
    return RoutingTable.from_config(config, {MODEL: [STABLE, CANARY]})


@dataclass
class Rig:
    config: RoutingConfig
    clock: FakeClock
    observer: Observer
    store: Store
    state: ServingState
    engine: AlertEngine

    def evaluate(self, after_s: float = 10.0) -> list[tuple[str, str, State]]:
        self.clock.advance(after_s)
        changes: list[Change] = asyncio.run(self.engine.evaluate())
        return [(c.instance.rule.name, c.instance.version, c.state) for c in changes]

    def events(self, kind: str) -> list[Any]:
        return self.store.events(kinds=(kind,), limit=1000)

    @property
    def routes(self) -> Any:
        return self.state.current.table.models[MODEL]


@pytest.fixture
def rig(tmp_path: Path, loaded: dict[tuple[str, str], LoadedVersion]) -> Iterator[Any]:
    stores: list[Store] = []
    notifiers: list[Notifier] = []

    def make(alerts: str, alertmanagers: tuple[str, ...] = (),
             lead: Callable[[], bool] = lambda: True,
             shared: Callable[[Any], bool] = lambda rule: False, **routes: Any) -> Rig:
        parsed = parse_routing_file(config_text(alerts, **routes))
        config = parsed.config
        snapshot = Snapshot.build(build_table(config), loaded, source="routing.toml",
                                  alerts=parsed.alerts)
        state = ServingState(snapshot)
        db = SqliteStore(tmp_path / "waybill.db")
        db.start()
        stores.append(db)
        clock, observer = FakeClock(), Observer()
        sig = Signals(observer, lambda m, v: None, db, None, clock=clock)
        notifier = Notifier(None, alertmanagers=alertmanagers, resend_s=60.0, clock=clock)
        notifiers.append(notifier)
        engine = AlertEngine(state, sig, Journal(db), notifier, interval_s=10.0, clock=clock,
                             lead=lead, shared=shared)
        return Rig(config, clock, observer, db, state, engine)

    try:
        yield make
    finally:
        for notifier in notifiers:
            notifier.close()
        for db in stores:
            db.close()


ROLLBACK_RULE = alert_toml("canary-errors", metric="error_rate", op=">", threshold=0.05,
                           for_="30s", window="2m", min_samples=20, severity="critical",
                           action="rollback")


def test_an_override_made_while_the_store_is_away_is_saved_once_it_is_back(
        rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    r: Rig = rig(ROLLBACK_RULE)
    journal = Journal(r.store)
    present = r.store.claim_override

    def away(*args: Any) -> Any:
        raise StoreUnavailable("the database is away")

    monkeypatch.setattr(r.store, "claim_override", away)
    _, routes = rollback(r.state, MODEL, "INC-1", actor="admin")
    asyncio.run(journal.rolled_back(MODEL, routes))  # in force here, not saved
    assert r.store.overrides() == {}
    with pytest.raises(StoreUnavailable):
        asyncio.run(journal.follow(r.state))
    monkeypatch.setattr(r.store, "claim_override", present)
    asyncio.run(journal.follow(r.state))  # back: saved, so the other processes follow it
    assert r.store.overrides()[MODEL]["reason"] == "INC-1"


def test_a_shared_rule_is_acted_on_only_while_leading(rig: Any) -> None:
    """Replicas on one database: a rule on shared evidence is evaluated by every process
    but acted on by the one that leads; one that takes the lead over carries on from the
    state it kept (no second firing event), and its level-triggered rollback acts."""
    leading = [False]
    r: Rig = rig(ROLLBACK_RULE, lead=lambda: leading[0], shared=lambda rule: True)
    snapshot = r.state.current
    add_calls(r.observer, STABLE, ok=400)
    add_calls(r.observer, CANARY, ok=90, INTERNAL=10)
    assert r.evaluate() == []  # pending, silently
    add_calls(r.observer, CANARY, ok=90, INTERNAL=10)
    assert r.evaluate(40) == []  # firing, silently: another process acts
    assert {i.version: i.state for i in r.engine.instances()}[CANARY] == State.FIRING
    assert r.state.current is snapshot and not r.engine.leading
    assert r.events("alert") == [] and r.events("rollback") == []

    leading[0] = True  # the leader went away: this one takes over
    add_calls(r.observer, CANARY, ok=90, INTERNAL=10)
    assert r.evaluate() == []  # already firing: no new change, no second page
    assert r.routes.override is not None and r.routes.override.actor == "alert:canary-errors"
    assert len(r.events("rollback")) == 1 and r.events("alert") == []


def test_rollback_rule_rolls_the_canary_back_once(rig: Any) -> None:
    r: Rig = rig(ROLLBACK_RULE)
    snapshot = r.state.current
    add_calls(r.observer, STABLE, ok=400)
    add_calls(r.observer, CANARY, ok=90, INTERNAL=10)
    assert r.evaluate() == [("canary-errors", CANARY, State.PENDING)]
    assert r.state.current is snapshot  # pending moves nothing

    add_calls(r.observer, CANARY, ok=45, INTERNAL=5)
    assert r.evaluate(20) == []  # 20 s of 30
    assert r.state.current is snapshot

    add_calls(r.observer, CANARY, ok=45, INTERNAL=5)
    assert r.evaluate(10) == [("canary-errors", CANARY, State.FIRING)]
    routes = r.routes
    assert r.state.current.generation == snapshot.generation + 1
    assert routes.override is not None
    assert routes.override.actor == "alert:canary-errors"
    assert routes.override.rolled_back == (CANARY,)
    assert "canary-errors: error_rate" in routes.override.reason
    assert routes.effective_weight(CANARY) == 0
    assert routes.effective_weight(STABLE) == 100

    [rollback] = r.events("rollback")
    assert (rollback.model, rollback.version, rollback.rule, rollback.actor) == (
        MODEL, CANARY, "canary-errors", "alert:canary-errors")
    assert rollback.value == pytest.approx(20 / 200)
    assert rollback.detail == {"stable": STABLE, "rolled_back": [CANARY]}
    alerts = [(e.version, e.rule, e.state) for e in r.events("alert")]
    assert alerts == [(CANARY, "canary-errors", "pending"), (CANARY, "canary-errors", "firing")]
    assert r.events("alert")[1].detail["action"] == "rollback"
    assert r.store.overrides() == {MODEL: {
        "actor": "alert:canary-errors", "at": routes.override.at,
        "reason": routes.override.reason, "rolled_back": [CANARY]}}

    # Still breached on later evaluations (pinned calls keep failing): nothing more.
    generation = r.state.current.generation
    for _ in range(3):
        add_calls(r.observer, CANARY, ok=9, INTERNAL=3)
        assert r.evaluate() == []
    assert len(r.events("rollback")) == 1
    assert [e.state for e in r.events("alert")] == ["pending", "firing"]
    assert r.state.current.generation == generation
    # The rolled-back canary is still watched (held, not forgotten).
    assert [(i.version, i.state) for i in r.engine.instances()] == [
        (STABLE, State.INACTIVE), (CANARY, State.FIRING)]

    # It resolves once its window is clean, and fires again: no second rollback.
    add_calls(r.observer, CANARY, ok=100)
    assert r.evaluate(200) == [("canary-errors", CANARY, State.RESOLVED)]
    assert r.routes.override == routes.override  # resolving does not clear the override
    add_calls(r.observer, CANARY, INTERNAL=50)
    assert r.evaluate() == [("canary-errors", CANARY, State.PENDING)]
    add_calls(r.observer, CANARY, INTERNAL=50)
    assert r.evaluate(30) == [("canary-errors", CANARY, State.FIRING)]
    assert len(r.events("rollback")) == 1
    assert r.state.current.generation == generation
    assert [e.state for e in r.events("alert")] == [
        "pending", "firing", "resolved", "pending", "firing"]
    assert r.engine.transitions[("canary-errors", "critical", "firing")] == 2
    assert r.engine.transitions[("canary-errors", "critical", "resolved")] == 1


def test_a_canary_given_back_its_traffic_while_the_rule_fires_is_rolled_back_again(
        rig: Any) -> None:
    r: Rig = rig(ROLLBACK_RULE.replace('"30s"', '"0s"'))
    add_calls(r.observer, CANARY, ok=80, INTERNAL=20)
    assert r.evaluate() == [("canary-errors", CANARY, State.FIRING)]
    assert r.routes.override is not None
    # An operator clears the override while the canary is still bad.
    changed, routes = clear_override(r.state, MODEL, "admin")
    asyncio.run(Journal(r.store).cleared(MODEL, routes, "admin"))
    assert changed and r.routes.effective_weight(CANARY) == 20
    add_calls(r.observer, CANARY, ok=8, INTERNAL=2)
    assert r.evaluate() == []  # no state change: it never stopped firing ...
    assert r.routes.override is not None  # ... and the canary is out again
    assert r.routes.override.actor == "alert:canary-errors"
    assert len(r.events("rollback")) == 2
    assert r.evaluate() == [] and len(r.events("rollback")) == 2  # idempotent after that


def test_an_alert_firing_before_a_restart_resolves_or_stays_without_a_second_page(
        rig: Any) -> None:
    r: Rig = rig(ROLLBACK_RULE.replace('"30s"', '"0s"').replace('"rollback"', '"notify"'))
    key = (MODEL, "canary-errors", CANARY)
    r.engine.seed({key: "2026-01-01T00:00:00.000Z"})
    add_calls(r.observer, CANARY, ok=80, INTERNAL=20)  # still bad: no second "firing"
    assert r.evaluate() == []
    firing = next(i for i in r.engine.instances() if i.version == CANARY)
    assert (firing.state, firing.started_at) == (State.FIRING, "2026-01-01T00:00:00.000Z")
    add_calls(r.observer, CANARY, ok=1000)
    assert r.evaluate(200) == [("canary-errors", CANARY, State.RESOLVED)]
    # Journal.firing reads the seed back from the event log.
    assert Journal(r.store).firing() == {}  # resolved last
    asyncio.run(Journal(r.store).alert(Change(dataclasses.replace(firing), State.PENDING,
                                              State.FIRING)))
    assert Journal(r.store).firing() == {key: r.events("alert")[-1].at}


def test_rollback_rule_never_rolls_back_the_stable_version(rig: Any) -> None:
    r: Rig = rig(ROLLBACK_RULE.replace('"30s"', '"0s"'))
    snapshot = r.state.current
    add_calls(r.observer, STABLE, ok=80, UNAVAILABLE=20)
    add_calls(r.observer, CANARY, ok=100)
    assert r.evaluate() == [("canary-errors", STABLE, State.FIRING)]
    assert r.state.current is snapshot
    assert r.routes.override is None
    assert r.events("rollback") == []
    assert r.store.overrides() == {}
    # Both failing at once: the canary is rolled back, the stable is what it goes to.
    add_calls(r.observer, CANARY, INTERNAL=50)
    assert r.evaluate() == [("canary-errors", CANARY, State.FIRING)]
    [rollback] = r.events("rollback")
    assert rollback.version == CANARY
    assert r.routes.override is not None and r.routes.override.rolled_back == (CANARY,)


def test_rollback_rule_on_a_version_without_traffic_moves_nothing(rig: Any) -> None:
    # A dark canary (weight 0, reached by pins only): nothing to take away, and the
    # rollback must not publish an override that holds back nothing.
    r: Rig = rig(alert_toml("dark-errors", metric="error_rate", scope="canary", op=">",
                            threshold=0.05, window="2m", min_samples=20, action="rollback"),
                 canary_weight=0)
    snapshot = r.state.current
    add_calls(r.observer, CANARY, ok=50, INTERNAL=50)
    assert r.evaluate() == [("dark-errors", CANARY, State.FIRING)]
    assert r.state.current is snapshot
    assert r.routes.override is None
    assert r.events("rollback") == []
    assert r.store.overrides() == {}


def test_notify_rule_never_changes_routing(rig: Any) -> None:
    r: Rig = rig(alert_toml("slow", metric="latency", op=">", threshold=0.05, quantile=0.9,
                            window="5m", min_samples=10, severity="warning"))
    snapshot = r.state.current
    for _ in range(20):
        r.observer.request_duration.record((MODEL, CANARY), 0.3)
        r.observer.request_duration.record((MODEL, STABLE), 0.3)
    assert sorted(r.evaluate()) == [("slow", STABLE, State.FIRING),
                                    ("slow", CANARY, State.FIRING)]
    assert r.evaluate() == []
    assert r.state.current is snapshot
    assert r.routes.override is None
    assert r.events("rollback") == []
    assert r.store.overrides() == {}
    assert {e.detail["action"] for e in r.events("alert")} == {"notify"}


def test_a_firing_alert_whose_rule_goes_away_or_changes_is_resolved(rig: Any) -> None:
    slow = alert_toml("slow", metric="latency", op=">", threshold=0.05, quantile=0.9,
                      window="5m", min_samples=10, severity="warning", scope="canary")
    r: Rig = rig(slow)
    for _ in range(20):
        r.observer.request_duration.record((MODEL, CANARY), 0.3)
    assert r.evaluate() == [("slow", CANARY, State.FIRING)]
    edited = parse_routing_file(config_text(slow.replace("0.05", "0.5")))
    r.state.update(lambda cur: dataclasses.replace(cur, alerts=edited.alerts))
    # The old rule's alert resolves; the edited rule starts again (0.3 s < 0.5 s: clear).
    assert r.evaluate() == [("slow", CANARY, State.RESOLVED)]
    assert r.evaluate() == []
    r.state.update(lambda cur: dataclasses.replace(cur, alerts={}))
    assert r.evaluate() == []  # an inactive alert that goes away says nothing
    assert [e.state for e in r.events("alert")] == ["firing", "resolved"]


def test_saved_override_is_restored_until_a_new_canary(rig: Any, tmp_path: Path) -> None:
    r: Rig = rig(ROLLBACK_RULE.replace('"30s"', '"0s"'))
    add_calls(r.observer, CANARY, ok=50, INTERNAL=50)
    assert r.evaluate() == [("canary-errors", CANARY, State.FIRING)]
    in_force = r.routes.override
    assert in_force is not None
    r.store.close()  # the server goes away

    restarted = SqliteStore(tmp_path / "waybill.db")
    restarted.start()
    try:
        journal = Journal(restarted)
        # The same file: the override comes back exactly (reason, time, actor, versions).
        fresh = build_table(r.config)
        assert fresh.models[MODEL].override is None
        restored = journal.restore(fresh).models[MODEL]
        assert restored.override == in_force
        assert isinstance(restored.override, Override)
        assert restored.effective_weight(CANARY) == 0
        assert set(restarted.overrides()) == {MODEL}
        # The same canary at another weight: still held back.
        reweighted = RoutingTable.from_config(parse_routing(config_text(canary_weight=50)))
        assert journal.restore(reweighted).models[MODEL].override == in_force
        assert set(restarted.overrides()) == {MODEL}
        # A new canary: the override no longer applies, and is forgotten for good.
        new_canary = RoutingTable.from_config(parse_routing(config_text(canary="1.2.0")))
        assert journal.restore(new_canary).models[MODEL].override is None
        assert restarted.overrides() == {}
        assert journal.restore(build_table(r.config)).models[MODEL].override is None
    finally:
        restarted.close()


# ==========================================================================================
# 5. Alertmanager's webhook payload and the Notifier


def changes_of_one_episode(for_: str = "0s") -> list[Change]:
    r = rule(name="canary-errors", severity="critical", threshold=0.05, **{"for": for_})
    instance = Instance(r, MODEL, CANARY)
    out = []
    for now, value in ((0.0, 0.3), (60.0, 0.3), (70.0, 0.01)):
        instance, change = advance(instance, Reading(value, 200), now)
        if change is not None:
            out.append(change)
    return out


def test_alertmanager_payload_firing_and_resolved() -> None:
    firing, resolved = changes_of_one_episode()
    assert (firing.state, resolved.state) == (State.FIRING, State.RESOLVED)

    body = alertmanager_payload(firing, "http://waybill.example")
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["externalURL"] == "http://waybill.example"
    assert body["groupLabels"] == {"alertname": "canary-errors"}
    assert body["groupKey"] == '{}:{alertname="canary-errors"}'
    [alert] = body["alerts"]
    assert alert["status"] == "firing"
    labels = alert["labels"]
    assert {k: labels[k] for k in ("alertname", "severity", "model", "version")} == {
        "alertname": "canary-errors", "severity": "critical", "model": MODEL,
        "version": CANARY}
    assert labels["metric"] == "error_rate"
    assert body["commonLabels"] == labels
    assert alert["startsAt"] == firing.instance.started_at
    assert alert["endsAt"] == ZERO_TIME
    assert "0.3" in alert["annotations"]["description"]
    json.dumps(body)  # serializable as is

    done = alertmanager_payload(resolved)
    assert done["version"] == "4"
    assert done["status"] == "resolved"
    [ended] = done["alerts"]
    assert ended["status"] == "resolved"
    assert ended["labels"] == labels
    assert ended["fingerprint"] == alert["fingerprint"]  # the same alert, now over
    assert ended["startsAt"] == alert["startsAt"]
    assert ended["endsAt"] != ZERO_TIME
    started = datetime.fromisoformat(ended["startsAt"].replace("Z", "+00:00"))
    ended_at = datetime.fromisoformat(ended["endsAt"].replace("Z", "+00:00"))
    assert ended_at >= started


class _Receiver(http.server.HTTPServer):
    def __init__(self, expected: int) -> None:
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        self.expected = expected
        self.done = threading.Event()
        super().__init__(("127.0.0.1", 0), _Hook)


class _Hook(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if len(self.server.received) >= self.server.expected:
            self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(expected=2)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_notifier_posts_firing_and_resolved_but_not_pending(receiver: _Receiver) -> None:
    pending, firing, resolved = changes_of_one_episode(for_="1m")
    assert [c.state for c in (pending, firing, resolved)] == [
        State.PENDING, State.FIRING, State.RESOLVED]
    r = pending.instance.rule
    _, cleared = advance(pending.instance, Reading(0.0, 200), 10.0)  # pending -> inactive
    assert cleared is not None and cleared.state == State.INACTIVE

    host, port = receiver.server_address[:2]
    notifier = Notifier(None, f"http://{host}:{port}/hook", external_url="http://waybill")
    try:
        # One poster thread, FIFO: had pending or the cleared pending been posted, they
        # would arrive before firing.
        notifier.notify(pending)
        notifier.notify(cleared)
        notifier.notify(firing)
        notifier.notify(resolved)
        assert receiver.done.wait(10), "the webhook was not called twice"
    finally:
        notifier.close()
    assert notifier.sent == 2 and notifier.failed == 0 and notifier.dropped == 0
    assert [(path, kind) for path, kind, _ in receiver.received] == [
        ("/hook", "application/json")] * 2
    bodies = [body for _, _, body in receiver.received]
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    assert all(b["version"] == "4" and b["externalURL"] == "http://waybill" for b in bodies)
    assert [b["alerts"][0]["labels"]["alertname"] for b in bodies] == [r.name] * 2
    assert bodies[1]["alerts"][0]["endsAt"] != ZERO_TIME


def test_notifier_without_webhook_posts_nothing() -> None:
    notifier = Notifier(None)
    for change in changes_of_one_episode():
        notifier.notify(change)
    notifier.close()
    assert (notifier.sent, notifier.failed, notifier.dropped) == (0, 0, 0)


def test_postable_alert_is_the_api_format_with_the_webhook_identity() -> None:
    firing, resolved = changes_of_one_episode()
    labels = {"instance": "host-a", "worker": "0"}
    alert = postable_alert(firing.instance, "firing", "2099-01-01T00:00:00.000Z",
                           "http://waybill", labels)
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    hook = alertmanager_payload(firing, "http://waybill", labels)["alerts"][0]
    # One identity (Alertmanager's fingerprint is its labels) in both formats.
    assert alert["labels"] == hook["labels"]
    assert alert["labels"]["instance"] == "host-a" and alert["labels"]["worker"] == "0"
    assert alert["startsAt"] == firing.instance.started_at
    assert alert["endsAt"] == "2099-01-01T00:00:00.000Z"
    assert alert["generatorURL"] == "http://waybill"
    assert "state firing" in alert["annotations"]["description"]
    # Never a startsAt after endsAt, which Alertmanager refuses.
    early = postable_alert(resolved.instance, "resolved", "2000-01-01T00:00:00.000Z")
    assert early["startsAt"] == early["endsAt"] == "2000-01-01T00:00:00.000Z"


def dead_url() -> str:
    """A URL where nothing listens (a port the OS handed out and took back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_notifier_posts_to_alertmanager_on_changes_and_resends_while_firing() -> None:
    receiver = _Receiver(expected=3)
    thread = threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = receiver.server_address[:2]
    clock, wall = FakeClock(), FakeClock(1_800_000_000.0)
    firing, resolved = changes_of_one_episode()
    # An HA pair whose first member is dead: the live one gets every post all the same.
    notifier = Notifier(None, alertmanagers=[dead_url(), f"http://{host}:{port}/"],
                        resend_s=60.0, clock=clock, wall=wall,
                        labels={"instance": "host-a", "worker": "0"})
    try:
        notifier.notify(firing)  # post 1
        clock.advance(10)
        notifier.firing([firing.instance])  # posted 10 s ago: not yet
        clock.advance(50)
        wall.advance(60)
        notifier.firing([firing.instance])  # post 2, the re-send
        clock.advance(5)
        wall.advance(5)
        notifier.notify(resolved)  # post 3
        notifier.firing([resolved.instance])  # nothing fires: nothing to send
        assert receiver.done.wait(10), "Alertmanager was not called three times"
    finally:
        notifier.close()
        receiver.shutdown()
        thread.join(5)
        receiver.server_close()
    assert {path for path, _, _ in receiver.received} == {"/api/v2/alerts"}
    bodies = [body for _, _, body in receiver.received]
    assert len(bodies) == 3 and all(isinstance(b, list) and len(b) == 1 for b in bodies)
    first, again, done = (b[0] for b in bodies)
    assert first["labels"] == again["labels"] == done["labels"]
    assert first["startsAt"] == again["startsAt"] == done["startsAt"]
    # endsAt 4 re-send intervals ahead while firing; the resolve time once resolved.
    assert first["endsAt"] == "2027-01-15T08:04:00.000Z"  # 1_800_000_000 + 240 s
    assert again["endsAt"] == "2027-01-15T08:05:00.000Z"
    assert done["endsAt"] == "2027-01-15T08:01:05.000Z"
    assert "state resolved" in done["annotations"]["description"]
    assert notifier.sent == 3 and notifier.failed == 3 and notifier.dropped == 0


def test_an_alert_restored_as_firing_is_posted_to_alertmanager_at_the_first_evaluation(
        rig: Any) -> None:
    receiver = _Receiver(expected=3)
    thread = threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = receiver.server_address[:2]
    try:
        r: Rig = rig(ROLLBACK_RULE.replace('"30s"', '"0s"').replace('"rollback"', '"notify"'),
                     alertmanagers=(f"http://{host}:{port}",))
        r.engine.seed({(MODEL, "canary-errors", CANARY): "2026-01-01T00:00:00.000Z"})
        add_calls(r.observer, CANARY, ok=80, INTERNAL=20)  # still bad
        assert r.evaluate(1) == []  # no change, and still posted (1)
        add_calls(r.observer, CANARY, ok=80, INTERNAL=20)
        assert r.evaluate(10) == []  # posted 10 s ago: nothing
        add_calls(r.observer, CANARY, ok=80, INTERNAL=20)
        assert r.evaluate(50) == []  # a minute since: re-sent (2)
        add_calls(r.observer, CANARY, ok=1000)
        assert r.evaluate(200) == [("canary-errors", CANARY, State.RESOLVED)]  # (3)
        assert receiver.done.wait(10), "Alertmanager was not called three times"
    finally:
        receiver.shutdown()
        thread.join(5)
        receiver.server_close()
    bodies = [body for _, _, body in receiver.received]
    assert [len(b) for b in bodies] == [1, 1, 1]
    assert [b[0]["labels"]["version"] for b in bodies] == [CANARY] * 3
    assert {b[0]["startsAt"] for b in bodies} == {"2026-01-01T00:00:00.000Z"}
    assert ["state resolved" in b[0]["annotations"]["description"] for b in bodies] == [
        False, False, True]


def test_every_alert_metric_has_its_own_reader() -> None:
    from server.monitoring.rules import Metric
    from server.monitoring.signals import _FIGURES, READERS, Signals

    assert set(READERS) == set(Metric)
    # One reader per metric, not one reader standing in for several: the outcome figures
    # share one reader, and each reads its own field of the version's accuracy.
    shared = {m for m, reader in READERS.items() if reader is Signals._figure}
    assert shared == set(_FIGURES)
    assert len(set(_FIGURES.values())) == len(_FIGURES)
    assert len(set(READERS.values())) == len(Metric) - len(shared) + 1
