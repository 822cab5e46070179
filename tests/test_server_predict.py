"""The real server over gRPC: two versions side by side, pins, validation, NOT_FOUND, limits."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from tests.harness import ServerProcess


def struct_rows(rows: list[dict[str, object]]) -> list[struct_pb2.Struct]:
    out = []
    for row in rows:
        s = struct_pb2.Struct()
        s.update(row)
        out.append(s)
    return out


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> pb_grpc.PredictionServiceStub:
    return pb_grpc.PredictionServiceStub(server.channel())


def predict(
    stub: pb_grpc.PredictionServiceStub,
    rows: list[dict[str, object]],
    version: str = "",
    metadata: tuple[tuple[str, str], ...] = (),
    model: str = "delivery_eta",
    timeout: float = 10.0,
) -> tuple[pb.PredictResponse, dict[str, str]]:
    response, call = stub.Predict.with_call(
        pb.PredictRequest(model=model, rows=struct_rows(rows), version=version),
        metadata=metadata, timeout=timeout,
    )
    return response, dict(call.initial_metadata())


def columns_of(rows: list[dict[str, object]]) -> list[pb.Column]:
    """The rows as a columnar request's columns (None values listed as missing)."""
    out = []
    for name in rows[0]:
        values = [row.get(name) for row in rows]
        present = [v for v in values if v is not None]
        column = pb.Column(name=name, missing=[i for i, v in enumerate(values) if v is None])
        if isinstance(present[0], bool):
            column.booleans.extend(bool(v) for v in values)
        elif isinstance(present[0], str):
            column.strings.extend(v if isinstance(v, str) else "" for v in values)
        else:
            column.numbers.extend(float(v) if isinstance(v, int | float) else 0.0
                                  for v in values)
        out.append(column)
    return out


def violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "INVALID_ARGUMENT must carry a google.rpc.Status"
    out = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        out.extend((v.field, v.description) for v in bad.field_violations)
    return out


def test_default_version_answers_every_row(stub: pb_grpc.PredictionServiceStub,
                                           rows: list[dict[str, object]]) -> None:
    response, headers = predict(stub, rows[:5])
    assert response.version == "1.1.0"
    assert response.route_reason == pb.ROUTE_REASON_DEFAULT
    assert headers["x-model-version"] == "1.1.0"
    assert headers["x-route-reason"] == "default"
    assert len(response.predictions) == 5
    ids = {p.prediction_id for p in response.predictions}
    assert len(ids) == 5
    for row, p in zip(rows[:5], response.predictions, strict=True):
        assert p.interval.lower <= p.transit_days <= p.interval.upper
        assert p.interval.coverage == pytest.approx(0.8)
        order = date.fromisoformat(str(row["order_date"]))
        assert p.delivery_date == (order + timedelta(days=int(p.transit_days + 0.5))).isoformat()
        assert date.fromisoformat(p.latest_delivery_date) >= date.fromisoformat(p.delivery_date)


def test_two_versions_side_by_side_by_header_and_field(
    stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]
) -> None:
    old, headers = predict(stub, rows[:20], metadata=(("x-model-version", "1.0.0"),))
    new, _ = predict(stub, rows[:20], version="1.1.0")
    assert (old.version, old.route_reason) == ("1.0.0", pb.ROUTE_REASON_PINNED)
    assert headers["x-model-version"] == "1.0.0"
    assert new.version == "1.1.0"
    # Different models: their predictions differ on at least one row.
    assert [p.transit_days for p in old.predictions] != [p.transit_days for p in new.predictions]
    again, _ = predict(stub, rows[:20], version="1.0.0")
    assert [p.transit_days for p in again.predictions] == [p.transit_days for p in old.predictions]


def test_label_pin(stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]) -> None:
    response, headers = predict(stub, rows[:1], version="stable")
    assert (response.version, response.route_reason) == ("1.1.0", pb.ROUTE_REASON_LABEL)
    assert headers["x-route-reason"] == "label"


