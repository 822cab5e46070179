"""Outcome feedback and the event log on the real server, over gRPC.

Predict, ReportOutcome the actuals (as transit days and as delivery dates), and admin
GetAccuracy agrees with figures computed here from the Predict responses. Batches are all
or nothing: unknown ids, conflicting actuals and malformed outcomes record nothing.
A server without a database refuses feedback with UNAVAILABLE but still predicts.
Rollbacks, cleared overrides and applied configs are listed by ListEvents, in order, across
restarts, and an admin rollback survives a SIGTERM restart.

Every outcome the shared server records is entered in a ledger, so each test can check the
server's accuracy figures against everything reported so far, whatever ran before it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import grpc
import pytest
from waybill.v1 import admin_pb2
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ServerProcess
from tests.routing_fixtures import admin, reload, routing, routing_text, split, write_atomically
from tests.test_server_predict import struct_rows, violations

MODEL = "delivery_eta"
Row = dict[str, object]


# ----------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Predicted:
    """One answered row, as the Predict response described it."""

    prediction_id: str
    version: str
    median: float
    lower: float
    upper: float
    order_date: date | None
    promised: date | None  # the response's delivery_date


@dataclass
class Ledger:
    """Outcomes the shared server recorded, with the terms computed from the responses."""

    # prediction_id -> (version, actual days, the prediction)
    recorded: dict[str, tuple[str, float, Predicted]] = field(default_factory=dict)

    def add(self, p: Predicted, actual: float) -> None:
        assert p.prediction_id not in self.recorded
        self.recorded[p.prediction_id] = (p.version, actual, p)

    def expected(self) -> dict[str, dict[str, float | int | None]]:
        by_version: dict[str, list[tuple[float, Predicted]]] = {}
        for version, actual, p in self.recorded.values():
            by_version.setdefault(version, []).append((actual, p))
        out: dict[str, dict[str, float | int | None]] = {}
        for version, items in by_version.items():
            n = len(items)
            errors = [p.median - actual for actual, p in items]
            promised = [(actual, p) for actual, p in items if p.promised is not None]
            on_time = None
            if promised:
                on_time = sum(
                    actual <= (p.promised - p.order_date).days  # type: ignore[operator]
                    for actual, p in promised) / len(promised)
            out[version] = {
                "outcomes": n,
                "mae": sum(abs(e) for e in errors) / n,
                "bias": sum(errors) / n,
                "coverage": sum(p.lower <= actual <= p.upper for actual, p in items) / n,
                "on_time": on_time,
            }
        return out


def predict(stub: pb_grpc.PredictionServiceStub, rows: Sequence[Row],
            version: str = "") -> list[Predicted]:
    reply = stub.Predict(pb.PredictRequest(model=MODEL, rows=struct_rows(list(rows)),
                                           version=version), timeout=10)
    out = []
    for row, p in zip(rows, reply.predictions, strict=True):
        order = date.fromisoformat(str(row["order_date"])) if "order_date" in row else None
        out.append(Predicted(p.prediction_id, reply.version, p.transit_days, p.interval.lower,
                             p.interval.upper, order,
                             date.fromisoformat(p.delivery_date) if p.delivery_date else None))
    return out


def by_days(pid: str, days: float) -> pb.Outcome:
    return pb.Outcome(prediction_id=pid, transit_days=days)


def by_date(pid: str, day: date | str) -> pb.Outcome:
    return pb.Outcome(prediction_id=pid,
                      delivery_date=day if isinstance(day, str) else day.isoformat())


def report(stub: pb_grpc.PredictionServiceStub,
           outcomes: Sequence[pb.Outcome]) -> pb.ReportOutcomeResponse:
    reply: pb.ReportOutcomeResponse = stub.ReportOutcome(
        pb.ReportOutcomeRequest(outcomes=outcomes), timeout=10)
    return reply


def refused(stub: pb_grpc.PredictionServiceStub, outcomes: Sequence[pb.Outcome],
            code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        report(stub, outcomes)
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def accuracy(admin_target: str, window_seconds: float = 0.0,
             ) -> dict[str, admin_pb2.VersionAccuracy]:
    reply = admin(admin_target).GetAccuracy(
        admin_pb2.GetAccuracyRequest(model=MODEL, window_seconds=window_seconds), timeout=10)
    assert all(v.model == MODEL for v in reply.versions)
    return {v.version: v for v in reply.versions}


def assert_matches(found: dict[str, admin_pb2.VersionAccuracy], ledger: Ledger) -> None:
    expected = ledger.expected()
    assert sorted(found) == sorted(expected)
    for version, want in expected.items():
        got = found[version]
        assert got.outcomes == want["outcomes"], version
        for name in ("mae", "bias", "coverage"):
            assert getattr(got, name) == pytest.approx(want[name], rel=1e-9, abs=1e-12), \
                (version, name)
        if want["on_time"] is None:
            assert not got.HasField("on_time"), version
        else:
            assert got.HasField("on_time"), version
            assert got.on_time == pytest.approx(want["on_time"], rel=1e-9), version


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> pb_grpc.PredictionServiceStub:
    return pb_grpc.PredictionServiceStub(server.channel())


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def fresh(stub: pb_grpc.PredictionServiceStub, rows: list[Row]) -> list[Predicted]:
    """Eight new dated predictions of the default version, none reported yet."""
    return predict(stub, rows[100:108])


# ----------------------------------------------------------------------------- accuracy


def test_accuracy_per_version_matches_the_predictions_and_actuals(
    server: ServerProcess, stub: pb_grpc.PredictionServiceStub, rows: list[Row],
    ledger: Ledger,
) -> None:
    assert_matches(accuracy(server.admin_target), ledger)  # whatever ran before
    old = predict(stub, rows[:30], version="1.0.0")
    new = predict(stub, rows[30:60], version="1.1.0")
    assert {p.version for p in old} == {"1.0.0"}
    assert {p.version for p in new} == {"1.1.0"}
    assert all(p.order_date is not None and p.promised is not None for p in old + new)

    outcomes, actuals = [], []
    for i, p in enumerate(old + new):
        # Around the median, both sides of the interval and of the promise, some fractional.
        actual = max(0.0, float(round(p.median)) + (i % 7) - 3)
        if i % 5 == 0:
            actual += 0.5
        if p.order_date is not None and i % 2 == 0 and actual == int(actual):
            outcomes.append(by_date(p.prediction_id, p.order_date + timedelta(days=int(actual))))
        else:
            outcomes.append(by_days(p.prediction_id, actual))
        actuals.append((p, actual))
    assert sum(o.WhichOneof("actual") == "delivery_date" for o in outcomes) >= 10

    reply = report(stub, outcomes)
    assert (reply.recorded, reply.duplicates) == (len(outcomes), 0)
    for p, actual in actuals:
        ledger.add(p, actual)

    found = accuracy(server.admin_target)
    assert_matches(found, ledger)
    # The figures are not degenerate: there are misses, late and early deliveries.
    for version in ("1.0.0", "1.1.0"):
        assert 0 < found[version].coverage < 1
        assert 0 < found[version].on_time < 1
        assert found[version].mae > 0


def test_accuracy_window_bounds_the_outcomes(server: ServerProcess, ledger: Ledger) -> None:
    every = accuracy(server.admin_target, window_seconds=366 * 86400)
    assert_matches(every, ledger)
    reply = admin(server.admin_target).GetAccuracy(
        admin_pb2.GetAccuracyRequest(model=MODEL), timeout=10)
    assert reply.window_seconds > 0  # the server default, echoed


def test_accuracy_needs_a_known_model(server: ServerProcess) -> None:
    stub = admin(server.admin_target)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetAccuracy(admin_pb2.GetAccuracyRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(caught.value)] == ["model"]
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetAccuracy(admin_pb2.GetAccuracyRequest(model="no_such_model"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_model" in (caught.value.details() or "")
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetAccuracy(admin_pb2.GetAccuracyRequest(model=MODEL, window_seconds=-5),
                         timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ----------------------------------------------------------------------------- all or nothing


def test_unknown_id_is_not_found_and_records_nothing(
    server: ServerProcess, stub: pb_grpc.PredictionServiceStub, fresh: list[Predicted],
    ledger: Ledger,
) -> None:
    before = accuracy(server.admin_target)
    unknown = uuid.uuid4().hex
    err = refused(stub, [by_days(fresh[0].prediction_id, 3), by_days(unknown, 2),
                         by_days(fresh[1].prediction_id, 4)], grpc.StatusCode.NOT_FOUND)
    assert unknown in (err.details() or "")
    assert fresh[0].prediction_id not in (err.details() or "")
    assert accuracy(server.admin_target) == before
    # The known ids were not recorded: they are new now, not duplicates.
    reply = report(stub, [by_days(fresh[0].prediction_id, 3), by_days(fresh[1].prediction_id, 4)])
    assert (reply.recorded, reply.duplicates) == (2, 0)
    ledger.add(fresh[0], 3)
    ledger.add(fresh[1], 4)
    assert_matches(accuracy(server.admin_target), ledger)


def test_same_report_twice_is_a_no_op(
    server: ServerProcess, stub: pb_grpc.PredictionServiceStub, fresh: list[Predicted],
    ledger: Ledger,
) -> None:
    first = fresh[:5]
    batch = [by_days(p.prediction_id, 2.0 + i) for i, p in enumerate(first)]
    reply = report(stub, batch)
    assert (reply.recorded, reply.duplicates) == (5, 0)
    for i, p in enumerate(first):
        ledger.add(p, 2.0 + i)
    after_first = accuracy(server.admin_target)
    assert_matches(after_first, ledger)

    again = report(stub, batch)
    assert (again.recorded, again.duplicates) == (0, 5)
    assert accuracy(server.admin_target) == after_first

    # The same actual as a delivery date is the same report too, and so is a repeat
    # inside one batch: recorded once, counted as a duplicate.
    assert first[0].order_date is not None
    same = report(stub, [by_date(first[0].prediction_id, first[0].order_date + timedelta(2))])
    assert (same.recorded, same.duplicates) == (0, 1)
    p = fresh[5]
    twice = report(stub, [by_days(p.prediction_id, 1.5), by_days(p.prediction_id, 1.5)])
    assert (twice.recorded, twice.duplicates) == (1, 1)
    ledger.add(p, 1.5)
    assert_matches(accuracy(server.admin_target), ledger)


def test_different_actual_for_a_reported_id_is_already_exists(
    server: ServerProcess, stub: pb_grpc.PredictionServiceStub, fresh: list[Predicted],
    ledger: Ledger,
) -> None:
    done, other = fresh[0], fresh[1]
    assert report(stub, [by_days(done.prediction_id, 3)]).recorded == 1
    ledger.add(done, 3)
    before = accuracy(server.admin_target)
    err = refused(stub, [by_days(other.prediction_id, 2), by_days(done.prediction_id, 4)],
                  grpc.StatusCode.ALREADY_EXISTS)
    assert done.prediction_id in (err.details() or "")
    assert done.order_date is not None
    refused(stub, [by_date(done.prediction_id, done.order_date + timedelta(5))],
            grpc.StatusCode.ALREADY_EXISTS)
    assert accuracy(server.admin_target) == before
    # `other` came before the conflict in the refused batch and was not recorded.
    assert report(stub, [by_days(other.prediction_id, 2)]).recorded == 1
    ledger.add(other, 2)
    assert_matches(accuracy(server.admin_target), ledger)


def test_two_actuals_for_one_id_in_one_batch_are_refused(
    server: ServerProcess, stub: pb_grpc.PredictionServiceStub, fresh: list[Predicted],
) -> None:
    before = accuracy(server.admin_target)
    pid = fresh[0].prediction_id
    with pytest.raises(grpc.RpcError) as caught:
        report(stub, [by_days(pid, 2), by_days(pid, 3)])
    assert caught.value.code() in (grpc.StatusCode.ALREADY_EXISTS,
                                   grpc.StatusCode.INVALID_ARGUMENT)
    assert accuracy(server.admin_target) == before


@pytest.mark.parametrize(("bad", "field"), [
    (lambda p: by_days(p.prediction_id, -1.0), "outcomes[1].transit_days"),
    (lambda p: by_days(p.prediction_id, math.nan), "outcomes[1].transit_days"),
    (lambda p: by_days(p.prediction_id, math.inf), "outcomes[1].transit_days"),
    (lambda p: by_date(p.prediction_id, "2025-02-30"), "outcomes[1].delivery_date"),
    (lambda p: by_date(p.prediction_id, "03/01/2025"), "outcomes[1].delivery_date"),
    (lambda p: by_date(p.prediction_id, "2025-1-3"), "outcomes[1].delivery_date"),
    (lambda p: by_date(p.prediction_id, ""), "outcomes[1].delivery_date"),
    (lambda p: by_date(p.prediction_id, p.order_date - timedelta(1)),
     "outcomes[1].delivery_date"),
    (lambda p: pb.Outcome(prediction_id=p.prediction_id), "outcomes[1].actual"),
    (lambda p: pb.Outcome(transit_days=2), "outcomes[1].prediction_id"),
], ids=["negative", "nan", "inf", "no_such_day", "slashes", "short", "empty_date",
        "before_order", "no_actual", "no_id"])
def test_malformed_outcome_is_invalid_argument_naming_the_field(
    server: ServerProcess, stub: pb_grpc.PredictionServiceStub, fresh: list[Predicted],
    bad: object, field: str,
) -> None:
    before = accuracy(server.admin_target)
    outcome = bad(fresh[1])  # type: ignore[operator]
    err = refused(stub, [by_days(fresh[0].prediction_id, 2), outcome],
                  grpc.StatusCode.INVALID_ARGUMENT)
    fields = [f for f, _ in violations(err)]
    assert fields == [field], (fields, err.details())
    assert accuracy(server.admin_target) == before  # outcomes[0] was fine, and not recorded


def test_batch_size_limits(server: ServerProcess, stub: pb_grpc.PredictionServiceStub,
                           fresh: list[Predicted]) -> None:
    before = accuracy(server.admin_target)
    err = refused(stub, [], grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in violations(err)] == ["outcomes"]
    pid = fresh[0].prediction_id
    too_many = [by_days(pid, 2)] * 1001
    err = refused(stub, too_many, grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in violations(err)] == ["outcomes"]
    assert "1000" in (err.details() or "")
    assert accuracy(server.admin_target) == before
    # Exactly 1000 is fine (one new outcome and 999 repeats of it).
    reply = report(stub, too_many[:1000])
    assert (reply.recorded, reply.duplicates) == (1, 999)


# ----------------------------------------------------------------------------- no database


def test_without_database_feedback_is_unavailable_and_predict_works(
    registry: Path, tmp_path: Path, rows: list[Row],
) -> None:
    with ServerProcess(tmp_path, "--registry", str(registry), "--no-database") as server:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        (p,) = predict(stub, rows[:1])
        assert p.prediction_id
        calls: list[Callable[[], object]] = [
            lambda: report(stub, [by_days(p.prediction_id, 2)]),
            lambda: admin(server.admin_target).GetAccuracy(
                admin_pb2.GetAccuracyRequest(model=MODEL), timeout=10),
            lambda: admin(server.admin_target).ListEvents(admin_pb2.ListEventsRequest(),
                                                          timeout=10),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "database" in (caught.value.details() or "")
        # Still serving after the refusals.
        assert len(predict(stub, rows[:3])) == 3
    assert not (tmp_path / "waybill.db").exists()


# ----------------------------------------------------------------------------- events


@pytest.fixture
def routed(registry: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    config = tmp_path / "routing.toml"
    config.write_text(routing_text(split(10)))
    server = ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                           "--routing-poll", "0")
    with server:
        yield server, config


def events(target: str, **request: object) -> list[admin_pb2.Event]:
    reply = admin(target).ListEvents(admin_pb2.ListEventsRequest(**request), timeout=10)
    return list(reply.events)


def override_of(target: str) -> admin_pb2.Override | None:
    (model,) = routing(target).models
    return model.override if model.HasField("override") else None


def test_events_are_listed_in_order_filtered_and_kept_across_restarts(
    routed: tuple[ServerProcess, Path], rows: list[Row],
) -> None:
    server, config = routed
    control = admin(server.admin_target)
    started = events(server.admin_target)
    assert [(e.kind, e.reason, e.model) for e in started] == [("config_applied", "start", "")]

    rolled = control.Rollback(admin_pb2.RollbackRequest(model=MODEL, reason="canary is late"),
                              timeout=10)
    assert rolled.changed
    assert control.ClearOverride(admin_pb2.ClearOverrideRequest(model=MODEL), timeout=10).changed
    write_atomically(config, routing_text(split(30), comment="thirty"))
    assert reload(server.admin_target).changed

    listed = events(server.admin_target)
    assert [e.kind for e in listed] == ["config_applied", "rollback", "override_cleared",
                                       "config_applied"]
    ids = [e.id for e in listed]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [e.at for e in listed] == sorted(e.at for e in listed)
    start, rollback, cleared, applied = listed
    assert (rollback.model, rollback.actor, rollback.reason) == (MODEL, "admin", "canary is late")
    assert "1.1.0" in rollback.version
    assert (cleared.model, cleared.actor) == (MODEL, "admin")
    assert (applied.model, applied.reason) == ("", "admin")
    assert '"generation"' in applied.detail_json

    # Filters: after_id, kinds, model, limit.
    assert events(server.admin_target, after_id=rollback.id) == [cleared, applied]
    assert events(server.admin_target, after_id=applied.id) == []
    assert events(server.admin_target, kinds=["rollback", "override_cleared"]) == [rollback,
                                                                                  cleared]
    assert events(server.admin_target, kinds=["config_applied"]) == [start, applied]
    assert events(server.admin_target, kinds=["alert"]) == []
    assert events(server.admin_target, model=MODEL) == [rollback, cleared]
    assert events(server.admin_target, limit=2) == [start, rollback]
    assert events(server.admin_target, after_id=start.id, limit=1) == [rollback]

    # A restarted server keeps them, and records its own start after them.
    server.stop()
    server.start()
    again = events(server.admin_target)
    assert again[:4] == listed
    assert [(e.kind, e.reason) for e in again[4:]] == [("config_applied", "start")]
    assert again[4].id > applied.id
    assert override_of(server.admin_target) is None


def test_an_unknown_event_kind_is_invalid_argument_listing_the_kinds(
    server: ServerProcess,
) -> None:
    every_kind = ["alert", "config_applied", "judge", "override_cleared", "rollback"]
    assert "config_applied" in {e.kind for e in events(server.admin_target, kinds=every_kind)}
    with pytest.raises(grpc.RpcError) as caught:
        events(server.admin_target, kinds=["rollback", "rolback"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [("kinds[1]", "is not an event kind; the kinds are "
                                         "alert, config_applied, judge, override_cleared, "
                                         "rollback")]


def test_a_rollback_with_nothing_to_roll_back_changes_and_records_nothing(
    routed: tuple[ServerProcess, Path],
) -> None:
    server, config = routed
    control = admin(server.admin_target)

    def rollback() -> admin_pb2.RollbackResponse:
        return control.Rollback(admin_pb2.RollbackRequest(model=MODEL, reason="just in case"),
                                timeout=10)

    # Already rolled back: the first rollback is the only one.
    assert rollback().changed
    assert not rollback().changed
    assert control.ClearOverride(admin_pb2.ClearOverrideRequest(model=MODEL), timeout=10).changed
    # No canary: stable is the only route with traffic, or the canary's weight is 0.
    for routes in ([("1.0.0", 100, "stable")], [("1.0.0", 100, "stable"), ("1.1.0", 0, "c")]):
        write_atomically(config, routing_text(routes))
        assert reload(server.admin_target).changed
        reply = rollback()
        assert not reply.changed
        assert not reply.routing.HasField("override")
        assert override_of(server.admin_target) is None
    assert len(events(server.admin_target, kinds=["rollback"])) == 1


def test_admin_rollback_survives_a_sigterm_restart_and_clear_does_too(
    routed: tuple[ServerProcess, Path], rows: list[Row],
) -> None:
    server, _ = routed
    control = admin(server.admin_target)
    control.Rollback(admin_pb2.RollbackRequest(model=MODEL, reason="p95 too high"), timeout=10)
    assert server.stop() == 0  # SIGTERM
    server.start()
    override = override_of(server.admin_target)
    assert override is not None
    assert (override.actor, override.reason) == ("admin", "p95 too high")
    assert list(override.rolled_back) == ["1.1.0"]
    stub = pb_grpc.PredictionServiceStub(server.channel())
    reply = stub.Predict(pb.PredictRequest(model=MODEL, rows=struct_rows(rows[:1])), timeout=10)
    assert (reply.version, reply.route_reason) == ("1.0.0", pb.ROUTE_REASON_OVERRIDE)

    assert admin(server.admin_target).ClearOverride(
        admin_pb2.ClearOverrideRequest(model=MODEL), timeout=10).changed
    assert server.stop() == 0
    server.start()
    assert override_of(server.admin_target) is None
    kinds = [e.kind for e in events(server.admin_target)]
    assert kinds == ["config_applied", "rollback", "config_applied", "override_cleared",
                     "config_applied"]
