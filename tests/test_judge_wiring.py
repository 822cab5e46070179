"""The canary judge wired into alert rules, piece by piece, with real objects.

- :meth:`Store.loss_sums` on a real store of each backend (SQLite, PostgreSQL): per-period
  sums of each outcome's loss, the period being the *prediction's* time (not the
  report's), absolute error for regression kinds and log loss for classifiers;
- the ``judge`` reader of :class:`Signals` over that store (paired periods, one read per
  evaluation);
- the latch of the pure state machine (:func:`advance`): the first WORSE is final, a
  NOT_WORSE stands until a WORSE, UNDECIDED changes nothing, a new stable version is a
  new experiment;
- :class:`AlertEngine` on a real state, journal and store: a WORSE verdict is one ``judge``
  event, one firing alert and one rollback; a NOT_WORSE verdict is one ``judge`` event and
  nothing else; after a restart the event log restores the decisions without repeating them.

Rule parsing (field paths of bad values) is in tests/test_router_config.py; the judge
itself in tests/test_judge.py; the whole server in tests/test_judge_e2e.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from models.kinds import Actual, Logged, Terms
from models.loaded import LoadedVersion
from server.monitoring.alerts import Instance, State, advance, holds, same_experiment
from server.monitoring.judge import Outcome, Verdict
from server.monitoring.notify import Notifier
from server.monitoring.rules import AlertRule, Metric
from server.monitoring.signals import NO_DATA, STORE_METRICS, Judged, Reading, Signals
from server.serving.alerting import AlertEngine
from server.serving.journal import Journal
from server.serving.routing_file import parse_routing_file
from server.serving.state import ServingState, Snapshot
from server.storage import backends
from server.storage.base import LoggedPrediction, LossSums, Store, StoreUnavailable
from server.storage.base import Outcome as Reported
from server.storage.sqlite import SqliteStore
from server.telemetry.observe import Observer
from tests.test_alerts import (
    CANARY,
    MODEL,
    ROOT,
    STABLE,
    FakeClock,
    alert_toml,
    build_table,
    config_text,
)

PERIOD = 900.0
T0 = 1_750_001_100.0  # 600 s into period 1_944_445 (of 900 s)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest,
          tmp_path: Path) -> Iterator[tuple[Store, FakeClock]]:
    """A started store of each backend; T0 is 2/3 into its period, so a backend whose
    period number rounds instead of flooring is caught."""
    if request.param == "sqlite":
        target = str(tmp_path / "waybill.db")
    else:
        target = request.getfixturevalue("postgres").database()
    wall = FakeClock(T0)
    db = backends.open_store(target, clock=wall)
    db.start()
    try:
        yield db, wall
    finally:
        db.close()


def log(db: Store, version: str, prefix: str, n: int, value: float = 5.0) -> list[str]:
    """``n`` predictions of ``version``, logged at the store's clock."""
    ids = [f"{prefix}-{i}" for i in range(n)]
    db.log_predictions([LoggedPrediction(pid, MODEL, version, None, value, None, None, None)
                        for pid in ids])
    return ids


def report(db: Store, terms: dict[str, Terms]) -> None:
    """Outcomes with the given terms (what a model kind would make of them)."""
    def score(_index: int, actual: Actual, _model: str, _version: str, _logged: Logged) -> Terms:
        return terms[found[int(actual.value)]]

    found = list(terms)
    db.report_outcomes([Reported(pid, Actual(value=float(i))) for i, pid in enumerate(found)],
                       score)


def errors(ids: list[str], values: list[float]) -> dict[str, Terms]:
    """Regression outcomes with these errors (prediction - actual), cycled over ``ids``."""
    return {pid: Terms(0.0, error=values[i % len(values)]) for i, pid in enumerate(ids)}


# ==========================================================================================
# 1. Store.loss_sums


