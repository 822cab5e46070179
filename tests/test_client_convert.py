"""Client-side conversions, error mapping and the retry policy; no server needed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import pickle
import re
import sys
import types

import grpc
import pytest
import waybill_client
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from hypothesis import given
from hypothesis import strategies as st
from waybill.v1 import prediction_pb2
from waybill_client import _convert
from waybill_client._channel import (
    MAX_RETRIES,
    RETRIED_METHODS,
    RETRY_BUFFER_BYTES,
    RetryPolicy,
    check_timeout,
    open_channel,
    retry_options,
)
from waybill_client.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    UnexpectedStatus,
    WaybillError,
    from_rpc_error,
)

# --------------------------------------------------------------------------- rows → Struct


def test_scalar_types_keep_their_json_kind() -> None:
    struct = _convert.row_to_struct(
        {"zip": "94107", "express": True, "fragile": False, "dow": 3, "weight": 1.5, "note": None}
    )
    kinds = {key: value.WhichOneof("kind") for key, value in struct.fields.items()}
    assert kinds == {
        "zip": "string_value",
        "express": "bool_value",  # bool is an int subclass: must not become a number
        "fragile": "bool_value",
        "dow": "number_value",
        "weight": "number_value",
        "note": "null_value",
    }
    assert struct.fields["express"].bool_value is True
    assert struct.fields["dow"].number_value == 3.0
    assert struct.fields["weight"].number_value == 1.5
    assert struct.fields["zip"].string_value == "94107"


def test_rows_round_trip_through_json() -> None:
    rows = [
        {"zip_code": "94107", "day_of_week": 3, "order_date": "2026-11-26", "express": True},
        {"zip_code": "10001", "day_of_week": 0, "order_date": "2026-11-27", "express": False},
    ]
    request = _convert.build_predict_request("delivery_eta", rows)
    assert request.model == "delivery_eta"
    assert request.version == "" and request.routing_key == ""  # pins travel as metadata
    assert [json_format.MessageToDict(s) for s in request.rows] == rows
    # and over the wire
    decoded = prediction_pb2.PredictRequest.FromString(request.SerializeToString())
    assert [json_format.MessageToDict(s) for s in decoded.rows] == rows


def test_date_is_sent_as_iso_string_but_datetime_is_rejected() -> None:
    struct = _convert.row_to_struct({"order_date": dt.date(2026, 11, 26)})
    assert struct.fields["order_date"].string_value == "2026-11-26"
    with pytest.raises(TypeError, match=r"rows\[0\]\.order_date: datetime"):
        _convert.row_to_struct({"order_date": dt.datetime(2026, 11, 26, 9, 30)})


def test_numpy_scalars_are_numbers() -> None:
    np = pytest.importorskip("numpy")
    struct = _convert.row_to_struct({"n": np.int64(7), "x": np.float32(0.5)})
    assert struct.fields["n"].number_value == 7.0
    assert struct.fields["x"].number_value == 0.5


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ({"lat": 1.0}, "dict"),
        ([1, 2], "list"),
        ((1, 2), "tuple"),
        ({1, 2}, "set"),
    ],
)
def test_nested_values_are_rejected_naming_row_and_key(value: object, kind: str) -> None:
    rows = [{"zip_code": "94107"}, {"zip_code": "10001", "dims": value}]
    with pytest.raises(TypeError, match=rf"rows\[1\]\.dims: nested {kind}"):
        _convert.rows_to_structs(rows)


@pytest.mark.parametrize("value", [b"94107", object(), 1j, dt.timedelta(days=1)])
def test_non_json_values_are_rejected_naming_row_and_key(value: object) -> None:
    with pytest.raises(TypeError, match=r"rows\[2\]\.zip_code: .* not JSON-serializable"):
        _convert.rows_to_structs([{}, {}, {"zip_code": value}])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    with pytest.raises(ValueError, match=r"rows\[0\]\.weight: .* not a finite number"):
        _convert.row_to_struct({"weight": value})


def test_integers_beyond_double_precision_are_rejected() -> None:
    assert _convert.row_to_struct({"n": 2**53}).fields["n"].number_value == 2.0**53
    with pytest.raises(ValueError, match=r"rows\[0\]\.n: integer .* too large"):
        _convert.row_to_struct({"n": 2**53 + 1})


def test_row_shape_errors() -> None:
    with pytest.raises(TypeError, match="wrap a single row in a list"):
        _convert.rows_to_structs({"zip_code": "94107"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rows\[0\] is str"):
        _convert.rows_to_structs(["zip_code"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence of mappings, not str"):
        _convert.rows_to_structs("rows")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rows\[0\] has a int key 3"):
        _convert.row_to_struct({3: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="model"):
        _convert.build_predict_request("", [{}])


# --------------------------------------------------------------------------- rows → columns


def _orders(n: int) -> list[dict[str, object]]:
    return [
        {
            "zip_code": f"{94100 + i}",
            "day_of_week": i % 7,
            "distance_km": 10.5 + i,
            "express": i % 2 == 0,
            "order_date": "2026-11-26",
        }
        for i in range(n)
    ]


def _column_values(column: prediction_pb2.Column) -> tuple[str, list[object]]:
    kinds = [k for k in ("numbers", "strings", "booleans") if len(getattr(column, k))]
    assert len(kinds) == 1, column
    return kinds[0], list(getattr(column, kinds[0]))


def test_min_rows_for_columns_is_eight() -> None:
    assert _convert.COLUMNS_MIN_ROWS == 8


def test_rows_transpose_into_typed_columns() -> None:
    rows = _orders(10)
    request = _convert.build_predict_request("delivery_eta", rows)
    assert request.model == "delivery_eta"
    assert len(request.rows) == 0
    got = {c.name: _column_values(c) for c in request.columns}
    assert list(got) == list(rows[0])  # in the rows' key order
    assert got == {
        "zip_code": ("strings", [r["zip_code"] for r in rows]),
        "day_of_week": ("numbers", [float(r["day_of_week"]) for r in rows]),  # type: ignore[arg-type]
        "distance_km": ("numbers", [r["distance_km"] for r in rows]),
        "express": ("booleans", [r["express"] for r in rows]),
        "order_date": ("strings", ["2026-11-26"] * 10),
    }
    assert all(not c.missing for c in request.columns)
    # and over the wire
    decoded = prediction_pb2.PredictRequest.FromString(request.SerializeToString())
    assert decoded == request


def test_none_and_absent_values_are_listed_as_missing_with_placeholders() -> None:
    rows = _orders(9)
    rows[2]["zip_code"] = None
    del rows[5]["zip_code"]
    rows[0]["distance_km"] = None
    rows[8]["express"] = None
    rows[3]["weight_kg"] = 1.5  # only row 3 has it: every other row is missing
    columns = {c.name: c for c in _convert.rows_to_columns(rows) or []}
    assert list(columns["zip_code"].missing) == [2, 5]
    assert columns["zip_code"].strings[2] == "" and columns["zip_code"].strings[5] == ""
    assert columns["zip_code"].strings[3] == "94103"
    assert list(columns["distance_km"].missing) == [0]
    assert columns["distance_km"].numbers[0] == 0.0
    assert list(columns["express"].missing) == [8] and columns["express"].booleans[8] is False
    assert list(columns["weight_kg"].missing) == [0, 1, 2, 4, 5, 6, 7, 8]
    assert list(columns["weight_kg"].numbers) == [0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert not columns["day_of_week"].missing


def test_a_feature_without_any_value_is_left_out() -> None:
    rows = _orders(8)
    for i, row in enumerate(rows):
        if i % 2:
            row["note"] = None  # the others leave the key out
    request = _convert.build_predict_request("delivery_eta", rows)
    assert [c.name for c in request.columns] == list(_orders(1)[0])


def test_rows_without_any_value_still_go_as_rows() -> None:
    # No column at all would carry no row count: the server must see 8 (empty) rows.
    request = _convert.build_predict_request("delivery_eta", [{"note": None}] * 7 + [{}])
    assert len(request.rows) == 8 and not request.columns


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("day_of_week", "3"),  # str among numbers
        ("day_of_week", True),  # bool among numbers
        ("express", 1),  # number among bools
        ("zip_code", 94107),  # number among strs
        ("zip_code", ["94107"]),  # a list
        ("zip_code", {"code": "94107"}),  # a dict
    ],
)
def test_a_feature_mixing_types_sends_rows(key: str, value: object) -> None:
    rows = _orders(12)
    rows[7][key] = value
    assert _convert.rows_to_columns(rows) is None
    if isinstance(value, list | dict):
        with pytest.raises(TypeError, match=rf"rows\[7\]\.{key}: nested"):
            _convert.build_predict_request("delivery_eta", rows)
        return
    request = _convert.build_predict_request("delivery_eta", rows)
    assert not request.columns
    assert [json_format.MessageToDict(s) for s in request.rows] == [
        json_format.MessageToDict(_convert.row_to_struct(r)) for r in rows
    ]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (math.nan, ValueError, "not a finite number"),
        (-math.inf, ValueError, "not a finite number"),
        (2**53 + 1, ValueError, "too large"),
        (10**400, ValueError, "too large"),
        (dt.datetime(2026, 11, 26, 9, 30), TypeError, "datetime"),
        (b"3", TypeError, "not JSON-serializable"),
    ],
)
def test_values_refused_client_side_are_still_named_by_row(
    value: object, error: type[Exception], message: str
) -> None:
    rows = _orders(10)
    rows[4]["distance_km"] = value
    assert _convert.rows_to_columns(rows) is None
    with pytest.raises(error, match=rf"rows\[4\]\.distance_km: .*{message}"):
        _convert.build_predict_request("delivery_eta", rows)


def test_big_floats_and_exact_integers_go_as_columns() -> None:
    rows = _orders(8)
    # Floats beyond 2**53 (even adding up past a double) and integers up to 2**53 are sent.
    rows[0]["distance_km"] = rows[1]["distance_km"] = 1e308
    rows[1]["day_of_week"] = 2**53
    rows[2]["day_of_week"] = -(2**53)
    columns = {c.name: c for c in _convert.rows_to_columns(rows) or []}
    assert list(columns["distance_km"].numbers[:2]) == [1e308, 1e308]
    assert list(columns["day_of_week"].numbers[1:3]) == [2.0**53, -(2.0**53)]


def test_fewer_than_eight_rows_go_as_rows() -> None:
    assert len(_convert.build_predict_request("m", _orders(7)).rows) == 7
    assert len(_convert.build_predict_request("m", _orders(8)).columns) == 5
    # rows that are not a sequence (a generator) go as rows whatever their number
    assert len(_convert.build_predict_request("m", iter(_orders(20))).rows) == 20  # type: ignore[arg-type]


def test_columns_keyword_forces_a_shape() -> None:
    assert len(_convert.build_predict_request("m", _orders(50), columns=False).rows) == 50
    one = _convert.build_predict_request("m", _orders(1), columns=True)
    assert not one.rows and [c.name for c in one.columns] == list(_orders(1)[0])
    mixed = _orders(2)
    mixed[1]["zip_code"] = 94107
    assert len(_convert.build_predict_request("m", mixed, columns=True).rows) == 2


def test_dates_and_numpy_numbers_transpose() -> None:
    np = pytest.importorskip("numpy")
    rows = _orders(8)
    for i, row in enumerate(rows):
        row["order_date"] = dt.date(2026, 11, 20 + i) if i % 2 else f"2026-11-{20 + i}"
        row["day_of_week"] = np.int64(i)
        row["distance_km"] = np.float32(0.5) if i == 3 else float(i)
    columns = {c.name: c for c in _convert.rows_to_columns(rows) or []}
    assert list(columns["order_date"].strings) == [f"2026-11-{20 + i}" for i in range(8)]
    assert list(columns["day_of_week"].numbers) == [float(i) for i in range(8)]
    assert columns["distance_km"].numbers[3] == 0.5
    rows[5]["express"] = np.bool_(True)  # refused by the row path: sent as rows, which raise
    with pytest.raises(TypeError, match=r"rows\[5\]\.express"):
        _convert.build_predict_request("m", rows)


def test_row_shape_errors_are_the_same_for_big_requests() -> None:
    with pytest.raises(TypeError, match=r"rows\[9\] is str"):
        _convert.build_predict_request("m", [*_orders(9), "zip_code"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"rows\[3\] has a int key 3"):
        _convert.build_predict_request("m", [*_orders(3), {3: "x"}, *_orders(6)])  # type: ignore[dict-item]


@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "n": st.one_of(st.none(), st.integers(-(2**53), 2**53),
                               st.floats(allow_nan=False, allow_infinity=False)),
                "s": st.one_of(st.none(), st.text(max_size=5)),
                "b": st.one_of(st.none(), st.booleans()),
            },
        ),
        min_size=8,
        max_size=30,
    )
)
def test_columns_carry_exactly_what_rows_would(rows: list[dict[str, object]]) -> None:
    request = _convert.build_predict_request("m", rows)
    as_rows = [json_format.MessageToDict(_convert.row_to_struct(r)) for r in rows]
    if request.rows:  # nothing to put in a column
        assert all(v is None for r in rows for v in r.values())
        return
    # Rows read back from the columns (missing values left out) equal the rows minus None.
    back: list[dict[str, object]] = [{} for _ in rows]
    for column in request.columns:
        _, values = _column_values(column)
        missing = set(column.missing)
        for i, value in enumerate(values):
            if i not in missing:
                back[i][column.name] = value
    assert back == [{k: v for k, v in r.items() if v is not None} for r in as_rows]


def test_stream_requests_go_as_columns_too() -> None:
    unsendable: list[Exception] = []
    big = _convert.stream_request("m", _orders(8), unsendable)
    small = _convert.stream_request("m", _orders(2), unsendable)
    forced = _convert.stream_request("m", _orders(8), unsendable, columns=False)
    assert big is not None and small is not None and forced is not None and not unsendable
    assert len(big.request.columns) == 5 and not big.request.rows
    assert len(small.request.rows) == 2 and len(forced.request.rows) == 8


# --------------------------------------------------------------------------- metadata


def test_pin_and_routing_key_build_metadata_tuples() -> None:
    assert waybill_client.pin("1.1.0") == (("x-model-version", "1.1.0"),)
    assert waybill_client.routing_key("customer-42") == (("x-routing-key", "customer-42"),)


@pytest.mark.parametrize("bad", ["", " stable", "caf\u00e9", "a\nb"])
def test_invalid_metadata_values_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        waybill_client.pin(bad)
    with pytest.raises(ValueError):
        waybill_client.routing_key(bad)


def test_call_metadata_per_call_values_replace_client_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_convert, "_INJECT", None)
    base = (("authorization", "Bearer t"), ("x-model-version", "stable"))
    assert _convert.call_metadata(base) == base
    assert _convert.call_metadata(base, version="1.1.0", routing_key="k") == (
        ("authorization", "Bearer t"),
        ("x-model-version", "1.1.0"),
        ("x-routing-key", "k"),
    )


def test_normalize_metadata_checks_keys_and_binary_values() -> None:
    assert _convert.normalize_metadata([("a", "1"), ("b-bin", b"\x00")]) == (
        ("a", "1"),
        ("b-bin", b"\x00"),
    )
    with pytest.raises(ValueError, match="lowercase"):
        _convert.normalize_metadata([("Authorization", "x")])
    with pytest.raises(ValueError, match="-bin"):
        _convert.normalize_metadata([("b-bin", "text")])


def test_trace_context_is_injected_when_opentelemetry_is_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def inject(carrier: dict[str, str]) -> None:
        carrier["traceparent"] = traceparent
        carrier["tracestate"] = "vendor=1"

    fake = types.ModuleType("opentelemetry.propagate")
    fake.inject = inject  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry", types.ModuleType("opentelemetry"))
    monkeypatch.setitem(sys.modules, "opentelemetry.propagate", fake)
    loaded = _convert._load_inject()
    assert loaded is inject
    monkeypatch.setattr(_convert, "_INJECT", loaded)
    stale = (("traceparent", "00-stale"),)
    assert _convert.call_metadata(stale, version="canary") == (
        ("x-model-version", "canary"),
        ("traceparent", traceparent),
        ("tracestate", "vendor=1"),
    )


def test_trace_context_is_skipped_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes an import fail; the submodule too, as the server's own
    # dependency on opentelemetry-api may have imported it already.
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.propagate", None)
    assert _convert._load_inject() is None
    monkeypatch.setattr(_convert, "_INJECT", None)
    assert _convert.trace_metadata() == ()


# --------------------------------------------------------------------------- responses


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (prediction_pb2.ROUTE_REASON_UNSPECIFIED, "unspecified"),
        (prediction_pb2.ROUTE_REASON_PINNED, "pinned"),
        (prediction_pb2.ROUTE_REASON_LABEL, "label"),
        (prediction_pb2.ROUTE_REASON_DEFAULT, "default"),
        (prediction_pb2.ROUTE_REASON_STICKY, "sticky"),
        (prediction_pb2.ROUTE_REASON_WEIGHTED, "weighted"),
        (prediction_pb2.ROUTE_REASON_OVERRIDE, "override"),
        (99, "unknown(99)"),  # a newer server's reason must not break an older client
    ],
)
def test_route_reason_names(value: int, name: str) -> None:
    assert waybill_client.route_reason_name(value) == name


def test_every_route_reason_has_a_short_name() -> None:
    for full, value in prediction_pb2.RouteReason.items():
        short = waybill_client.route_reason_name(value)
        assert full == "ROUTE_REASON_" + short.upper()


def _response() -> prediction_pb2.PredictResponse:
    return prediction_pb2.PredictResponse(
        model="delivery_eta",
        version="1.1.0",
        route_reason=prediction_pb2.ROUTE_REASON_STICKY,
        predictions=[
            prediction_pb2.Prediction(
                prediction_id="p-1",
                transit_days=2.6,
                interval=prediction_pb2.Interval(lower=1.8, upper=3.9, coverage=0.8),
                delivery_date="2026-11-29",
                latest_delivery_date="2026-11-30",
            ),
            prediction_pb2.Prediction(prediction_id="p-2", transit_days=4.0),
        ],
    )


def test_predict_result_wraps_the_response() -> None:
    response = _response()
    result = _convert.predict_result(response)
    assert (result.model, result.version, result.route_reason) == (
        "delivery_eta",
        "1.1.0",
        "sticky",
    )
    first, second = result.predictions
    assert first == waybill_client.PredictionResult(
        prediction_id="p-1",
        transit_days=2.6,
        lower=1.8,
        upper=3.9,
        coverage=0.8,
        delivery_date=dt.date(2026, 11, 29),
        latest_delivery_date=dt.date(2026, 11, 30),
    )
    assert second.delivery_date is None and second.latest_delivery_date is None
    assert result.response is response
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.version = "1.0.0"  # type: ignore[misc]
    assert "response" not in repr(result)


@pytest.mark.parametrize("bad", ["2026-13-01", "20261129", "tomorrow"])
def test_malformed_dates_name_the_prediction(bad: str) -> None:
    response = _response()
    response.predictions[1].latest_delivery_date = bad
    with pytest.raises(ValueError, match=r"predictions\[1\]\.latest_delivery_date"):
        _convert.predict_result(response)


def _columns_response() -> prediction_pb2.PredictResponse:
    """``_response()`` as a columnar request's answer."""
    return prediction_pb2.PredictResponse(
        model="delivery_eta",
        version="1.1.0",
        route_reason=prediction_pb2.ROUTE_REASON_STICKY,
        columns=prediction_pb2.PredictionColumns(
            prediction_id=["p-1", "p-2"],
            transit_days=[2.6, 4.0],
            lower=[1.8, 0.0],
            upper=[3.9, 0.0],
            coverage=0.8,
            delivery_date=["2026-11-29", ""],
            latest_delivery_date=["2026-11-30", ""],
        ),
    )