def test_header_and_field_that_disagree_are_rejected(
    stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, rows[:1], version="1.0.0", metadata=(("x-model-version", "1.1.0"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(caught.value)] == ["version"]


def test_invalid_rows_get_one_violation_per_bad_field(
    stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]
) -> None:
    bad = dict(rows[1])
    bad["distance_km"] = -5.0
    bad["service_level"] = "teleport"
    bad["carrier"] = 7.0
    del bad["origin_warehouse"]
    bad["colour"] = "blue"
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, [rows[0], bad])
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = dict(violations(err))
    assert set(found) == {
        "rows[1].distance_km", "rows[1].service_level", "rows[1].carrier",
        "rows[1].origin_warehouse", "rows[1].colour",
    }
    assert "outside" in found["rows[1].distance_km"]
    assert "unknown category 'teleport'" in found["rows[1].service_level"]
    assert "required" in found["rows[1].origin_warehouse"]
    assert "Traceback" not in (err.details() or "")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_rejected(stub: pb_grpc.PredictionServiceStub,
                                         rows: list[dict[str, object]], value: float) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, [dict(rows[0]) | {"distance_km": value}])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value)[0][0] == "rows[0].distance_km"


def test_unknown_model_and_version_are_not_found_and_list_what_exists(
    stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, rows[:1], model="delivery_etaa")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'delivery_etaa'" in caught.value.details()
    assert "delivery_eta" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, rows[:1], version="2.0.0")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'2.0.0'" in caught.value.details()
    assert "1.0.0, 1.1.0" in caught.value.details()


def test_empty_and_oversized_requests(stub: pb_grpc.PredictionServiceStub,
                                      rows: list[dict[str, object]]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, [])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value)[0][0] == "rows"
    too_many = (rows * 50)[:MAX_ROWS + 1]
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, too_many)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    field, description = violations(caught.value)[0]
    assert field == "rows"
    assert str(MAX_ROWS) in description


MAX_ROWS = 200  # the server fixture starts with --max-rows 200