def test_loss_sums_group_by_the_period_of_the_prediction(store: tuple[Store, FakeClock]) -> None:
    db, wall = store
    period = math.floor(T0 / PERIOD)
    first_c, first_s = log(db, CANARY, "c0", 3), log(db, STABLE, "s0", 2)
    wall.advance(400)  # the next period
    second_s = log(db, STABLE, "s1", 2)
    other = log(db, "1.2.0", "x", 2)
    wall.advance(5 * 86400)  # outcomes arrive days later: they join their old periods
    report(db, errors(first_c, [-1.0, 2.0, 3.0]) | errors(first_s, [0.5, -1.5])
           | errors(second_s, [4.0]) | errors(other, [9.0]))
    assert db.loss_sums(MODEL, (CANARY, STABLE), PERIOD) == [
        LossSums(period, STABLE, 2, 2.0, 0.25 + 2.25),
        LossSums(period, CANARY, 3, 6.0, 1.0 + 4.0 + 9.0),
        LossSums(period + 1, STABLE, 2, 8.0, 32.0),
    ]
    # A report-time range takes only what was reported in it (the judge's increments).
    late, late_period = log(db, STABLE, "s2", 2), math.floor(wall.now / PERIOD)
    wall.advance(60)
    report(db, errors(late, [1.0]))
    assert db.loss_sums(MODEL, (STABLE,), PERIOD, reported_from=wall.now) == [
        LossSums(late_period, STABLE, 2, 2.0, 2.0)]
    assert db.loss_sums(MODEL, (STABLE,), PERIOD, reported_to=wall.now) == [
        LossSums(period, STABLE, 2, 2.0, 2.5), LossSums(period + 1, STABLE, 2, 8.0, 32.0)]
    assert db.loss_sums(MODEL, (STABLE,), PERIOD, reported_from=wall.now - 30,
                        reported_to=wall.now - 1) == []
    # A longer period merges them; other models have nothing.
    assert [(s.version, s.count) for s in db.loss_sums(MODEL, (STABLE,), 86400.0)] == [
        (STABLE, 4), (STABLE, 2)]
    assert db.loss_sums("other_model", (CANARY, STABLE), PERIOD) == []
    assert db.loss_sums(MODEL, (), PERIOD) == []
    with pytest.raises(ValueError, match="period_s"):
        db.loss_sums(MODEL, (CANARY,), 0.0)


def test_loss_sums_use_log_loss_for_classifiers(store: tuple[Store, FakeClock]) -> None:
    db, _ = store
    ids = log(db, CANARY, "k", 3, value=1.0)
    report(db, {ids[0]: Terms(1.0, label="late", log_loss=0.5, correct=1),
                ids[1]: Terms(0.0, label="on_time", log_loss=2.0, correct=0),
                ids[2]: Terms(1.0, label="late", error=None)})  # no loss at all: left out
    [sums] = db.loss_sums(MODEL, (CANARY,), PERIOD)
    assert (sums.version, sums.count, sums.total, sums.total_sq) == (CANARY, 2, 2.5, 4.25)


# ==========================================================================================
# 2. The judge's reader


def judge_rule(**fields: Any) -> AlertRule:
    """A judge rule as the routing file's are validated (no op, no threshold)."""
    return AlertRule.model_validate({"name": "judge", "metric": "judge", "min_samples": 20,
                                     **fields})


def spread(db: Store, wall: FakeClock, periods: int, per_period: int, canary: list[float],
           stable: list[float], *, canary_share: int = 4) -> None:
    """``periods`` periods of traffic: every ``canary_share``-th prediction the canary's."""
    for p in range(periods):
        n_c = per_period // canary_share
        c = log(db, CANARY, f"c{p}-{wall.now}", n_c)
        s = log(db, STABLE, f"s{p}-{wall.now}", per_period - n_c)
        report(db, errors(c, canary) | errors(s, stable))
        wall.advance(PERIOD)