def test_predict_result_reads_columns_back_as_predictions() -> None:
    by_rows = _convert.predict_result(_response())
    response = _columns_response()
    result = _convert.predict_result(response)
    assert (result.model, result.version, result.route_reason) == (
        "delivery_eta",
        "1.1.0",
        "sticky",
    )
    first, second = result.predictions
    assert first == by_rows.predictions[0]
    # the interval's coverage is per response in columns: every prediction carries it
    assert second == dataclasses.replace(by_rows.predictions[1], coverage=0.8)
    assert result.response is response


def test_predict_result_reads_many_columns_with_shared_dates() -> None:
    n = 100
    response = prediction_pb2.PredictResponse(
        columns=prediction_pb2.PredictionColumns(
            prediction_id=[f"p-{i}" for i in range(n)],
            transit_days=[i / 10 for i in range(n)],
            lower=[0.0] * n,
            upper=[float(i) for i in range(n)],
            coverage=0.9,
            delivery_date=[f"2026-12-{1 + i % 3:02d}" for i in range(n)],
            latest_delivery_date=[f"2026-12-{10 + i % 7}" for i in range(n)],
        )
    )
    predictions = _convert.predict_result(response).predictions
    assert [p.prediction_id for p in predictions] == [f"p-{i}" for i in range(n)]
    assert [p.delivery_date for p in predictions] == [dt.date(2026, 12, 1 + i % 3)
                                                     for i in range(n)]
    assert predictions[99].latest_delivery_date == dt.date(2026, 12, 10 + 99 % 7)
    assert predictions[42].upper == 42.0 and predictions[42].coverage == 0.9


