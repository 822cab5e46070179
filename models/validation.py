"""Validate request values against a version's feature schema and build CatBoost input.

A request's values reach the validator as :class:`Columns`, one sequence per feature
with one value per order (None where an order has none), whether the caller sent
rows (transposed by :func:`rows_to_columns`) or columns. Values are JSON-like (str,
float, bool, None; lists and objects are never valid). :class:`RowValidator` is
compiled once per loaded version and turns the columns into the object matrix
CatBoost takes, or raises :class:`ValidationFailed` with one violation per bad
value, so a caller fixes every problem in one round trip.

A column whose values are all present and well formed (the common case) is checked
and converted in one numpy pass; any other column goes value by value through the
per-value checks, which alone hold the rules and their messages.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.artifact import FeatureSpec, FeatureType, Manifest
from models.calendar import DATE_RE, day_number, days_of, parse_date

# Optional categorical values that are missing are fed to CatBoost as this
# category; optional numbers as NaN (CatBoost's nan_mode handles them).
MISSING_CATEGORY = ""
MAX_CATEGORY_LENGTH = 256
# A request with hundreds of bad fields gets the first ones, not a huge trailer.
MAX_VIOLATIONS = 50
# A column's numpy pass costs ~4 us whatever its length, the value-by-value checks
# ~0.5 us a value: below this many rows, the checks are cheaper.
ONE_PASS_ROWS = 8


@dataclass(frozen=True, slots=True)
class Violation:
    field: str  # e.g. "rows[3].zip_code"
    rule: str  # short rule name, e.g. "out_of_range" (a bounded metric label)
    description: str  # what is wrong and what is allowed


class ValidationFailed(Exception):
    """One or more request fields break the schema; maps to INVALID_ARGUMENT."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = tuple(violations)
        first = self.violations[0]
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}")


@dataclass(frozen=True, slots=True)
class ValidatedRows:
    matrix: np.ndarray  # (rows, model features), dtype=object, CatBoost column order
    # The output date field per row as a day number (models.calendar; None where a
    # row has none), or None when the schema has no date field.
    dates: list[int | None] | None


# One feature's values, one per row: a list, a protobuf repeated field, or (numbers
# sent as columns) a float64 array.
Values = Sequence[Any] | np.ndarray


@dataclass(frozen=True, slots=True)
class Columns:
    """A request's values by feature name: each sequence holds one value per row,
    None where the row has no value. ``by_row`` says how the caller sent them, which
    decides how a bad value is named: ``rows[3].zip_code`` or ``columns.zip_code[3]``
    (``prefix`` names the request field that holds the columns: ``inputs`` for the Open
    Inference Protocol's tensors)."""

    n_rows: int
    values: Mapping[str, Values]
    by_row: bool = True
    prefix: str = "columns"

    def field(self, name: str, row: int | None) -> str:
        if self.by_row:
            return f"rows[{row}].{name}"
        return f"{self.prefix}.{name}" if row is None else f"{self.prefix}.{name}[{row}]"


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> Columns:
    """Transpose rows of feature name -> value into columns."""
    return pairs_to_columns([row.items() for row in rows])


def pairs_to_columns(rows: Sequence[Iterable[tuple[str, Any]]],
                     value: Callable[[Any], Any] | None = None) -> Columns:
    """Transpose rows given as (name, raw value) pairs into columns, reading each raw
    value through ``value`` if given."""
    n = len(rows)
    values: dict[str, list[Any]] = {}
    if n == 1:  # the commonest request: one order
        return Columns(1, {name: [raw if value is None else value(raw)]
                           for name, raw in rows[0]}, by_row=True)
    for index, pairs in enumerate(rows):
        for name, raw in pairs:
            column = values.get(name)
            if column is None:
                column = values[name] = [None] * n
            column[index] = raw if value is None else value(raw)
    return Columns(n, values, by_row=True)


class _Bad(Exception):
    def __init__(self, rule: str, description: str) -> None:
        self.rule = rule
        self.description = description


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(spec: FeatureSpec, value: Any) -> float:
    # bool is an int subclass in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad("wrong_type", f"expected a number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _Bad("not_finite", f"must be finite, got {number}")
    if spec.type is FeatureType.INTEGER and not number.is_integer():
        raise _Bad("not_integer", f"expected a whole number, got {number}")
    if (spec.min is not None and number < spec.min) or (spec.max is not None and number > spec.max):
        raise _Bad("out_of_range", f"{number:g} is outside [{spec.min:g}, {spec.max:g}]"
                   if spec.min is not None and spec.max is not None
                   else f"{number:g} is outside the allowed range (min {spec.min}, max {spec.max})")
    return number


def _boolean(spec: FeatureSpec, value: Any) -> float:
    if not isinstance(value, bool):
        raise _Bad("wrong_type", f"expected true or false, got {_describe(value)}")
    return 1.0 if value else 0.0