def test_the_judge_reads_paired_periods_once_per_evaluation(
        store: tuple[Store, FakeClock]) -> None:
    db, wall = store
    clock = FakeClock()
    sig = Signals(Observer(), lambda m, v: None, db, None, clock=clock, wall=wall)
    r = judge_rule()
    # Canary's absolute errors twice stable's, in every period.
    spread(db, wall, periods=4, per_period=120, canary=[2.0, -4.0, 6.0], stable=[1.0, -2.0, 3.0])
    sig.sample(300)
    reading = sig.read(r, MODEL, CANARY, STABLE)
    assert reading.judged is not None
    verdict = reading.judged.verdict
    assert (reading.judged.stable, reading.judged.periods) == (STABLE, 4)
    assert verdict.outcome == Outcome.WORSE
    assert reading.value == pytest.approx(1.0) == verdict.effect
    assert 0 < verdict.low < 1.0 < verdict.high
    assert (verdict.samples_canary, verdict.samples_stable) == (120, 360)
    assert reading.samples == 120  # the smaller side
    # One read per evaluation: outcomes reported meanwhile wait for the next one.
    spread(db, wall, periods=1, per_period=100, canary=[2.0], stable=[2.0])
    assert sig.read(r, MODEL, CANARY, STABLE) == reading
    sig.sample(300)
    assert sig.read(r, MODEL, CANARY, STABLE).samples == 145
    # The stable version against itself, or no store: no data.
    assert sig.read(r, MODEL, STABLE, STABLE) == NO_DATA
    no_store = Signals(Observer(), lambda m, v: None, None, None, clock=clock)
    assert no_store.read(r, MODEL, CANARY, STABLE) == NO_DATA


def test_judge_rules_read_shared_evidence_and_an_absent_store_is_no_data() -> None:
    # With replicas on one database, only the leading one acts on a judge rule.
    assert Metric.JUDGE in STORE_METRICS

    class Away:
        def loss_sums(self, *args: Any, **kwargs: Any) -> list[LossSums]:
            raise StoreUnavailable("the database is away")

    sig = Signals(Observer(), lambda m, v: None, Away(), None)  # type: ignore[arg-type]
    sig.sample(60.0)
    assert sig.paired(MODEL, CANARY, STABLE, PERIOD) is None


def test_a_period_counts_once_each_side_has_two_outcomes(store: tuple[Store, FakeClock]) -> None:
    db, wall = store
    sig = Signals(Observer(), lambda m, v: None, db, None, clock=FakeClock(), wall=wall)
    report(db, errors(log(db, CANARY, "c", 1), [1.0]) | errors(log(db, STABLE, "s", 5), [1.0]))
    sig.sample(300)
    reading = sig.read(judge_rule(), MODEL, CANARY, STABLE)
    assert reading.value is None and reading.samples == 0
    assert reading.judged is not None and reading.judged.periods == 0
    assert reading.judged.verdict.outcome == Outcome.UNDECIDED


def test_sums_grown_by_report_time_equal_a_fresh_read(store: tuple[Store, FakeClock]) -> None:
    """Settled outcomes are read once and kept, newer ones re-read: across evaluations,
    with outcomes arriving late for old periods, the experiment's sums are those a fresh
    reader (a restarted process, another replica) reads."""
    db, wall = store
    clock = FakeClock()
    sig = Signals(Observer(), lambda m, v: None, db, None, clock=clock, wall=wall)
    r = judge_rule()
    pending: list[tuple[list[str], list[str]]] = []
    for step in range(12):
        c, s = log(db, CANARY, f"c{step}", 5), log(db, STABLE, f"s{step}", 15)
        pending.append((c, s))
        if step % 3 == 2:  # deliveries arrive in batches, for predictions of several periods
            for c_ids, s_ids in pending:
                report(db, errors(c_ids, [1.0, -2.5, 4.0]) | errors(s_ids, [0.5, 2.0, -3.0]))
            pending.clear()
        wall.advance(70.0)  # a settling horizon (120 s) passes every other step
        sig.sample(300)
        mine = sig.paired(MODEL, CANARY, STABLE, PERIOD)
        fresh = Signals(Observer(), lambda m, v: None, db, None, clock=clock, wall=wall)
        theirs = fresh.paired(MODEL, CANARY, STABLE, PERIOD)
        assert mine.keys() == theirs.keys(), step
        for period, (a, b) in mine.items():
            for side, other in zip((a, b), theirs[period], strict=True):
                assert (side.count, side.mean, side.m2) == (
                    other.count, pytest.approx(other.mean), pytest.approx(other.m2)), step
        kept, anew = sig.read(r, MODEL, CANARY, STABLE), fresh.read(r, MODEL, CANARY, STABLE)
        assert kept.samples == anew.samples and kept.judged and anew.judged, step
        assert kept.judged.verdict.outcome == anew.judged.verdict.outcome, step
        assert kept.value == pytest.approx(anew.value), step
    assert sum(a.count for a, _ in mine.values()) == 60


# ==========================================================================================
# 3. The latch