def test_an_empty_answer_reads_as_no_predictions() -> None:
    assert _convert.predict_result(prediction_pb2.PredictResponse()).predictions == ()
    empty_columns = prediction_pb2.PredictResponse()
    empty_columns.columns.coverage = 0.8
    assert _convert.predict_result(empty_columns).predictions == ()


@pytest.mark.parametrize("bad", ["2026-13-01", "20261129", "tomorrow"])
def test_malformed_column_dates_name_the_entry(bad: str) -> None:
    response = _columns_response()
    response.columns.latest_delivery_date[1] = bad
    with pytest.raises(ValueError, match=r"columns\.latest_delivery_date\[1\]"):
        _convert.predict_result(response)


def test_prediction_columns_of_different_lengths_are_refused() -> None:
    response = _columns_response()
    response.columns.upper.append(5.0)
    with pytest.raises(ValueError, match="differ in length"):
        _convert.predict_result(response)


# --------------------------------------------------------------------------- model kinds


def _kind_response(kind: str, predictions: list[prediction_pb2.Prediction],
                   class_names: tuple[str, ...] = ()) -> prediction_pb2.PredictResponse:
    return prediction_pb2.PredictResponse(model="m", version="1.0.0",
                                          route_reason=prediction_pb2.ROUTE_REASON_DEFAULT,
                                          kind=kind, class_names=class_names,
                                          predictions=predictions)


