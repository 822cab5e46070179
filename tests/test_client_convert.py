"""Client-side conversions, error mapping and retry timing; no server needed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import pickle
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
from waybill_client._retry import CallAttempts, RetryPolicy, check_timeout
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


# --------------------------------------------------------------------------- retries


def test_backoff_caps_double_then_saturate() -> None:
    policy = RetryPolicy(retries=10, backoff=0.05, max_backoff=1.0)
    caps = [policy.cap(n) for n in range(8)]
    assert caps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert policy.cap(10_000) == 1.0  # no overflow for absurd attempt numbers


def test_full_jitter_scales_the_cap() -> None:
    policy = RetryPolicy(retries=3, backoff=0.1, max_backoff=1.0)
    assert policy.delay(1, remaining=10.0, jitter=0.0) == 0.0
    assert policy.delay(1, remaining=10.0, jitter=0.5) == pytest.approx(0.1)
    assert policy.delay(1, remaining=10.0, jitter=0.999) == pytest.approx(0.1998)


def test_no_retry_past_the_retry_count_or_the_deadline() -> None:
    policy = RetryPolicy(retries=2, backoff=0.1, max_backoff=1.0)
    assert policy.delay(2, remaining=10.0, jitter=0.5) is None  # retries used up
    assert policy.delay(0, remaining=0.05, jitter=0.5) is None  # pause would reach the deadline
    assert policy.delay(0, remaining=0.06, jitter=0.5) == pytest.approx(0.05)
    assert RetryPolicy(retries=0).delay(0, remaining=10.0, jitter=0.0) is None


def test_only_unavailable_is_retried() -> None:
    policy = RetryPolicy()
    retried = {code for code in grpc.StatusCode if policy.should_retry(code)}
    assert retried == {grpc.StatusCode.UNAVAILABLE}


@pytest.mark.parametrize(
    "kwargs",
    [{"retries": -1}, {"retries": 1.5}, {"backoff": -0.1}, {"max_backoff": math.inf}],
)
def test_retry_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_timeout_validation(bad: float) -> None:
    with pytest.raises(ValueError):
        check_timeout(bad)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _unavailable() -> FakeRpcError:
    return FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")


@given(
    timeout=st.floats(min_value=0.001, max_value=5.0),
    retries=st.integers(min_value=0, max_value=12),
    backoff=st.floats(min_value=0.0, max_value=1.0),
    max_backoff=st.floats(min_value=0.0, max_value=2.0),
    attempt_cost=st.floats(min_value=0.0, max_value=0.5),
    jitters=st.lists(st.floats(min_value=0.0, max_value=0.9999), min_size=13, max_size=13),
)
def test_retry_schedule_never_outlives_the_deadline(
    timeout: float,
    retries: int,
    backoff: float,
    max_backoff: float,
    attempt_cost: float,
    jitters: list[float],
) -> None:
    """Attempts keep failing with UNAVAILABLE: every attempt and pause fits in the deadline."""
    clock = FakeClock()
    start = clock.now
    draws = iter(jitters)
    attempts = CallAttempts(
        RetryPolicy(retries, backoff, max_backoff), timeout, clock=clock, jitter=lambda: next(draws)
    )
    made = 0
    with pytest.raises(Unavailable) as raised:
        while True:
            attempt_timeout = attempts.timeout()
            assert clock.now + attempt_timeout == pytest.approx(start + timeout)
            made += 1
            clock.now += min(attempt_cost, attempt_timeout)  # the call fails, using some time
            pause = attempts.failed(_unavailable())
            assert 0 <= pause < start + timeout - clock.now
            clock.now += pause
    assert made <= retries + 1
    assert clock.now <= start + timeout + 1e-9
    assert isinstance(raised.value.__cause__, grpc.RpcError)


def test_retries_stop_when_the_pause_overruns_the_deadline() -> None:
    clock = FakeClock()
    attempts = CallAttempts(
        RetryPolicy(retries=5, backoff=0.5, max_backoff=1.0), 1.0, clock=clock, jitter=lambda: 0.5
    )
    assert attempts.timeout() == 1.0
    clock.now += 0.2
    assert attempts.failed(_unavailable()) == 0.25  # 0.5 * cap(0)=0.5
    clock.now += 0.25
    assert attempts.timeout() == pytest.approx(0.55)
    clock.now += 0.2
    # cap(1) = 1.0, jittered 0.5 >= 0.35 left: give up with the UNAVAILABLE error
    first = _unavailable()
    with pytest.raises(Unavailable) as raised:
        attempts.failed(first)
    assert raised.value.__cause__ is first
    assert attempts.attempt == 1


def test_sleep_overshoot_raises_the_last_unavailable_instead_of_a_doomed_attempt() -> None:
    clock = FakeClock()
    attempts = CallAttempts(RetryPolicy(retries=3), 1.0, clock=clock, jitter=lambda: 0.0)
    attempts.timeout()
    last = _unavailable()
    assert attempts.failed(last) == 0.0
    clock.now += 2.0  # the process was descheduled past the deadline
    with pytest.raises(Unavailable) as raised:
        attempts.timeout()
    assert raised.value.__cause__ is last


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    ],
)
def test_other_codes_raise_on_the_first_failure(code: grpc.StatusCode) -> None:
    attempts = CallAttempts(RetryPolicy(retries=3), 2.0, clock=FakeClock(), jitter=lambda: 0.0)
    cause = FakeRpcError(code, "no")
    with pytest.raises(WaybillError) as raised:
        attempts.failed(cause)
    assert raised.value.code is code
    assert raised.value.__cause__ is cause
    assert attempts.attempt == 0