def test_message_size_limit(stub: pb_grpc.PredictionServiceStub) -> None:
    huge = [{"zip_code": "x" * (1 << 20)} for _ in range(5)]
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, huge)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metadata_size_limit(stub: pb_grpc.PredictionServiceStub,
                             rows: list[dict[str, object]]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        predict(stub, rows[:1], metadata=(("x-padding", "p" * 40_000),))
    assert caught.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
    # The server is still healthy afterwards.
    response, _ = predict(stub, rows[:1])
    assert len(response.predictions) == 1


def test_list_and_get_model(stub: pb_grpc.PredictionServiceStub) -> None:
    listing = stub.ListModels(pb.ListModelsRequest(), timeout=5)
    (model,) = listing.models
    assert model.name == "delivery_eta"
    assert model.default_version == "1.1.0"
    assert [v.version for v in model.versions] == ["1.0.0", "1.1.0"]
    assert list(model.versions[1].labels) == ["stable"]
    detail = stub.GetModel(pb.GetModelRequest(model="delivery_eta", version="1.0.0"), timeout=5)
    mv = detail.model_version
    assert mv.version == "1.0.0"
    assert len(mv.sha256) == 64
    assert mv.metrics["validation.mae"] < mv.metrics["baseline.mae"]
    assert {f.name for f in mv.features} >= {"order_date", "distance_km", "carrier"}
    assert mv.output.date_field == "order_date"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModel(pb.GetModelRequest(model="nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _rpc_lines(server: ServerProcess, rows: int) -> list[dict[str, object]]:
    # A line is written before its call is answered, so no wait is needed.
    return [e for e in server.log_events() if e.get("event") == "rpc"
            and e.get("method") == "Predict" and e.get("rows") == rows]


def test_by_default_failed_calls_get_an_access_line_and_untraced_successes_do_not(
    server: ServerProcess, stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]
) -> None:
    # Row counts no other test of this module sends mark the two calls' lines.
    predict(stub, rows[:7], version="1.0.0")
    with pytest.raises(grpc.RpcError):
        predict(stub, [*rows[:4], {**rows[4], "distance_km": -1.0}], version="1.0.0")
    failed = _rpc_lines(server, 5)
    assert failed, server.log_text()[-2000:]
    assert failed[-1]["code"] == "INVALID_ARGUMENT"
    assert failed[-1]["model"] == "delivery_eta" and failed[-1]["version"] == "1.0.0"
    assert [e for e in _rpc_lines(server, 7) if e.get("duration_ms", 0) < 250] == []


def test_access_log_all_writes_json_with_model_version_and_status_for_every_call(
    registry: Path, tmp_path: Path, rows: list[dict[str, object]]
) -> None:
    with ServerProcess(tmp_path, "--registry", str(registry), "--access-log", "all") as proc:
        predict(pb_grpc.PredictionServiceStub(proc.channel()), rows[:7], version="1.0.0")
        lines = _rpc_lines(proc, 7)
    assert lines, proc.log_text()[-2000:]
    assert lines[-1]["code"] == "OK"
    assert lines[-1]["model"] == "delivery_eta" and lines[-1]["version"] == "1.0.0"


# ------------------------------------------------------------------ columns
def predict_columns(stub: pb_grpc.PredictionServiceStub, columns: list[pb.Column],
                    version: str = "1.1.0") -> pb.PredictResponse:
    return stub.Predict(pb.PredictRequest(model="delivery_eta", columns=columns,
                                          version=version), timeout=10)


def test_columns_are_answered_in_columns_with_the_rows_answer(
        stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]) -> None:
    sent = [dict(r) for r in rows[:40]]
    sent[3]["weight_kg"] = None  # optional: listed as missing
    by_row, _ = predict(stub, sent, version="1.1.0")
    by_column = predict_columns(stub, columns_of(sent))
    assert not by_column.predictions
    got = by_column.columns
    assert list(got.transit_days) == pytest.approx([p.transit_days for p in by_row.predictions])
    assert list(got.lower) == pytest.approx([p.interval.lower for p in by_row.predictions])
    assert list(got.upper) == pytest.approx([p.interval.upper for p in by_row.predictions])
    assert list(got.delivery_date) == [p.delivery_date for p in by_row.predictions]
    assert list(got.latest_delivery_date) == [p.latest_delivery_date
                                              for p in by_row.predictions]
    assert got.coverage == pytest.approx(0.8)
    assert len(set(got.prediction_id)) == 40
    assert not set(got.prediction_id) & {p.prediction_id for p in by_row.predictions}


def test_a_big_columnar_request_is_answered_in_row_order(
        stub: pb_grpc.PredictionServiceStub, rows: list[dict[str, object]]) -> None:
    sent = (rows * 4)[:MAX_ROWS]  # past the rows read on the event loop: the executor path
    by_column = predict_columns(stub, columns_of(sent)).columns
    first, _ = predict(stub, sent[:5], version="1.1.0")
    last, _ = predict(stub, sent[-5:], version="1.1.0")
    assert list(by_column.transit_days[:5]) == pytest.approx(
        [p.transit_days for p in first.predictions])
    assert list(by_column.transit_days[-5:]) == pytest.approx(
        [p.transit_days for p in last.predictions])


def test_bad_columns_are_named_by_feature(stub: pb_grpc.PredictionServiceStub,
                                          rows: list[dict[str, object]]) -> None:
    good = columns_of(rows[:3])

    def refused(columns: list[pb.Column], **request: object) -> list[tuple[str, str]]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(pb.PredictRequest(model="delivery_eta", columns=columns, **request),
                         timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return violations(caught.value)

    def changed(name: str, **fields: object) -> list[pb.Column]:
        out = [pb.Column() for _ in good]
        for copy, column in zip(out, good, strict=True):
            copy.CopyFrom(column)
            if column.name == name:
                for key, value in fields.items():
                    copy.ClearField(key)  # type: ignore[arg-type]
                    getattr(copy, key).extend(value)
        return out

    [(field, description)] = refused(good, rows=struct_rows(rows[:3]))
    assert field == "columns" and "not both" in description
    [(field, description)] = refused(changed("distance_km", numbers=[1.0, 2.0]))
    assert field == "columns.distance_km" and "has 2 values" in description
    # The longest column sets the row count, so the short one is blamed even when first.
    [(field, description)] = refused(changed(good[0].name, strings=["2026-11-26"]))
    assert field == f"columns.{good[0].name}" and "has 1 values" in description
    [(field, _)] = refused(changed("distance_km", missing=[7]))
    assert field == "columns.distance_km.missing"
    [(field, _)] = refused([*good, good[0]])
    [(field_, _)] = refused([*good, pb.Column(name="", numbers=[1.0, 2.0, 3.0, 4.0])])
    assert field_ == f"columns[{len(good)}].name"
    assert field == f"columns.{good[0].name}"
    found = refused(changed("distance_km", numbers=[1.0, -5.0, 2.0]))
    assert [f for f, _ in found] == ["columns.distance_km[1]"]
    assert "outside" in found[0][1]
    found = refused(changed("carrier", strings=[], numbers=[1.0, 2.0, 3.0]))
    assert found == [("columns.carrier", "a categorical feature: send its values in strings")]
    found = refused([c for c in good if c.name != "carrier"])
    assert found == [("columns.carrier", "is required")]