def _as_columns(response: prediction_pb2.PredictResponse) -> prediction_pb2.PredictResponse:
    """The answer the server gives the same rows sent as columns."""
    columnar = prediction_pb2.PredictResponse()
    columnar.CopyFrom(response)
    del columnar.predictions[:]
    columns = columnar.columns
    columns.SetInParent()
    rows = response.predictions
    columns.prediction_id.extend(p.prediction_id for p in rows)
    if rows and rows[0].HasField("value"):
        columns.value.extend(p.value for p in rows)
    if rows and rows[0].HasField("interval"):
        columns.lower.extend(p.interval.lower for p in rows)
        columns.upper.extend(p.interval.upper for p in rows)
        columns.coverage = rows[0].interval.coverage
    if any(p.delivery_date for p in rows):
        columns.transit_days.extend(p.transit_days for p in rows)
        columns.delivery_date.extend(p.delivery_date for p in rows)
        columns.latest_delivery_date.extend(p.latest_delivery_date for p in rows)
    if response.kind == "classification":
        columns.label.extend(p.label for p in rows)
        columns.probabilities.extend(x for p in rows for x in p.probabilities)
    return columnar


def _both_shapes(response: prediction_pb2.PredictResponse) -> waybill_client.PredictResult:
    """Decode the answer as rows and as columns; both must read the same."""
    by_rows = _convert.predict_result(response)
    by_columns = _convert.predict_result(_as_columns(response))
    assert by_columns.predictions == by_rows.predictions
    assert (by_columns.kind, by_columns.class_names) == (by_rows.kind, by_rows.class_names)
    return by_rows


