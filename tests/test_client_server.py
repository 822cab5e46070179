"""The Python client against the real server: typed results, pins, typed errors."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc
from waybill_client import (
    AsyncWaybillClient,
    InvalidArgument,
    NotFound,
    PredictResult,
    Unavailable,
    WaybillClient,
    pin,
)

from tests.harness import ServerProcess
from tests.test_server_predict import struct_rows


def test_predict_returns_typed_results(server: ServerProcess,
                                       rows: list[dict[str, object]]) -> None:
    with WaybillClient(server.target, timeout=5) as client:
        result = client.predict("delivery_eta", rows[:3], version="1.0.0")
    assert (result.model, result.version, result.route_reason) == ("delivery_eta", "1.0.0",
                                                                   "pinned")
    assert len(result.predictions) == 3
    first = result.predictions[0]
    assert isinstance(first.delivery_date, date)
    assert first.lower <= first.transit_days <= first.upper
    assert first.coverage == pytest.approx(0.8)


def test_invalid_argument_carries_every_violation(server: ServerProcess,
                                                  rows: list[dict[str, object]]) -> None:
    bad = dict(rows[0]) | {"day_of_week": 9, "service_level": "teleport"}
    with WaybillClient(server.target, timeout=5) as client, \
            pytest.raises(InvalidArgument) as caught:
        client.predict("delivery_eta", [rows[0], bad])
    fields = sorted(v.field for v in caught.value.violations)
    assert fields == ["rows[1].day_of_week", "rows[1].service_level"]


def test_not_found_names_the_model(server: ServerProcess, rows: list[dict[str, object]]) -> None:
    with WaybillClient(server.target, timeout=5) as client, pytest.raises(NotFound) as caught:
        client.get_model("no_such_model")
    assert "no_such_model" in str(caught.value)


def test_async_client_lists_models(server: ServerProcess) -> None:
    async def go() -> list[str]:
        async with AsyncWaybillClient(server.target, timeout=5) as client:
            models = await client.list_models()
        return [m.name for m in models]

    assert asyncio.run(go()) == ["delivery_eta"]


def test_unavailable_after_retries_when_nothing_listens(tmp_path: Path,
                                                        rows: list[dict[str, object]]) -> None:
    # A server that stopped leaves its port closed: the client retries, then raises.
    server = ServerProcess(tmp_path, "--registry", str(Path(__file__).parent.parent / "models"))
    with server:
        target = server.target
    with WaybillClient(target, timeout=1.0, retries=2, backoff=0.01) as client, \
            pytest.raises(Unavailable):
        client.predict("delivery_eta", rows[:1])


# --------------------------------------------------------------------------- columns


def _twenty(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """20 rows over several order dates, an optional feature missing from some."""
    sent = [dict(row) for row in rows[::10]]
    sent[4]["weight_kg"] = None
    sent[9].pop("weight_kg", None)
    return sent


def _same_predictions(result: PredictResult, expected: PredictResult) -> None:
    got, want = result.predictions, expected.predictions
    assert len(got) == len(want)
    for field in ("transit_days", "lower", "upper", "coverage"):
        assert [getattr(p, field) for p in got] == pytest.approx(
            [getattr(p, field) for p in want]), field
    assert [p.delivery_date for p in got] == [p.delivery_date for p in want]
    assert [p.latest_delivery_date for p in got] == [p.latest_delivery_date for p in want]
    assert len({p.prediction_id for p in got}) == len(got) and all(
        p.prediction_id for p in got)


def test_big_requests_go_as_columns_and_answer_what_struct_rows_get(
        server: ServerProcess, rows: list[dict[str, object]]) -> None:
    sent = _twenty(rows)
    stub = pb_grpc.PredictionServiceStub(server.channel())
    raw = stub.Predict(pb.PredictRequest(model="delivery_eta", rows=struct_rows(sent)),
                       metadata=pin("1.1.0"), timeout=10)
    assert len(raw.predictions) == 20 and not raw.HasField("columns")
    with WaybillClient(server.target, timeout=10) as client:
        result = client.predict("delivery_eta", sent, version="1.1.0")
        as_rows = client.predict("delivery_eta", sent, version="1.1.0", columns=False)
    assert result.response.HasField("columns") and not result.response.predictions
    assert not as_rows.response.HasField("columns")
    assert (result.model, result.version, result.route_reason) == (raw.model, raw.version,
                                                                   "pinned")
    _same_predictions(result, as_rows)
    expected = raw.predictions
    assert [p.transit_days for p in result.predictions] == pytest.approx(
        [p.transit_days for p in expected])
    assert [p.lower for p in result.predictions] == pytest.approx(
        [p.interval.lower for p in expected])
    assert [p.upper for p in result.predictions] == pytest.approx(
        [p.interval.upper for p in expected])
    assert [p.coverage for p in result.predictions] == pytest.approx(
        [p.interval.coverage for p in expected])
    assert [str(p.delivery_date) for p in result.predictions] == [
        p.delivery_date for p in expected]
    assert [str(p.latest_delivery_date) for p in result.predictions] == [
        p.latest_delivery_date for p in expected]
    assert len({str(p.delivery_date) for p in result.predictions}) > 1  # not one date only


def test_a_bad_value_in_a_columnar_request_is_named_by_column_and_row(
        server: ServerProcess, rows: list[dict[str, object]]) -> None:
    bad = _twenty(rows)
    bad[7]["day_of_week"] = 9
    bad[12]["service_level"] = "teleport"
    expected = ["columns.day_of_week[7]", "columns.service_level[12]"]
    with WaybillClient(server.target, timeout=10) as client:
        with pytest.raises(InvalidArgument) as caught:
            client.predict("delivery_eta", bad)
        streamed = list(client.predict_stream("delivery_eta", [bad]))
    assert sorted(v.field for v in caught.value.violations) == expected
    assert len(streamed) == 1 and isinstance(streamed[0], InvalidArgument)
    assert sorted(v.field for v in streamed[0].violations) == expected


def test_a_feature_mixing_types_goes_as_rows_named_per_row(
        server: ServerProcess, rows: list[dict[str, object]]) -> None:
    bad = _twenty(rows)
    bad[3]["carrier"] = 7
    with WaybillClient(server.target, timeout=10) as client, \
            pytest.raises(InvalidArgument) as caught:
        client.predict("delivery_eta", bad)
    assert [v.field for v in caught.value.violations] == ["rows[3].carrier"]


def test_async_client_sends_big_requests_and_stream_requests_as_columns(
        server: ServerProcess, rows: list[dict[str, object]]) -> None:
    sent = _twenty(rows)
    bad = _twenty(rows)
    bad[7]["day_of_week"] = 9

    async def go() -> tuple[PredictResult, list[PredictResult | Exception]]:
        async with AsyncWaybillClient(server.target, timeout=10) as client:
            unary = await client.predict("delivery_eta", sent, version="1.0.0")
            answers = [a async for a in client.predict_stream(
                "delivery_eta", [sent, rows[:3], bad], version="1.0.0")]
        return unary, answers

    unary, (big, small, error) = asyncio.run(go())
    with WaybillClient(server.target, timeout=10) as client:
        expected = client.predict("delivery_eta", sent, version="1.0.0", columns=False)
    assert isinstance(big, PredictResult) and isinstance(small, PredictResult)
    assert unary.response.HasField("columns") and big.response.HasField("columns")
    assert len(small.predictions) == 3 and not small.response.HasField("columns")
    assert unary.version == big.version == "1.0.0"
    _same_predictions(unary, expected)
    _same_predictions(big, expected)
    assert isinstance(error, InvalidArgument)
    assert [v.field for v in error.violations] == ["columns.day_of_week[7]"]