def _category_checker(spec: FeatureSpec,
                      known: frozenset[str]) -> Callable[[FeatureSpec, Any], str]:
    examples = ", ".join(repr(c) for c in spec.categories[:5])

    def check(spec: FeatureSpec, value: Any) -> str:
        if not isinstance(value, str):
            raise _Bad("wrong_type", f"expected a string, got {_describe(value)}")
        if len(value) > MAX_CATEGORY_LENGTH:
            raise _Bad("too_long", f"longer than {MAX_CATEGORY_LENGTH} characters")
        if value not in known and not spec.allow_unknown:
            raise _Bad(
                "unknown_category",
                f"unknown category {_describe(value)}; allowed: {examples}"
                + (f" and {len(known) - 5} more" if len(known) > 5 else ""),
            )
        return value

    return check


def _date(spec: FeatureSpec, value: Any) -> int:
    if not isinstance(value, str) or not DATE_RE.match(value):
        raise _Bad("wrong_type", f"expected a date as YYYY-MM-DD, got {_describe(value)}")
    day = parse_date(value)
    if day is None:
        raise _Bad("invalid_date", f"{value!r} is not a calendar date")
    return day_number(day)


def _missing_value(spec: FeatureSpec) -> object:
    if spec.type is FeatureType.CATEGORICAL:
        return MISSING_CATEGORY
    if spec.type is FeatureType.DATE:
        return None  # no order date
    return math.nan


# Where a columnar request puts each type's values (for a column sent in the wrong list).
_COLUMN_LIST = {
    FeatureType.NUMERIC: "numbers",
    FeatureType.INTEGER: "numbers",
    FeatureType.BOOLEAN: "booleans",
    FeatureType.CATEGORICAL: "strings",
    FeatureType.DATE: "strings (YYYY-MM-DD)",
}


def _all_of_type(values: Values, kind: type) -> bool:
    if isinstance(values, np.ndarray):
        return kind is float and values.dtype == np.float64
    return all(type(v) is kind for v in values)


def _fast_numbers(spec: FeatureSpec, values: Values) -> np.ndarray | None:
    missing = 0
    if not _all_of_type(values, float):
        # An optional feature some rows leave out: None becomes NaN, the rest must be floats.
        if spec.required or isinstance(values, np.ndarray):
            return None
        missing = sum(v is None for v in values)
        if not missing or not all(type(v) is float for v in values if v is not None):
            return None
    array = np.asarray(values, dtype=np.float64)
    present = array[~np.isnan(array)] if missing else array
    if len(present) != len(array) - missing or not np.isfinite(present).all():
        return None  # a NaN was sent, or an infinity
    if not len(present):
        return array
    if spec.min is not None and present.min() < spec.min:
        return None
    if spec.max is not None and present.max() > spec.max:
        return None
    if spec.type is FeatureType.INTEGER and not (np.floor(present) == present).all():
        return None
    return array


def _fast_booleans(spec: FeatureSpec, values: Values) -> np.ndarray | None:
    if not _all_of_type(values, bool):
        return None
    return np.asarray(values, dtype=np.float64)


def _fast_categories(spec: FeatureSpec, known: frozenset[str],
                     values: Values) -> list[str] | None:
    if not _all_of_type(values, str):
        return None
    if not spec.allow_unknown and not known.issuperset(values):
        return None
    if max(map(len, values)) > MAX_CATEGORY_LENGTH:
        return None
    return list(values)


def _fast_dates(spec: FeatureSpec, values: Values) -> list[int] | None:
    if isinstance(values, np.ndarray) or not _all_of_type(values, str):
        return None
    return days_of(values)


def _object_matrix(n: int, columns: Sequence[Values]) -> np.ndarray:
    """The (rows, columns) object array CatBoost takes, holding Python floats and strs."""
    matrix = np.empty((n, len(columns)), dtype=object)
    if n == 1:  # one row: one assignment beats a numpy call per column
        matrix[0] = [column[0] for column in columns]
        return matrix
    for index, column in enumerate(columns):
        matrix[:, index] = column
    return matrix