def test_a_regressor_without_interval_answers_value_and_nothing_else() -> None:
    result = _both_shapes(_kind_response("regression", [
        prediction_pb2.Prediction(prediction_id="a", value=-12.5),
        prediction_pb2.Prediction(prediction_id="b", value=0.0),
        prediction_pb2.Prediction(prediction_id="c", value=7.25),
    ]))
    assert (result.kind, result.class_names) == ("regression", ())
    assert [p.value for p in result.predictions] == [-12.5, 0.0, 7.25]
    assert result.predictions[0] == waybill_client.PredictionResult(
        prediction_id="a", transit_days=None, lower=None, upper=None, coverage=None,
        delivery_date=None, latest_delivery_date=None, value=-12.5)
    for p in result.predictions:
        assert (p.transit_days, p.lower, p.upper, p.coverage) == (None, None, None, None)
        assert (p.delivery_date, p.latest_delivery_date, p.label, p.probabilities) == (
            None, None, None, None)


def test_a_regressor_with_an_interval_answers_its_bounds() -> None:
    interval = prediction_pb2.Interval(lower=-20.0, upper=-5.0, coverage=0.9)
    result = _both_shapes(_kind_response("regression", [
        prediction_pb2.Prediction(prediction_id="a", value=-12.5, interval=interval)]))
    (p,) = result.predictions
    assert (p.value, p.lower, p.upper, p.coverage) == (-12.5, -20.0, -5.0, 0.9)
    assert p.transit_days is None and p.delivery_date is None