def judged(outcome: Outcome, stable: str = STABLE, effect: float = 0.1) -> Reading:
    verdict = Verdict(outcome, effect, effect - 0.1, effect + 0.1, 5.0, 5.0, 200, 800)
    return Reading(effect, 200, Judged(stable, verdict, 8))


def test_the_first_worse_is_final_and_not_worse_stands_until_a_worse() -> None:
    r = judge_rule(action="rollback")
    instance = Instance(r, MODEL, CANARY)
    steps = [(Outcome.UNDECIDED, Outcome.UNDECIDED, State.INACTIVE, None),
             (Outcome.NOT_WORSE, Outcome.NOT_WORSE, State.INACTIVE, None),
             (Outcome.UNDECIDED, Outcome.NOT_WORSE, State.INACTIVE, None),
             (Outcome.WORSE, Outcome.WORSE, State.FIRING, State.FIRING),
             (Outcome.UNDECIDED, Outcome.WORSE, State.FIRING, None),
             (Outcome.NOT_WORSE, Outcome.WORSE, State.FIRING, None)]
    for now, (read, decided, state, change) in enumerate(steps):
        reading = judged(read, effect=0.01 * now)
        instance, happened = advance(instance, reading, float(now))
        assert (instance.decided, instance.state) == (decided, state), now
        assert (happened.state if happened else None) == change, now
        assert instance.judged == reading.judged and instance.value == reading.value
        assert holds(instance, reading) is (True if decided == Outcome.WORSE else
                                            False if decided == Outcome.NOT_WORSE else None)
    # No data (the reader has no store) keeps the last verdict and the decision.
    held, nothing = advance(instance, NO_DATA, 9.0)
    assert nothing is None and held.judged == instance.judged and held.decided == Outcome.WORSE
    # Another stable version: another experiment.
    assert same_experiment(instance, judged(Outcome.UNDECIDED))
    assert not same_experiment(instance, judged(Outcome.UNDECIDED, stable="1.2.0"))
    assert same_experiment(instance, NO_DATA)


# ==========================================================================================
# 4. The engine


@pytest.fixture(scope="module")
def loaded() -> dict[tuple[str, str], LoadedVersion]:
    return {(MODEL, v): LoadedVersion.load(ROOT / "models", MODEL, v) for v in (STABLE, CANARY)}


@dataclass
class Rig:
    clock: FakeClock
    wall: FakeClock
    store: Store
    state: ServingState
    engine: AlertEngine

    def evaluate(self) -> list[tuple[str, State]]:
        self.clock.advance(10)
        return [(c.instance.version, c.state) for c in asyncio.run(self.engine.evaluate())]

    def events(self, kind: str) -> list[Any]:
        return self.store.events(kinds=(kind,), limit=1000)

    def restarted(self) -> Rig:
        """A new engine on the same store, seeded from the event log as app.py does."""
        journal = Journal(self.store)
        sig = Signals(Observer(), lambda m, v: None, self.store, None, clock=self.clock,
                      wall=self.wall)
        engine = AlertEngine(self.state, sig, journal, Notifier(None), interval_s=10.0,
                             clock=self.clock)
        engine.seed(journal.firing(), journal.decided())
        return replace(self, engine=engine)


@pytest.fixture
def rig(tmp_path: Path, loaded: dict[tuple[str, str], LoadedVersion]) -> Iterator[Any]:
    stores: list[Store] = []

    def make(alerts: str) -> Rig:
        parsed = parse_routing_file(config_text(alerts, canary_weight=25))
        snapshot = Snapshot.build(build_table(parsed.config), loaded, source="routing.toml",
                                  alerts=parsed.alerts)
        state = ServingState(snapshot)
        wall = FakeClock(T0)
        db = SqliteStore(tmp_path / "waybill.db", clock=wall)
        db.start()
        stores.append(db)
        clock = FakeClock()
        sig = Signals(Observer(), lambda m, v: None, db, None, clock=clock, wall=wall)
        engine = AlertEngine(state, sig, Journal(db), Notifier(None), interval_s=10.0,
                             clock=clock)
        return Rig(clock, wall, db, state, engine)

    try:
        yield make
    finally:
        for db in stores:
            db.close()


JUDGE_RULE = alert_toml("canary-judge", metric="judge", min_samples=30, severity="critical",
                        action="rollback")


