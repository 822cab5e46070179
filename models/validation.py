"""Validate request rows against a version's feature schema and build CatBoost input.

Rows arrive as mappings of feature name to JSON value (str, float, bool, None;
lists and objects are never valid). :class:`RowValidator` is compiled once per
loaded version and turns rows into the object matrix CatBoost takes, or raises
:class:`ValidationFailed` with one violation per bad field, so a caller fixes
every problem in one round trip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from models.artifact import FeatureSpec, FeatureType, Manifest

# Optional categorical values that are missing are fed to CatBoost as this
# category; optional numbers as NaN (CatBoost's nan_mode handles them).
MISSING_CATEGORY = ""
MAX_CATEGORY_LENGTH = 256
# A request with hundreds of bad fields gets the first ones, not a huge trailer.
MAX_VIOLATIONS = 50
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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
    dates: tuple[date | None, ...]  # the output date field per row, if the schema has one


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


def _category_checker(spec: FeatureSpec) -> Callable[[FeatureSpec, Any], str]:
    known = frozenset(spec.categories)
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


def _date(spec: FeatureSpec, value: Any) -> date:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise _Bad("wrong_type", f"expected a date as YYYY-MM-DD, got {_describe(value)}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Bad("invalid_date", f"{value!r} is not a calendar date") from None


def _missing_value(spec: FeatureSpec) -> object:
    if spec.type is FeatureType.CATEGORICAL:
        return MISSING_CATEGORY
    return math.nan


class RowValidator:
    """Compiled checks for one version's schema."""

    def __init__(self, manifest: Manifest) -> None:
        self._known = frozenset(f.name for f in manifest.features)
        self._n_cols = len(manifest.model_features)
        date_field = manifest.output.date_field
        # (spec, check, matrix column or None for dates, whether it is the output date)
        self._checks: list[tuple[FeatureSpec, Callable[[FeatureSpec, Any], Any], int | None, bool]]
        self._checks = []
        column = 0
        for spec in manifest.features:
            if spec.type is FeatureType.DATE:
                self._checks.append((spec, _date, None, spec.name == date_field))
                continue
            check: Callable[[FeatureSpec, Any], Any]
            if spec.type is FeatureType.CATEGORICAL:
                check = _category_checker(spec)
            elif spec.type is FeatureType.BOOLEAN:
                check = _boolean
            else:
                check = _number
            self._checks.append((spec, check, column, False))
            column += 1

    def validate(
        self, rows: Sequence[Mapping[str, Any]], also_known: frozenset[str] = frozenset()
    ) -> ValidatedRows:
        """Check rows; ``also_known`` names fields of sibling versions, which are ignored.

        Callers of a model send one row shape whichever version the router picks,
        so a field is unknown only when no served version of the model has it.
        """
        known = self._known | also_known if also_known else self._known
        matrix = np.empty((len(rows), self._n_cols), dtype=object)
        dates: list[date | None] = [None] * len(rows)
        violations: list[Violation] = []

        def bad(index: int, name: str, rule: str, description: str) -> None:
            if len(violations) < MAX_VIOLATIONS:
                violations.append(Violation(f"rows[{index}].{name}", rule, description))

        for index, row in enumerate(rows):
            if not known.issuperset(row):
                for name in row:
                    if name not in known:
                        bad(index, name, "unknown_field",
                            "not a feature of any served version of this model (see GetModel)")
            out = matrix[index]
            for spec, check, column, is_output_date in self._checks:
                value = row.get(spec.name)
                if value is None:
                    if spec.required:
                        bad(index, spec.name, "required", "is required")
                    if column is not None:
                        out[column] = _missing_value(spec)
                    continue
                try:
                    checked = check(spec, value)
                except _Bad as err:
                    bad(index, spec.name, err.rule, err.description)
                    continue
                if column is not None:
                    out[column] = checked
                elif is_output_date:
                    dates[index] = checked
        if violations:
            raise ValidationFailed(violations)
        return ValidatedRows(matrix, tuple(dates))