def test_a_classifier_answers_label_and_probabilities_by_class_name() -> None:
    classes = ("early", "on_time", "late")
    result = _both_shapes(_kind_response("classification", [
        prediction_pb2.Prediction(prediction_id="a", label="late",
                                  probabilities=[0.1, 0.2, 0.7]),
        prediction_pb2.Prediction(prediction_id="b", label="early",
                                  probabilities=[0.5, 0.25, 0.25]),
    ], classes))
    assert (result.kind, result.class_names) == ("classification", classes)
    first, second = result.predictions
    assert first.label == "late" and second.label == "early"
    assert first.probabilities == {"early": 0.1, "on_time": 0.2, "late": 0.7}
    assert list(second.probabilities or {}) == list(classes)  # in class order
    assert second.probabilities == {"early": 0.5, "on_time": 0.25, "late": 0.25}
    for p in result.predictions:
        assert (p.value, p.transit_days, p.lower, p.upper, p.coverage) == (None,) * 5
    assert hash(first) == hash(dataclasses.replace(first))  # still hashable


def test_a_binary_classifier_with_numeric_class_names() -> None:
    result = _both_shapes(_kind_response("classification", [
        prediction_pb2.Prediction(prediction_id="a", label="0", probabilities=[0.75, 0.25])],
        ("0", "1")))
    assert result.predictions[0].probabilities == {"0": 0.75, "1": 0.25}


def test_a_delivery_model_reads_as_before_and_answers_value_too() -> None:
    interval = prediction_pb2.Interval(lower=1.8, upper=3.9, coverage=0.8)
    result = _both_shapes(_kind_response("quantiles", [
        prediction_pb2.Prediction(prediction_id="a", value=2.6, transit_days=2.6,
                                  interval=interval, delivery_date="2026-11-29",
                                  latest_delivery_date="2026-11-30"),
        # A row without an order date: no dates; transit_days still set (0 days here).
        prediction_pb2.Prediction(prediction_id="b", value=0.0, transit_days=0.0,
                                  interval=interval),
    ]))
    first, second = result.predictions
    assert first == waybill_client.PredictionResult(
        prediction_id="a", transit_days=2.6, lower=1.8, upper=3.9, coverage=0.8,
        delivery_date=dt.date(2026, 11, 29), latest_delivery_date=dt.date(2026, 11, 30),
        value=2.6)
    assert (second.transit_days, second.value, second.delivery_date) == (0.0, 0.0, None)
    assert result.kind == "quantiles" and first.label is None and first.probabilities is None


def test_an_answer_from_a_server_older_than_kinds_reads_as_before() -> None:
    result = _convert.predict_result(_response())  # no kind, no value: the old answer
    assert result.kind == "" and result.class_names == ()
    first, second = result.predictions
    assert (first.transit_days, first.value, first.label, first.probabilities) == (
        2.6, None, None, None)
    # The old client read a missing interval as zeros; so does this one, for old servers.
    assert (second.transit_days, second.lower, second.upper, second.coverage) == (
        4.0, 0.0, 0.0, 0.0)


def test_kind_answers_that_do_not_add_up_are_refused() -> None:
    classes = ("x", "y")
    rows = _kind_response("classification", [
        prediction_pb2.Prediction(prediction_id="a", label="x", probabilities=[0.5, 0.3, 0.2])],
        classes)
    with pytest.raises(ValueError, match=r"predictions\[0\]\.probabilities"):
        _convert.predict_result(rows)
    columns = _as_columns(_kind_response("classification", [
        prediction_pb2.Prediction(prediction_id="a", label="x", probabilities=[0.5, 0.5])],
        classes))
    columns.columns.probabilities.append(0.0)
    with pytest.raises(ValueError, match="differ in length"):
        _convert.predict_result(columns)
    repeated = _kind_response("classification", [], ("x", "x"))
    with pytest.raises(ValueError, match="class_names"):
        _convert.predict_result(repeated)
    half = _as_columns(_kind_response("regression", [
        prediction_pb2.Prediction(prediction_id="a", value=1.0,
                                  interval=prediction_pb2.Interval(lower=0, upper=2))]))
    del half.columns.upper[:]
    with pytest.raises(ValueError, match="lower and upper"):
        _convert.predict_result(half)


# --------------------------------------------------------------------------- outcomes


def test_outcome_items_name_their_actual() -> None:
    request = _convert.build_report_outcome_request([
        waybill_client.Outcome("a", value=-4.5),
        waybill_client.Outcome("b", label="late"),
        waybill_client.Outcome("c", transit_days=3),
        waybill_client.Outcome("d", delivery_date=dt.date(2026, 11, 30)),
        waybill_client.Outcome("e", delivery_date="2026-12-01"),
        waybill_client.Outcome("f", value=0),
        ("g", 2.5),  # a pair keeps its meaning: transit days
        ("h", -1),  # of either sign: the server judges the model's bounds
        ("i", "2026-12-02"),
    ])
    got = [(o.prediction_id, o.WhichOneof("actual"), getattr(o, o.WhichOneof("actual")))
           for o in request.outcomes]
    assert got == [
        ("a", "value", -4.5), ("b", "label", "late"), ("c", "transit_days", 3.0),
        ("d", "delivery_date", "2026-11-30"), ("e", "delivery_date", "2026-12-01"),
        ("f", "value", 0.0), ("g", "transit_days", 2.5), ("h", "transit_days", -1.0),
        ("i", "delivery_date", "2026-12-02"),
    ]


