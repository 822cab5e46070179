"""Pure conversions shared by the sync and asyncio clients: rows, metadata, responses.

Nothing here does I/O; both ``client.py`` and ``aio.py`` build requests and read responses
through these functions, so the two clients cannot drift apart.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from itertools import chain, repeat
from typing import Any

from google.protobuf import struct_pb2
from waybill.v1 import prediction_pb2

from .errors import WaybillError, from_predict_error

__all__ = [
    "COLUMNS_MIN_ROWS",
    "MAX_OUTCOMES",
    "METADATA_MODEL_VERSION",
    "METADATA_ROUTING_KEY",
    "Metadata",
    "Outcome",
    "OutcomeReport",
    "PredictResult",
    "PredictionResult",
    "build_predict_request",
    "build_report_outcome_request",
    "call_metadata",
    "normalize_metadata",
    "outcome_report",
    "pin",
    "predict_result",
    "route_reason_name",
    "routing_key",
    "row_to_struct",
    "rows_to_columns",
    "rows_to_structs",
    "trace_metadata",
]

METADATA_MODEL_VERSION = "x-model-version"
METADATA_ROUTING_KEY = "x-routing-key"

#: gRPC metadata as the stubs take it: ``(key, value)`` pairs, ``bytes`` values for ``-bin`` keys.
Metadata = tuple[tuple[str, str | bytes], ...]

#: Outcomes per ``ReportOutcome`` call the server accepts; split bigger batches.
MAX_OUTCOMES = 1000

#: From this many rows a request goes as columns (if it transposes cleanly), as there columns
#: cost the server less than Struct rows: parse+convert+validate, rows vs columns, is 1 row
#: 39 vs 72 us, 4 rows 90 vs 95, 8 rows 158 vs 109, 16 rows 241 vs 120, 64 rows 780 vs 177.
COLUMNS_MIN_ROWS = 8

# Struct numbers are IEEE doubles: integers beyond 2**53 would silently change value.
_MAX_EXACT_INT = 2**53
_ROUTE_REASON_PREFIX = "ROUTE_REASON_"
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# PredictResponse.kind of a classifier.
_CLASSIFICATION = "classification"


# --------------------------------------------------------------------------- rows


def row_to_struct(row: Mapping[str, object], index: int = 0) -> struct_pb2.Struct:
    """Convert one feature row (a flat ``dict``) to a ``google.protobuf.Struct``.

    Values may be ``str``, ``bool``, ``int``, ``float`` or ``None`` (numbers from numpy and
    friends are accepted through the ``numbers`` ABCs), and ``datetime.date`` is sent as
    ``YYYY-MM-DD``. Nested objects and lists, ``datetime.datetime``, ``bytes`` and other types
    raise ``TypeError``; NaN, infinities and integers too large for a double raise
    ``ValueError``. Both messages name the offending field as ``rows[<index>].<key>``.
    """
    if not isinstance(row, Mapping):
        raise TypeError(
            f"rows[{index}] is {type(row).__name__}, expected a mapping of feature name to value"
        )
    struct = struct_pb2.Struct()
    for key, value in row.items():
        if not isinstance(key, str):
            raise TypeError(
                f"rows[{index}] has a {type(key).__name__} key {key!r}; feature names are str"
            )
        _set_value(struct.fields[key], value, f"rows[{index}].{key}")
    return struct


def rows_to_structs(rows: Sequence[Mapping[str, object]]) -> list[struct_pb2.Struct]:
    """Convert a sequence of rows; see ``row_to_struct`` for the accepted values."""
    if isinstance(rows, Mapping):
        raise TypeError("rows must be a sequence of mappings; wrap a single row in a list")
    if isinstance(rows, str | bytes) or not isinstance(rows, Iterable):
        raise TypeError(f"rows must be a sequence of mappings, not {type(rows).__name__}")
    return [row_to_struct(row, index) for index, row in enumerate(rows)]


def _set_value(target: struct_pb2.Value, value: object, where: str) -> None:
    # Order matters: bool is an int, and datetime is a date.
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, numbers.Integral):
        as_int = int(value)
        if abs(as_int) > _MAX_EXACT_INT:
            raise ValueError(
                f"{where}: integer {as_int} is too large to send exactly (|n| > 2**53)"
            )
        target.number_value = float(as_int)
    elif isinstance(value, numbers.Real):
        as_float = float(value)
        if not math.isfinite(as_float):
            raise ValueError(f"{where}: {as_float} is not a finite number and is not valid JSON")
        target.number_value = as_float
    elif isinstance(value, _dt.datetime):
        raise TypeError(
            f"{where}: datetime is not accepted; pass a datetime.date or a 'YYYY-MM-DD' string"
        )
    elif isinstance(value, _dt.date):
        target.string_value = value.isoformat()
    elif isinstance(value, Mapping | list | tuple | set | frozenset):
        raise TypeError(
            f"{where}: nested {type(value).__name__} is not accepted; "
            "feature values are flat JSON scalars (str, int, float, bool, None)"
        )
    else:
        raise TypeError(
            f"{where}: {type(value).__name__} is not JSON-serializable; "
            "feature values are str, int, float, bool or None"
        )


# --------------------------------------------------------------------------- columns

_NONE_TYPE = type(None)
_FLOAT_TYPES = frozenset({float})
# The list of a Column each value type goes in; dates go in strings as YYYY-MM-DD.
_BASIC_KINDS: dict[type, str] = {bool: "booleans", int: "numbers", float: "numbers",
                                 str: "strings"}
_PLACEHOLDERS: dict[str, object] = {"booleans": False, "numbers": 0.0, "strings": "",
                                    "dates": ""}


def _kind(value_type: type) -> str | None:
    """Which Column list a value type goes in; None for types only rows can carry (or
    refuse: the row path names the bad value)."""
    kind = _BASIC_KINDS.get(value_type)
    if kind is not None:
        return kind
    if issubclass(value_type, str):
        return "strings"
    if issubclass(value_type, _dt.datetime):
        return None  # refused by the row path
    if issubclass(value_type, _dt.date):
        return "dates"
    if issubclass(value_type, numbers.Real) and not issubclass(value_type, bool):
        return "numbers"
    return None


def _column_kind(value_types: set[type]) -> str | None:
    """The one Column list every value type of a feature goes in, or None if they differ."""
    if len(value_types) == 1:
        return _kind(next(iter(value_types)))
    kinds = {_kind(t) for t in value_types}
    if kinds == {"strings", "dates"}:
        return "dates"  # strs and dates: all sent as strings
    return kinds.pop() if len(kinds) == 1 else None


def _sendable_numbers(values: list[Any], value_types: set[type]) -> bool:
    """Whether a numbers column holds only values the row path would send: finite, and
    integers within 2**53. C-level passes over the values; a per-value look only when a
    big number shows up among integers."""
    try:
        total = sum(values, 0.0)
    except (OverflowError, TypeError):
        return False  # an int beyond a double (or an odd number type)
    if not math.isfinite(total) and not all(map(math.isfinite, values)):
        return False  # NaN or an infinity (not just finite values adding up past a double)
    if value_types <= _FLOAT_TYPES:
        return True
    big = max(values) > _MAX_EXACT_INT or min(values) < -_MAX_EXACT_INT
    return not big or not any(
        isinstance(v, numbers.Integral) and abs(int(v)) > _MAX_EXACT_INT for v in values
    )


def rows_to_columns(rows: Sequence[Mapping[str, object]]) -> list[prediction_pb2.Column] | None:
    """``rows`` as one typed ``Column`` per feature, or ``None`` when they do not transpose
    cleanly and must go as rows.

    A feature's non-None values must all be bools (``booleans``), all numbers that are not
    bools (``numbers``), or all strs or ``datetime.date`` (``strings``, dates as
    ``YYYY-MM-DD``). ``None`` and absent keys are listed in ``missing`` (placeholder 0, ""
    or false); a feature no row has a value for is left out. A feature mixing types, holding
    a list, a dict or any value the row path refuses (NaN, a datetime, ...) gives ``None``:
    sent as rows, the server (or ``row_to_struct``) names the bad value per row.
    """
    for row in rows:
        if not isinstance(row, Mapping):
            return None
    columns: list[prediction_pb2.Column] = []
    for name in dict.fromkeys(chain.from_iterable(rows)):
        if not isinstance(name, str):
            return None
        values: list[Any] = [row.get(name) for row in rows]
        value_types = set(map(type, values))
        missing: list[int] = []
        if _NONE_TYPE in value_types:
            value_types.discard(_NONE_TYPE)
            if not value_types:
                continue  # no row has a value: leaving the column out says so
            missing = [i for i, v in enumerate(values) if v is None]
        kind = _column_kind(value_types)
        if kind is None:
            return None
        if missing:
            placeholder = _PLACEHOLDERS[kind]
            for i in missing:
                values[i] = placeholder
        if kind == "numbers" and not _sendable_numbers(values, value_types):
            return None
        if kind == "dates":
            kind = "strings"
            values = [v.isoformat() if isinstance(v, _dt.date) else v for v in values]
        try:
            columns.append(prediction_pb2.Column(name=name, missing=missing, **{kind: values}))
        except (TypeError, ValueError, OverflowError):
            return None  # protobuf refused a value: the row path names it
    return columns


def build_predict_request(
    model: str, rows: Sequence[Mapping[str, object]], columns: bool | None = None
) -> prediction_pb2.PredictRequest:
    """The ``PredictRequest`` for ``model`` and ``rows``. Pins travel as metadata, not here.

    The rows go as columns when there are at least ``COLUMNS_MIN_ROWS`` of them (any number
    with ``columns=True``; never with ``columns=False``) and they transpose cleanly (see
    ``rows_to_columns``); as ``Struct`` rows otherwise.
    """
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string")
    if (
        columns is not False
        and isinstance(rows, Sequence)
        and not isinstance(rows, str | bytes)
        and (columns or len(rows) >= COLUMNS_MIN_ROWS)
    ):
        transposed = rows_to_columns(rows)
        # No column at all (every value missing) would lose the row count: send rows.
        if transposed:
            return prediction_pb2.PredictRequest(model=model, columns=transposed)
    return prediction_pb2.PredictRequest(model=model, rows=rows_to_structs(rows))


# --------------------------------------------------------------------------- outcomes

_ACTUAL_FIELDS = ("value", "label", "transit_days", "delivery_date")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One actual to report against a ``prediction_id``, for a model of any kind.

    Give exactly one actual, by keyword::

        Outcome(pid, value=-4.5)             # a regression model: a number in its unit
        Outcome(pid, label="late")           # a classifier: one of its class names
        Outcome(pid, transit_days=3)         # a delivery model: days (same as value)
        Outcome(pid, delivery_date="2026-11-30")  # a delivery model: a date or YYYY-MM-DD

    Numbers of either sign are sent as given: the server checks them against the model's
    bounds (``GetModel``: ``output.outcome_min`` / ``outcome_max``). ``report_outcomes``
    checks types and finiteness before sending, naming ``outcomes[<i>].<field>``.
    A ``(prediction_id, actual)`` pair still means transit days or a delivery date.
    """

    prediction_id: str
    _: KW_ONLY
    value: float | None = None
    label: str | None = None
    transit_days: float | None = None
    delivery_date: _dt.date | str | None = None

    def __post_init__(self) -> None:
        given = [name for name in _ACTUAL_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise TypeError(
                "Outcome takes exactly one actual (value=, label=, transit_days= or "
                f"delivery_date=); got {', '.join(given) or 'none'}"
            )


def build_report_outcome_request(
    outcomes: Iterable[tuple[str, object] | Outcome],
) -> prediction_pb2.ReportOutcomeRequest:
    """The ``ReportOutcomeRequest`` for ``outcomes``: ``Outcome`` items, or
    ``(prediction_id, actual)`` pairs.

    A pair's ``actual`` is the transit time in days (an ``int`` or ``float``; numpy numbers
    work), or the delivery date as a ``datetime.date`` or a ``YYYY-MM-DD`` string. An
    ``Outcome`` names its actual: ``value`` (any model's number), ``label`` (a class name),
    ``transit_days`` or ``delivery_date``. Wrong types raise ``TypeError``, and NaN,
    infinities and strings that are not ``YYYY-MM-DD`` dates raise ``ValueError``, naming
    the item as ``outcomes[<i>]`` before anything is sent. The server judges the rest
    (bounds of a number, an unknown class, a date before the order date, unknown ids,
    batch size).
    """
    if isinstance(outcomes, Mapping):
        raise TypeError(
            "outcomes must be an iterable of (prediction_id, actual) pairs or Outcome items; "
            "use mapping.items() to report a dict"
        )
    if isinstance(outcomes, str | bytes) or not isinstance(outcomes, Iterable):
        raise TypeError(
            f"outcomes must be an iterable of (prediction_id, actual) pairs or Outcome items, "
            f"not {type(outcomes).__name__}"
        )
    return prediction_pb2.ReportOutcomeRequest(
        outcomes=[_outcome(item, index) for index, item in enumerate(outcomes)]
    )


def _outcome(item: object, index: int) -> prediction_pb2.Outcome:
    where = f"outcomes[{index}]"
    if isinstance(item, Outcome):
        return _named_outcome(item, where)
    if isinstance(item, str | bytes | Mapping) or not isinstance(item, Sequence) or len(item) != 2:
        raise TypeError(
            f"{where} must be a (prediction_id, actual) pair or an Outcome, got {item!r}"
        )
    prediction_id, actual = item
    outcome = prediction_pb2.Outcome(prediction_id=_prediction_id(prediction_id, where))
    # Order matters: bool is an int, and datetime is a date.
    if isinstance(actual, bool):
        raise TypeError(f"{where}: bool is not an actual; pass transit days or a delivery date")
    if isinstance(actual, numbers.Real):
        outcome.transit_days = _number(actual, f"{where}.transit_days")
    elif isinstance(actual, _dt.date | str):
        outcome.delivery_date = _date_text(actual, where)
    else:
        raise TypeError(
            f"{where}: {type(actual).__name__} is not an actual; pass transit days "
            "(int or float) or a delivery date (datetime.date or 'YYYY-MM-DD'), "
            "or an Outcome (value=, label=) for other models"
        )
    return outcome


def _named_outcome(item: Outcome, where: str) -> prediction_pb2.Outcome:
    outcome = prediction_pb2.Outcome(prediction_id=_prediction_id(item.prediction_id, where))
    if item.label is not None:
        if not isinstance(item.label, str):
            raise TypeError(f"{where}.label must be a str (a class name), not "
                            f"{type(item.label).__name__}")
        outcome.label = item.label
    elif item.delivery_date is not None:
        if not isinstance(item.delivery_date, _dt.date | str):
            raise TypeError(f"{where}.delivery_date must be a datetime.date or a 'YYYY-MM-DD' "
                            f"string, not {type(item.delivery_date).__name__}")
        outcome.delivery_date = _date_text(item.delivery_date, where)
    else:
        name = "value" if item.value is not None else "transit_days"
        number: object = getattr(item, name)
        if isinstance(number, bool) or not isinstance(number, numbers.Real):
            raise TypeError(f"{where}.{name} must be a number (int or float), not "
                            f"{type(number).__name__}")
        setattr(outcome, name, _number(number, f"{where}.{name}"))
    return outcome


def _prediction_id(prediction_id: object, where: str) -> str:
    if not isinstance(prediction_id, str):
        raise TypeError(
            f"{where}.prediction_id must be a str, not {type(prediction_id).__name__}"
        )
    return prediction_id


def _number(actual: numbers.Real, where: str) -> float:
    number = float(actual)
    if not math.isfinite(number):
        raise ValueError(f"{where}: {number} is not a finite number")
    return number


def _date_text(actual: _dt.date | str, where: str) -> str:
    if isinstance(actual, _dt.datetime):
        raise TypeError(
            f"{where}: datetime is not accepted; pass a datetime.date or a 'YYYY-MM-DD' string"
        )
    if isinstance(actual, _dt.date):
        return actual.isoformat()
    if not _DATE_RE.fullmatch(actual):
        raise ValueError(f"{where}.delivery_date: {actual!r} is not a YYYY-MM-DD date")
    _parse_date(actual, f"{where}.delivery_date")  # raises ValueError for 2025-02-30
    return actual


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """A ``ReportOutcome`` response.

    ``recorded`` outcomes were new; ``duplicates`` had already been recorded with the same
    actual (by an earlier call, a retry, or a repeat in the same batch) and changed nothing.
    """

    recorded: int
    duplicates: int


def outcome_report(response: prediction_pb2.ReportOutcomeResponse) -> OutcomeReport:
    """Wrap a ``ReportOutcomeResponse`` in an ``OutcomeReport``."""
    return OutcomeReport(recorded=int(response.recorded), duplicates=int(response.duplicates))


# --------------------------------------------------------------------------- metadata


def pin(version: str) -> Metadata:
    """Metadata pinning a call to an exact version (``"1.1.0"``) or a label (``"stable"``).

    Usable with the raw stubs too: ``stub.Predict(request, metadata=pin("canary"))``.
    """
    return _pin(version)


def routing_key(key: str) -> Metadata:
    """Metadata making the weighted version choice sticky for ``key`` (same key, same version).

    The value must be printable ASCII, as gRPC metadata requires; hash other identifiers first.
    """
    return _routing_key(key)


def _pin(version: str) -> Metadata:
    return ((METADATA_MODEL_VERSION, _header_value(version, "version")),)


def _routing_key(key: str) -> Metadata:
    return ((METADATA_ROUTING_KEY, _header_value(key, "routing_key")),)


def _header_value(value: str, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty; pass None to leave it unset")
    if not value.isascii() or not value.isprintable() or value != value.strip():
        raise ValueError(
            f"{name} {value!r} is not a valid gRPC metadata value "
            "(printable ASCII without leading or trailing spaces)"
        )
    return value


def _load_inject() -> Callable[[dict[str, str]], None] | None:
    """``opentelemetry.propagate.inject`` if opentelemetry-api is installed, else ``None``."""
    try:
        module = importlib.import_module("opentelemetry.propagate")
    except ImportError:
        return None
    inject = getattr(module, "inject", None)
    return inject if callable(inject) else None


_INJECT = _load_inject()


def trace_metadata() -> Metadata:
    """W3C trace context (``traceparent``, ``tracestate``, ``baggage``) of the current span.

    Empty when opentelemetry-api is not installed or no span is active.
    """
    if _INJECT is None:
        return ()
    carrier: dict[str, str] = {}
    _INJECT(carrier)
    return tuple((str(k).lower(), str(v)) for k, v in carrier.items())


def call_metadata(
    base: Metadata,
    *,
    version: str | None = None,
    routing_key: str | None = None,
) -> Metadata:
    """Metadata for one call: ``base`` (the client's), the pin and routing key, trace context.

    A per-call ``version`` or ``routing_key`` replaces the same header in ``base``, and the
    current trace context replaces any stale trace headers.
    """
    extra: list[tuple[str, str | bytes]] = []
    if version is not None:
        extra.extend(_pin(version))
    if routing_key is not None:
        extra.extend(_routing_key(routing_key))
    extra.extend(trace_metadata())
    replaced = {key for key, _ in extra}
    return tuple(item for item in base if item[0] not in replaced) + tuple(extra)


def outcome_metadata(base: Metadata, token: str | None) -> Metadata:
    """The client's metadata for ``ReportOutcome``: ``base`` with ``authorization: Bearer
    <token>`` in place of any authorization it holds; ``base`` itself without a token.

    Only outcome reports carry the outcome token: a prediction never needs it, and a token
    sent on every call would reach whatever else sees the prediction traffic.
    """
    if token is None:
        return base
    if not isinstance(token, str):
        raise TypeError(f"outcome_token must be a str, not {type(token).__name__}")
    if not token or token != token.strip() or not (token.isascii() and token.isprintable()):
        # The server refuses such a token at start; say so here rather than UNAUTHENTICATED.
        raise ValueError("outcome_token must be non-empty printable ASCII without surrounding "
                         "whitespace")
    kept = tuple(item for item in base if item[0] != "authorization")
    return (*kept, ("authorization", f"Bearer {token}"))


def normalize_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> Metadata:
    """Check and freeze user metadata; gRPC requires lowercase keys."""
    items: list[tuple[str, str | bytes]] = []
    for item in metadata:
        key, value = item
        if not isinstance(key, str) or key != key.lower():
            raise ValueError(f"metadata key {key!r} must be a lowercase str")
        if key.endswith("-bin") != isinstance(value, bytes):
            raise ValueError(f"metadata {key!r}: use bytes values exactly for keys ending in -bin")
        items.append((key, value))
    return tuple(items)


# --------------------------------------------------------------------------- responses


def route_reason_name(value: int) -> str:
    """``ROUTE_REASON_STICKY`` -> ``"sticky"``; an unknown number -> ``"unknown(<n>)"``."""
    try:
        name = prediction_pb2.RouteReason.Name(value)
    except ValueError:
        return f"unknown({int(value)})"
    return str(name).removeprefix(_ROUTE_REASON_PREFIX).lower()


@dataclass(frozen=True, slots=True)
class PredictionResult:
    """One row's prediction. What is set follows the version's kind (``PredictResult.kind``):

    * every kind: ``prediction_id``, to report the actual against later;
    * regression kinds (``"quantiles"``, ``"regression"``): ``value``, the prediction in the
      model's unit (a quantile model's median); ``lower``, ``upper`` and ``coverage`` when the
      version answers an interval, else ``None``;
    * delivery models (a target in days counted from a date field, like the demo's
      ``delivery_eta``): also ``transit_days`` (equal to ``value``) and the dates
      ``delivery_date`` / ``latest_delivery_date`` as ``datetime.date`` (``None`` for a row
      without an order date); ``transit_days`` is ``None`` for every other model;
    * classifiers (``"classification"``): ``label``, the most probable class, and
      ``probabilities``, a ``dict`` of class name to probability in the order of
      ``PredictResult.class_names`` (a new dict per result; it sums to 1).

    Answers of a server older than model kinds (``PredictResult.kind == ""``) read as
    before: ``transit_days`` and the interval always set (``0.0`` for an interval the
    server left out), ``value`` ``None``.
    """

    prediction_id: str
    transit_days: float | None
    lower: float | None
    upper: float | None
    coverage: float | None
    delivery_date: _dt.date | None
    latest_delivery_date: _dt.date | None
    value: float | None = None
    label: str | None = None
    # Left out of the hash (a dict has none), so results stay hashable.
    probabilities: dict[str, float] | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class PredictResult:
    """A ``Predict`` response: which version answered, why, and one prediction per row.

    ``kind`` is the version's kind, ``"quantiles"``, ``"regression"`` or
    ``"classification"`` (``""`` from a server older than model kinds); ``class_names`` a
    classifier's classes, the order of every ``PredictionResult.probabilities``.
    ``response`` is the raw ``waybill.v1.PredictResponse``.
    """

    model: str
    version: str
    route_reason: str
    predictions: tuple[PredictionResult, ...]
    response: prediction_pb2.PredictResponse = field(repr=False, compare=False)
    kind: str = ""
    class_names: tuple[str, ...] = ()


def _parse_date(text: str, where: str) -> _dt.date | None:
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError(text)
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a YYYY-MM-DD date") from None


def _parse_dates(texts: Sequence[str], where: str) -> list[_dt.date | None]:
    """Dates of a response column, each distinct text parsed once (orders share dates)."""
    parsed: dict[str, _dt.date | None] = {}
    for text in set(texts):
        try:
            parsed[text] = _parse_date(text, where)
        except ValueError:
            index = list(texts).index(text)
            raise ValueError(f"{where}[{index}]: {text!r} is not a YYYY-MM-DD date") from None
    return list(map(parsed.__getitem__, texts))


def _class_names(response: prediction_pb2.PredictResponse) -> tuple[str, ...]:
    names = tuple(response.class_names)
    if len(set(names)) != len(names):
        raise ValueError(f"class_names: {list(names)} repeats a class")
    return names


def _column_predictions(
    columns: prediction_pb2.PredictionColumns, kind: str, classes: tuple[str, ...]
) -> tuple[PredictionResult, ...]:
    n = len(columns.prediction_id)
    k = len(classes)
    # A list the server did not fill for this kind is empty; a filled one has an entry
    # per order (probabilities: k per order, row-major).
    lists = {
        "transit_days": (columns.transit_days, n),
        "lower": (columns.lower, n),
        "upper": (columns.upper, n),
        "delivery_date": (columns.delivery_date, n),
        "latest_delivery_date": (columns.latest_delivery_date, n),
        "value": (columns.value, n),
        "label": (columns.label, n),
        "probabilities": (columns.probabilities, n * k),
    }
    if any(len(values) not in (0, size) for values, size in lists.values()):
        raise ValueError(
            f"columns: the prediction lists differ in length ({n} prediction ids, "
            f"{k} class names; "
            + ", ".join(f"{name} {len(values)}" for name, (values, _) in lists.items())
            + ")"
        )
    if bool(columns.lower) != bool(columns.upper):
        raise ValueError("columns: lower and upper must come together")
    if n == 0:
        return ()
    # Classifier answers leave label filled even for a class named "".
    labels = columns.label if columns.label or kind == _CLASSIFICATION else None
    flat = list(columns.probabilities)
    probabilities = (
        [dict(zip(classes, flat[i * k:(i + 1) * k], strict=True)) for i in range(n)]
        if flat else None
    )
    interval = bool(columns.lower)
    return tuple(map(
        PredictionResult,
        columns.prediction_id,
        _or_none(columns.transit_days, n),
        _or_none(columns.lower, n),
        _or_none(columns.upper, n),
        repeat(columns.coverage if interval else None, n),
        _parse_dates(columns.delivery_date, "columns.delivery_date")
        if columns.delivery_date else repeat(None, n),
        _parse_dates(columns.latest_delivery_date, "columns.latest_delivery_date")
        if columns.latest_delivery_date else repeat(None, n),
        _or_none(columns.value, n),
        repeat(None, n) if labels is None else labels,
        repeat(None, n) if probabilities is None else probabilities,
    ))


def _or_none(values: Sequence[float], n: int) -> Iterable[float | None]:
    return values if values else repeat(None, n)


def predict_result(response: prediction_pb2.PredictResponse) -> PredictResult:
    """Wrap a ``PredictResponse`` in a ``PredictResult``, whichever shape it came in
    (``predictions`` for a request of rows, ``columns`` for a columnar one)."""
    classes = _class_names(response)
    if response.HasField("columns"):
        predictions = _column_predictions(response.columns, response.kind, classes)
    else:
        predictions = _row_predictions(response.predictions, response.kind, classes)
    return PredictResult(
        model=response.model,
        version=response.version,
        route_reason=route_reason_name(response.route_reason),
        predictions=predictions,
        response=response,
        kind=response.kind,
        class_names=classes,
    )


def _row_predictions(
    predictions: Sequence[prediction_pb2.Prediction], kind: str, classes: tuple[str, ...]
) -> tuple[PredictionResult, ...]:
    legacy = not kind  # a server older than kinds: every answer was a delivery model's
    # transit_days has no presence on the wire: a delivery model answers it (equal to
    # value) with dates beside it, so one row that shows either marks the whole answer
    # (one version). Only an answer whose every row is 0 days without an order date
    # cannot tell: it reads as not a delivery model's (transit_days None; value is 0.0).
    delivery = legacy or any(
        p.transit_days or p.delivery_date or p.latest_delivery_date for p in predictions
    )
    return tuple(
        _row_prediction(p, f"predictions[{i}]", legacy, delivery, kind, classes)
        for i, p in enumerate(predictions)
    )


def _row_prediction(p: prediction_pb2.Prediction, where: str, legacy: bool, delivery: bool,
                    kind: str, classes: tuple[str, ...]) -> PredictionResult:
    interval = legacy or p.HasField("interval")
    probabilities = None
    if p.probabilities:
        if len(p.probabilities) != len(classes):
            raise ValueError(f"{where}.probabilities: {len(p.probabilities)} probabilities "
                             f"for {len(classes)} class names")
        probabilities = dict(zip(classes, p.probabilities, strict=True))
    return PredictionResult(
        prediction_id=p.prediction_id,
        transit_days=p.transit_days if delivery else None,
        lower=p.interval.lower if interval else None,
        upper=p.interval.upper if interval else None,
        coverage=p.interval.coverage if interval else None,
        delivery_date=_parse_date(p.delivery_date, f"{where}.delivery_date"),
        latest_delivery_date=_parse_date(p.latest_delivery_date,
                                         f"{where}.latest_delivery_date"),
        value=p.value if p.HasField("value") else None,
        label=p.label if p.label or kind == _CLASSIFICATION else None,
        probabilities=probabilities,
    )


def stream_request(model: str, rows: Sequence[Mapping[str, object]],
                   unsendable: list[Exception],
                   columns: bool | None = None) -> prediction_pb2.PredictStreamRequest | None:
    """One PredictStream request (as columns or rows, as ``build_predict_request`` decides);
    ``None`` (the error kept in ``unsendable``, to be raised once the answers before it are
    in) when the rows cannot be sent."""
    try:
        return prediction_pb2.PredictStreamRequest(
            request=build_predict_request(model, rows, columns))
    except (TypeError, ValueError) as exc:
        unsendable.append(exc)
        return None


def stream_answer(answer: prediction_pb2.PredictStreamResponse) -> PredictResult | WaybillError:
    """A PredictStream answer: the result, or the error ``predict`` would have raised."""
    if answer.WhichOneof("result") == "response":
        return predict_result(answer.response)
    return from_predict_error(answer.error)
