"""The Python client's report_outcomes against the real server: sync and asyncio."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import date, datetime, timedelta

import pytest
from waybill.v1 import admin_pb2
from waybill_client import (
    AlreadyExists,
    AsyncWaybillClient,
    InvalidArgument,
    NotFound,
    OutcomeReport,
    PredictResult,
    WaybillClient,
    WaybillError,
)

from tests.harness import ServerProcess
from tests.routing_fixtures import admin

MODEL = "delivery_eta"
Row = dict[str, object]


def outcomes_recorded(server: ServerProcess) -> int:
    reply = admin(server.admin_target).GetAccuracy(admin_pb2.GetAccuracyRequest(model=MODEL),
                                                   timeout=10)
    return sum(v.outcomes for v in reply.versions)


def order_date(row: Row) -> date:
    return date.fromisoformat(str(row["order_date"]))


def test_report_outcomes_as_days_dates_and_strings(server: ServerProcess,
                                                   rows: list[Row]) -> None:
    before = outcomes_recorded(server)
    with WaybillClient(server.target, timeout=5) as client:
        result = client.predict(MODEL, rows[:4])
        ids = [p.prediction_id for p in result.predictions]
        batch = [
            (ids[0], 3),  # int days
            (ids[1], 2.5),  # float days
            (ids[2], order_date(rows[2]) + timedelta(days=4)),  # datetime.date
            (ids[3], (order_date(rows[3]) + timedelta(days=1)).isoformat()),  # YYYY-MM-DD
        ]
        first = client.report_outcomes(iter(batch))  # any iterable
        assert first == OutcomeReport(recorded=4, duplicates=0)
        assert outcomes_recorded(server) == before + 4

        # The same actuals again (a date given as the equal number of days too): a no-op.
        again = client.report_outcomes([*batch, (ids[2], 4.0)])
        assert again == OutcomeReport(recorded=0, duplicates=5)
        assert outcomes_recorded(server) == before + 4


def test_unknown_id_raises_not_found_and_records_nothing(server: ServerProcess,
                                                         rows: list[Row]) -> None:
    unknown = uuid.uuid4().hex
    with WaybillClient(server.target, timeout=5) as client:
        (p,) = client.predict(MODEL, rows[10:11]).predictions
        before = outcomes_recorded(server)
        with pytest.raises(NotFound) as caught:
            client.report_outcomes([(p.prediction_id, 2), (unknown, 3)])
        assert unknown in caught.value.message
        assert isinstance(caught.value, WaybillError)
        assert outcomes_recorded(server) == before
        assert client.report_outcomes([(p.prediction_id, 2)]).recorded == 1


def test_different_actual_raises_already_exists(server: ServerProcess, rows: list[Row]) -> None:
    with WaybillClient(server.target, timeout=5) as client:
        (p,) = client.predict(MODEL, rows[20:21]).predictions
        client.report_outcomes([(p.prediction_id, 2)])
        with pytest.raises(AlreadyExists) as caught:
            client.report_outcomes([(p.prediction_id, 5)])
        assert p.prediction_id in caught.value.message


def test_server_refusals_are_invalid_argument_with_violations(server: ServerProcess,
                                                              rows: list[Row]) -> None:
    with WaybillClient(server.target, timeout=5) as client:
        result: PredictResult = client.predict(MODEL, rows[30:32])
        a, b = (p.prediction_id for p in result.predictions)
        ordered = order_date(rows[31])
        with pytest.raises(InvalidArgument) as caught:
            client.report_outcomes([(a, 1), (b, -1)])
        assert [v.field for v in caught.value.violations] == ["outcomes[1].transit_days"]
        with pytest.raises(InvalidArgument) as caught:
            client.report_outcomes([(a, 1), (b, ordered - timedelta(days=1))])
        assert [v.field for v in caught.value.violations] == ["outcomes[1].delivery_date"]
        with pytest.raises(InvalidArgument) as caught:
            client.report_outcomes([])
        assert [v.field for v in caught.value.violations] == ["outcomes"]
        with pytest.raises(InvalidArgument):
            client.report_outcomes([(a, 1)] * 1001)


@pytest.mark.parametrize(("outcomes", "error", "where"), [
    ({"id": 1}, TypeError, "items()"),
    ("id", TypeError, "not str"),
    ([("id",)], TypeError, "outcomes[0]"),
    (["ab"], TypeError, "outcomes[0]"),
    ([(1, 2)], TypeError, "outcomes[0].prediction_id"),
    ([("id", True)], TypeError, "outcomes[0]"),
    ([("id", None)], TypeError, "outcomes[0]"),
    ([("id", datetime(2025, 1, 2))], TypeError, "outcomes[0]"),
    ([("ok", 1), ("id", math.nan)], ValueError, "outcomes[1].transit_days"),
    ([("id", math.inf)], ValueError, "outcomes[0].transit_days"),
    ([("id", "2025/01/02")], ValueError, "outcomes[0].delivery_date"),
    ([("id", "2025-02-30")], ValueError, "outcomes[0].delivery_date"),
    ([("id", "2025-W01-1")], ValueError, "outcomes[0].delivery_date"),
    ([("id", "")], ValueError, "outcomes[0].delivery_date"),
])
def test_unsendable_outcomes_raise_before_the_call(outcomes: object, error: type[Exception],
                                                   where: str) -> None:
    # Nothing listens here: the error must come from the conversion, not the network.
    with WaybillClient("127.0.0.1:9", timeout=0.5, retries=0) as client, \
            pytest.raises(error) as caught:
        client.report_outcomes(outcomes)
    assert where in str(caught.value)


def test_async_client_reports_and_raises_typed_errors(server: ServerProcess,
                                                      rows: list[Row]) -> None:
    async def go() -> None:
        async with AsyncWaybillClient(server.target, timeout=5) as client:
            result = await client.predict(MODEL, rows[40:43])
            ids = [p.prediction_id for p in result.predictions]
            batch = [(ids[0], 1.0), (ids[1], order_date(rows[41]) + timedelta(days=2)),
                     (ids[2], 6)]
            assert await client.report_outcomes(batch) == OutcomeReport(3, 0)
            assert await client.report_outcomes(batch) == OutcomeReport(0, 3)
            with pytest.raises(NotFound):
                await client.report_outcomes([(uuid.uuid4().hex, 1)])
            with pytest.raises(AlreadyExists):
                await client.report_outcomes([(ids[2], 7)])
            with pytest.raises(InvalidArgument) as caught:
                await client.report_outcomes([(ids[0], -3)])
            assert [v.field for v in caught.value.violations] == ["outcomes[0].transit_days"]

    asyncio.run(go())