@pytest.mark.parametrize("kwargs", [{}, {"value": 1.0, "label": "x"},
                                    {"transit_days": 1, "delivery_date": "2026-01-01"}])
def test_an_outcome_takes_exactly_one_actual(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="exactly one actual"):
        waybill_client.Outcome("a", **kwargs)  # type: ignore[arg-type]


def test_outcome_actuals_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        waybill_client.Outcome("a", 1.0)  # type: ignore[misc]


@pytest.mark.parametrize(("outcome", "error", "where"), [
    (waybill_client.Outcome("a", value=True), TypeError, "outcomes[1].value"),
    (waybill_client.Outcome("a", value="3"), TypeError,  # type: ignore[arg-type]
     "outcomes[1].value"),
    (waybill_client.Outcome("a", value=math.nan), ValueError, "outcomes[1].value"),
    (waybill_client.Outcome("a", transit_days=-math.inf), ValueError,
     "outcomes[1].transit_days"),
    (waybill_client.Outcome("a", label=1), TypeError,  # type: ignore[arg-type]
     "outcomes[1].label"),
    (waybill_client.Outcome("a", delivery_date="2026-02-30"), ValueError,
     "outcomes[1].delivery_date"),
    (waybill_client.Outcome("a", delivery_date=dt.datetime(2026, 1, 2)), TypeError,
     "outcomes[1]"),
    (waybill_client.Outcome("a", delivery_date=20260102), TypeError,  # type: ignore[arg-type]
     "outcomes[1].delivery_date"),
    (waybill_client.Outcome(7, value=1.0), TypeError,  # type: ignore[arg-type]
     "outcomes[1].prediction_id"),
])
def test_unsendable_outcome_items_are_named(outcome: waybill_client.Outcome,
                                            error: type[Exception], where: str) -> None:
    with pytest.raises(error) as caught:
        _convert.build_report_outcome_request([("ok", 1), outcome])
    assert where in str(caught.value)


# --------------------------------------------------------------------------- errors