class RowValidator:
    """Compiled checks for one version's schema."""

    def __init__(self, manifest: Manifest) -> None:
        self._known = frozenset(f.name for f in manifest.features)
        self._date_field = manifest.output.date_field
        # (order in the schema, spec, per-value check, one-pass check, rows from which
        # the one pass is used, matrix column or None for dates)
        self._checks: list[tuple[int, FeatureSpec, Callable[[FeatureSpec, Any], Any],
                                 Callable[[Values], Any], int, int | None]] = []
        column = 0
        for order, spec in enumerate(manifest.features):
            check: Callable[[FeatureSpec, Any], Any]
            fast: Callable[[Values], Any]
            if spec.type is FeatureType.DATE:
                check, fast = _date, functools.partial(_fast_dates, spec)
            elif spec.type is FeatureType.CATEGORICAL:
                # One set for both checks, and none where any category is accepted: the
                # demo's 5,865 zip codes made two sets of 0.5 MiB each, per version.
                known = frozenset() if spec.allow_unknown else frozenset(spec.categories)
                check = _category_checker(spec, known)
                fast = functools.partial(_fast_categories, spec, known)
            elif spec.type is FeatureType.BOOLEAN:
                check, fast = _boolean, functools.partial(_fast_booleans, spec)
            else:
                check, fast = _number, functools.partial(_fast_numbers, spec)
            is_input = spec.type is not FeatureType.DATE
            # Dates take the one pass at any size: it is a memo lookup, no numpy.
            one_pass_from = ONE_PASS_ROWS if is_input else 1
            self._checks.append((order, spec, check, fast, one_pass_from,
                                 column if is_input else None))
            column += is_input

    def validate(
        self, rows: Columns | Sequence[Mapping[str, Any]],
        also_known: frozenset[str] = frozenset(),
    ) -> ValidatedRows:
        """Check a request's values; ``also_known`` names fields of sibling versions,
        which are ignored.

        Callers of a model send one row shape whichever version the router picks,
        so a field is unknown only when no served version of the model has it.
        """
        columns = rows if isinstance(rows, Columns) else rows_to_columns(rows)
        n = columns.n_rows
        known = self._known | also_known if also_known else self._known
        model_columns: list[Values] = []
        dates: list[int | None] | None = None
        # (row, order in the schema, violation): sorted at the end so violations read
        # row by row whatever order the columns were checked in.
        found: list[tuple[int, int, Violation]] = []
        for name in columns.values.keys() - known:
            found.extend(self._unknown(columns, name))
        given = columns.values.get
        for order, spec, check, fast, one_pass_from, column in self._checks:
            values = given(spec.name)
            if values is None:
                checked = None
            elif n >= one_pass_from:
                checked = fast(values)
            elif n == 1:  # no list comprehension's frame for the commonest request
                try:
                    checked = [check(spec, values[0])]
                except _Bad:
                    checked = None
            else:
                try:  # every value present and good: the common case for a small request
                    checked = [check(spec, value) for value in values]
                except _Bad:
                    checked = None  # a value is missing (checks refuse None) or bad
            if checked is None:
                checked, bad = self._one_by_one(columns, spec, check, values)
                if bad:
                    found.extend((row, order, v) for row, v in bad)
            if column is not None:
                model_columns.append(checked)
            elif spec.name == self._date_field:
                dates = checked
        if found:
            found.sort(key=lambda item: item[:2])
            raise ValidationFailed([v for _, _, v in found[:MAX_VIOLATIONS]])
        return ValidatedRows(_object_matrix(n, model_columns), dates)

    @staticmethod
    def _unknown(columns: Columns, name: str) -> list[tuple[int, int, Violation]]:
        rule, description = "unknown_field", ("not a feature of any served version of this "
                                             "model (see GetModel)")
        # A field with no value in any row says nothing, whichever way it was sent.
        present = [i for i, v in enumerate(columns.values[name]) if v is not None]
        if not columns.by_row:
            return [(-1, -1, Violation(columns.field(name, None), rule, description))
                    ] if present else []
        return [(i, -1, Violation(columns.field(name, i), rule, description))
                for i in present[:MAX_VIOLATIONS]]

    @staticmethod
    def _one_by_one(columns: Columns, spec: FeatureSpec,
                    check: Callable[[FeatureSpec, Any], Any],
                    values: Values | None) -> tuple[list[Any], list[tuple[int, Violation]]]:
        """The column value by value: checked values, and (row, violation) per bad one."""
        n = columns.n_rows
        out: list[Any] = [_missing_value(spec)] * n
        if values is None:
            if not spec.required:
                return out, []
            if not columns.by_row:
                return out, [(-1, Violation(columns.field(spec.name, None), "required",
                                            "is required"))]
            values = [None] * n  # absent from every row: each row misses it
        bad: list[tuple[int, Violation]] = []
        for row, value in enumerate(values):
            if value is None:
                if spec.required:
                    bad.append((row, Violation(columns.field(spec.name, row), "required",
                                               "is required")))
            else:
                try:
                    out[row] = check(spec, value)
                except _Bad as err:
                    if (err.rule == "wrong_type" and not columns.by_row
                            and not (spec.type is FeatureType.DATE and isinstance(value, str))):
                        # A column holds one type: the whole column is in the wrong list
                        # (a date column's strings are in the right one, just malformed).
                        return out, [(-1, Violation(
                            columns.field(spec.name, None), "wrong_type",
                            f"a {spec.type.value} feature: send its values in "
                            f"{_COLUMN_LIST[spec.type]}"))]
                    bad.append((row, Violation(columns.field(spec.name, row), err.rule,
                                               err.description)))
            if len(bad) >= MAX_VIOLATIONS:
                break
        return out, bad
