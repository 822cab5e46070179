"""The Python client against the real server: typed results, pins, typed errors."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest
from waybill_client import (
    AsyncWaybillClient,
    InvalidArgument,
    NotFound,
    Unavailable,
    WaybillClient,
)

from tests.harness import ServerProcess


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