class FakeRpcError(grpc.RpcError):
    """What grpc raises for a failed call: an RpcError that is also a grpc.Call."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing: tuple[tuple[str, str | bytes], ...] | None = (),
    ) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailing = trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...] | None:
        return self._trailing


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _rich_error(status: status_pb2.Status) -> FakeRpcError:
    wire = rpc_status.to_status(status)  # how a server puts it on the wire
    return FakeRpcError(wire.code, wire.details, tuple(wire.trailing_metadata))


def test_invalid_argument_carries_field_violations() -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="rows[3].zip_code", description="required feature is missing"
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="version", description="no version or label '9.9.9'"
            ),
        ]
    )
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message="2 invalid fields",
        details=[
            _packed(error_details_pb2.ErrorInfo(reason="IGNORED")),
            _packed(bad_request),
        ],
    )
    error = from_rpc_error(_rich_error(status))
    assert type(error) is InvalidArgument
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "2 invalid fields"
    assert error.violations == (
        FieldViolation("rows[3].zip_code", "required feature is missing"),
        FieldViolation("version", "no version or label '9.9.9'"),
    )
    assert error.status == status
    assert str(error) == (
        "INVALID_ARGUMENT: 2 invalid fields [rows[3].zip_code: required feature is missing; "
        "version: no version or label '9.9.9']"
    )
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is InvalidArgument and clone.violations == error.violations


def test_invalid_argument_without_rich_status_has_no_violations() -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad", None))
    assert isinstance(error, InvalidArgument)
    assert error.violations == () and error.status is None


@pytest.mark.parametrize(
    "trailing",
    [
        (("grpc-status-details-bin", b"\xff not a status"),),
        # a trailer that disagrees with the call's own code is ignored
        (
            (
                "grpc-status-details-bin",
                status_pb2.Status(code=code_pb2.NOT_FOUND, message="bad").SerializeToString(),
            ),
        ),
    ],
)
def test_unusable_rich_status_falls_back_to_the_call_status(
    trailing: tuple[tuple[str, bytes], ...],
) -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad", trailing))
    assert isinstance(error, InvalidArgument)
    assert (error.message, error.violations, error.status) == ("bad", (), None)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.INTERNAL, UnexpectedStatus),
        (grpc.StatusCode.UNIMPLEMENTED, UnexpectedStatus),
        (grpc.StatusCode.CANCELLED, UnexpectedStatus),
    ],
)
def test_status_codes_map_to_exception_classes(
    code: grpc.StatusCode, cls: type[WaybillError]
) -> None:
    error = from_rpc_error(FakeRpcError(code, "message from server"))
    assert type(error) is cls
    assert isinstance(error, WaybillError)
    assert (error.code, error.message) == (code, "message from server")
    assert str(error) == f"{code.name}: message from server"
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls and clone.code is code


def test_rpc_error_that_is_not_a_call_maps_to_unknown() -> None:
    error = from_rpc_error(grpc.RpcError("channel closed"))
    assert type(error) is UnexpectedStatus
    assert error.code is grpc.StatusCode.UNKNOWN
    assert error.message == "channel closed"


def test_public_api_exports() -> None:
    for name in waybill_client.__all__:
        assert hasattr(waybill_client, name), name


# --------------------------------------------------------------------------- retry policy
# The clients retry through gRPC's retry policy (the channel's service config); these check
# the policy they hand to gRPC. tests/test_client_transport.py checks what gRPC does with it.


def test_retry_policy_is_a_service_config_for_the_unary_methods() -> None:
    config = RetryPolicy(retries=3, backoff=0.05, max_backoff=1.0).service_config()
    (method_config,) = config["methodConfig"]
    assert method_config["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.050s",
        "maxBackoff": "1.000s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    # Every unary method, read from the descriptor; never the stream (not replayed).
    unary = {"Predict", "GetModel", "ListModels", "ReportOutcome"}
    assert set(RETRIED_METHODS) == unary
    assert sorted((n["service"], n["method"]) for n in method_config["name"]) == sorted(
        ("waybill.v1.PredictionService", m) for m in unary)


def test_retry_policy_channel_options() -> None:
    options = dict(RetryPolicy().channel_options())
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"]) == RetryPolicy().service_config()
    # Past gRPC's default 256 KiB a call is no longer retried: a big Predict would not be.
    assert options["grpc.per_rpc_retry_buffer_size"] == RETRY_BUFFER_BYTES >= 4 << 20
    # No retries: no policy at all (gRPC refuses maxAttempts below 2).
    assert RetryPolicy(retries=0).retry_policy() is None
    assert dict(RetryPolicy(retries=0).channel_options()) == {"grpc.enable_retries": 1}
    assert retry_options(2, 0.1, 0.5) == RetryPolicy(2, 0.1, 0.5).channel_options()


def test_first_pause_is_capped_by_max_backoff() -> None:
    # gRPC does not cap the first pause by maxBackoff; the old client did (min(max, backoff)).
    policy = RetryPolicy(retries=2, backoff=2.0, max_backoff=0.5).retry_policy()
    assert policy is not None
    assert (policy["initialBackoff"], policy["maxBackoff"]) == ("0.500s", "0.500s")


@given(
    retries=st.integers(min_value=1, max_value=MAX_RETRIES),
    backoff=st.floats(min_value=0.001, max_value=1e6),
    max_backoff=st.floats(min_value=0.001, max_value=1e6),
)
def test_every_valid_policy_maps_to_a_duration_grpc_parses(
    retries: int, backoff: float, max_backoff: float
) -> None:
    policy = RetryPolicy(retries, backoff, max_backoff).retry_policy()
    assert policy is not None
    assert policy["maxAttempts"] == retries + 1 <= 5
    for key, seconds in (("initialBackoff", min(backoff, max_backoff)),
                         ("maxBackoff", max_backoff)):
        text = policy[key]
        # gRPC's form: seconds, a dot, at most 9 digits, "s"; never 0 (refused).
        assert re.fullmatch(r"\d+\.\d{3}s", text), text
        assert float(text[:-1]) > 0
        assert float(text[:-1]) == pytest.approx(seconds, abs=0.0005)


@pytest.mark.parametrize("retries", [5, 10, 50])
def test_more_retries_than_grpc_allows_are_refused(retries: int) -> None:
    with pytest.raises(ValueError, match=r"at most 4.*at most 5 attempts"):
        RetryPolicy(retries=retries)


@pytest.mark.parametrize(
    "kwargs",
    [{"retries": -1}, {"retries": 1.5}, {"retries": True}, {"backoff": -0.1}, {"backoff": 0},
     {"backoff": 0.0004}, {"max_backoff": math.inf}, {"max_backoff": math.nan},
     {"max_backoff": 0}, {"backoff": "0.1"}, {"max_backoff": 1e12}],
)
def test_retry_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_timeout_validation(bad: float) -> None:
    with pytest.raises(ValueError):
        check_timeout(bad)


def test_policy_options_apply_only_to_a_channel_the_client_makes() -> None:
    made: list[tuple[str, list[tuple[str, object]]]] = []

    def insecure(target: str, options: list[tuple[str, object]]) -> str:
        made.append((target, options))
        return "channel"

    def secure(*_: object, **__: object) -> str:
        raise AssertionError("no credentials were given")

    policy = RetryPolicy(retries=2, backoff=0.1, max_backoff=0.2)
    assert open_channel("t", None, None, (), policy, secure, insecure) == ("channel", True)
    assert made[-1] == ("t", policy.channel_options())
    # An option the caller names replaces the policy's.
    own = ("grpc.service_config", "{}")
    open_channel("t", None, None, [own, ("grpc.lb_policy_name", "round_robin")], policy,
                 secure, insecure)
    options = made[-1][1]
    assert [v for k, v in options if k == "grpc.service_config"] == ["{}"]
    assert ("grpc.enable_retries", 1) in options
    assert ("grpc.lb_policy_name", "round_robin") in options
    # A given channel is used as it is: a retry policy for it is refused, not ignored.
    assert open_channel("t", "given", None, (), RetryPolicy(), secure, insecure) == ("given", False)
    with pytest.raises(ValueError, match="retry_options"):
        open_channel("t", "given", None, (), policy, secure, insecure)