def test_a_worse_canary_is_judged_once_alerted_once_and_rolled_back_once(rig: Any) -> None:
    r: Rig = rig(JUDGE_RULE)
    spread(r.store, r.wall, periods=1, per_period=40, canary=[3.0, -6.0], stable=[2.0, -4.0])
    assert r.evaluate() == []  # 10 canary outcomes: undecided
    [instance] = r.engine.instances()  # the stable version is not judged against itself
    assert (instance.version, instance.decided, instance.state) == (
        CANARY, Outcome.UNDECIDED, State.INACTIVE)
    assert r.events("judge") == []
    spread(r.store, r.wall, periods=6, per_period=80, canary=[3.0, -6.0], stable=[2.0, -4.0])
    assert r.evaluate() == [(CANARY, State.FIRING)]
    [worse] = r.events("judge")
    assert (worse.version, worse.rule, worse.state, worse.actor) == (
        CANARY, "canary-judge", "worse", "judge")
    assert worse.value == pytest.approx(0.5)
    detail = worse.detail
    assert detail["stable"] == STABLE and detail["previous"] == "undecided"
    assert detail["low"] > 0 and detail["high"] > detail["effect"] == pytest.approx(0.5)
    assert detail["evidence"] >= 100 and detail["p_value"] <= 0.01
    assert (detail["samples_canary"], detail["samples_stable"], detail["periods"]) == (
        130, 390, 7)
    assert (detail["alpha"], detail["min_effect"], detail["period_s"]) == (0.01, 0.1, 900.0)
    assert worse.reason.startswith(f"worse than {STABLE}: effect +50.0% [")
    [alert] = r.events("alert")
    assert (alert.state, alert.reason, alert.value) == (
        "firing", "judge worse than stable (alpha 0.01)", pytest.approx(0.5))
    [rollback] = r.events("rollback")
    assert rollback.actor == "alert:canary-judge"
    assert rollback.reason.startswith(f"canary-judge: judge: {CANARY} worse than {STABLE}")
    routes = r.state.current.table.models[MODEL]
    assert routes.override is not None and routes.effective_weight(CANARY) == 0
    # Later looks, whatever they say, change nothing: the decision is made.
    spread(r.store, r.wall, periods=3, per_period=80, canary=[1.0], stable=[2.0, -2.0])
    assert r.evaluate() == [] and r.evaluate() == []
    assert [len(r.events(k)) for k in ("judge", "alert", "rollback")] == [1, 1, 1]
    assert r.engine.instances()[0].decided == Outcome.WORSE

    # A restart: the event log restores the firing alert and the decision; nothing repeats.
    again = r.restarted()
    assert again.evaluate() == []
    [restored] = again.engine.instances()
    assert (restored.state, restored.decided) == (State.FIRING, Outcome.WORSE)
    assert [len(r.events(k)) for k in ("judge", "alert", "rollback")] == [1, 1, 1]


def test_a_canary_as_good_as_stable_is_recommended_and_nothing_moves(rig: Any) -> None:
    r: Rig = rig(JUDGE_RULE.replace('action = "rollback"', 'action = "rollback"\n'
                                                           'min_effect = 0.5'))
    generation = r.state.current.generation
    spread(r.store, r.wall, periods=8, per_period=120, canary=[2.0, -4.0, 3.0],
           stable=[-3.0, 2.0, 4.0])
    assert r.evaluate() == []
    [not_worse] = r.events("judge")
    assert (not_worse.state, not_worse.detail["previous"]) == ("not_worse", "undecided")
    assert not_worse.reason.startswith(f"not worse than {STABLE} by 50%: effect +0.0% [")
    assert not_worse.detail["high"] < 0.5
    assert r.events("alert") == [] and r.events("rollback") == []
    assert r.state.current.generation == generation
    [instance] = r.engine.instances()
    assert (instance.state, instance.decided) == (State.INACTIVE, Outcome.NOT_WORSE)
    assert r.evaluate() == [] and len(r.events("judge")) == 1
    # After a restart the recommendation stands, and is not made again.
    again = r.restarted()
    assert again.evaluate() == []
    assert again.engine.instances()[0].decided == Outcome.NOT_WORSE
    assert len(r.events("judge")) == 1
