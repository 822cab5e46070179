"""Row validation against a version's schema: every rule, named field, no model needed."""

from __future__ import annotations

import math
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.calendar import day_number
from models.validation import (
    MAX_VIOLATIONS,
    MISSING_CATEGORY,
    Columns,
    RowValidator,
    ValidationFailed,
    rows_to_columns,
)
from tests.schema_fixtures import good_row, manifest

VALIDATOR = RowValidator(manifest())


def violations_of(row: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        VALIDATOR.validate([good_row(), row])
    return [(v.field, v.rule) for v in caught.value.violations]


def test_good_row_becomes_catboost_columns_in_schema_order() -> None:
    result = VALIDATOR.validate([good_row()])
    assert result.matrix.tolist() == [[512.5, 3.0, 0.0, "ground", "94107", 2.0]]
    assert result.dates == [day_number(date(2026, 11, 26))]


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("distance_km", "far", "wrong_type"),
        ("distance_km", True, "wrong_type"),
        ("distance_km", math.nan, "not_finite"),
        ("distance_km", math.inf, "not_finite"),
        ("distance_km", -1.0, "out_of_range"),
        ("distance_km", 5000.5, "out_of_range"),
        ("day_of_week", 2.5, "not_integer"),
        ("day_of_week", 7.0, "out_of_range"),
        ("after_cutoff", 1.0, "wrong_type"),
        ("service_level", "teleport", "unknown_category"),
        ("service_level", 3.0, "wrong_type"),
        ("service_level", ["ground"], "wrong_type"),
        ("zip_code", "x" * 300, "too_long"),
        ("order_date", "26/11/2026", "wrong_type"),
        ("order_date", "2026-02-30", "invalid_date"),
    ],
)
def test_each_rule_names_row_and_field(field: str, value: object, rule: str) -> None:
    row = good_row() | {field: value}
    assert violations_of(row) == [(f"rows[1].{field}", rule)]


def test_missing_required_and_unknown_fields_are_reported_together() -> None:
    row = good_row()
    del row["service_level"]
    del row["order_date"]
    row["colour"] = "blue"
    assert sorted(violations_of(row)) == [
        ("rows[1].colour", "unknown_field"),
        ("rows[1].order_date", "required"),
        ("rows[1].service_level", "required"),
    ]


def test_null_counts_as_missing() -> None:
    assert violations_of(good_row() | {"distance_km": None}) == [
        ("rows[1].distance_km", "required")
    ]


def test_optional_missing_values_become_nan_and_unknown_categories_pass_when_allowed() -> None:
    row = good_row() | {"zip_code": "00001"}
    del row["weight_kg"]
    result = VALIDATOR.validate([row])
    assert result.matrix[0][4] == "00001"
    assert math.isnan(result.matrix[0][5])


def test_optional_categorical_fill_is_the_missing_category() -> None:
    from models.artifact import FeatureSpec, FeatureType

    features = tuple(
        FeatureSpec(name="zip_code", type=FeatureType.CATEGORICAL, categories=("94107",),
                    allow_unknown=True, required=False) if f.name == "zip_code" else f
        for f in manifest().features
    )
    row = good_row()
    del row["zip_code"]
    result = RowValidator(manifest(features=features)).validate([row])
    assert result.matrix[0][4] == MISSING_CATEGORY


def test_violations_are_capped() -> None:
    rows = [good_row() | {"distance_km": -1.0} for _ in range(MAX_VIOLATIONS + 20)]
    with pytest.raises(ValidationFailed) as caught:
        VALIDATOR.validate(rows)
    assert len(caught.value.violations) == MAX_VIOLATIONS
    assert "and 49 more" in str(caught.value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_numeric_rule_matches_its_definition(value: float) -> None:
    row = good_row() | {"distance_km": value}
    ok = math.isfinite(value) and 0 <= value <= 5000
    if ok:
        assert VALIDATOR.validate([row]).matrix[0][0] == value
    else:
        assert violations_of(row)[0][0] == "rows[1].distance_km"


@given(st.text(max_size=20))
def test_categorical_rule_matches_its_definition(value: str) -> None:
    row = good_row() | {"service_level": value}
    if value in ("express", "ground", "overnight"):
        assert VALIDATOR.validate([row]).matrix[0][3] == value
    else:
        assert violations_of(row) == [("rows[1].service_level", "unknown_category")]


def test_fields_of_sibling_versions_are_ignored_not_rejected() -> None:
    row = good_row() | {"hour": 25.0}
    result = VALIDATOR.validate([row], also_known=frozenset({"hour"}))
    assert result.matrix.shape == (1, 6)
    with pytest.raises(ValidationFailed):
        VALIDATOR.validate([row])


# ------------------------------------------------------------------ columns
def as_sent_in_columns(rows: list[dict[str, object]]) -> Columns:
    """What server.transport.convert makes of a columnar request holding these rows."""
    return Columns(len(rows), rows_to_columns(rows).values, by_row=False)


def column_violations(rows: list[dict[str, object]]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        VALIDATOR.validate(as_sent_in_columns(rows))
    return [(v.field, v.rule) for v in caught.value.violations]


def test_columns_give_the_same_matrix_and_dates_as_rows() -> None:
    rows = [good_row(), good_row() | {"distance_km": 3.0, "zip_code": "10001",
                                      "order_date": "2024-02-29"}]
    by_row, by_column = VALIDATOR.validate(rows), VALIDATOR.validate(as_sent_in_columns(rows))
    assert by_column.matrix.tolist() == by_row.matrix.tolist()
    assert by_column.dates == by_row.dates == [day_number(date(2026, 11, 26)),
                                               day_number(date(2024, 2, 29))]


def test_a_bad_value_in_a_column_is_named_by_column_and_row() -> None:
    rows = [good_row(), good_row() | {"distance_km": -1.0}, good_row() | {"day_of_week": 9.0}]
    assert column_violations(rows) == [("columns.distance_km[1]", "out_of_range"),
                                       ("columns.day_of_week[2]", "out_of_range")]


def test_a_column_in_the_wrong_list_or_left_out_gets_one_violation() -> None:
    rows = [good_row() | {"service_level": 1.0} for _ in range(MAX_VIOLATIONS + 5)]
    for row in rows:
        del row["after_cutoff"]
        row["colour"] = "blue"
    assert column_violations(rows) == [("columns.colour", "unknown_field"),
                                       ("columns.after_cutoff", "required"),
                                       ("columns.service_level", "wrong_type")]


def test_missing_values_in_a_column() -> None:
    rows = [good_row(), good_row() | {"weight_kg": None}, good_row() | {"distance_km": None}]
    assert column_violations(rows) == [("columns.distance_km[2]", "required")]
    result = VALIDATOR.validate(as_sent_in_columns(rows[:2]))
    assert math.isnan(result.matrix[1][5])
    assert result.matrix[0][5] == good_row()["weight_kg"]


_NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                     st.integers(-10, 10).map(float), st.none())
_DATES = st.one_of(st.dates().map(date.isoformat), st.sampled_from(
    ["2026-02-30", "2026-11", "NaT", "26/11/2026", "2026-11-26T00", " 2026-11-26", "0000-01-01",
     "+2026-11-26", "2026-1-5", ""]), st.none())
_CATEGORIES = st.one_of(st.sampled_from(["express", "ground", "overnight", "teleport", ""]),
                        st.text(max_size=3), st.none())


@given(st.lists(st.tuples(_NUMBERS, _NUMBERS, _DATES, _CATEGORIES, st.booleans()),
                min_size=1, max_size=8))
def test_one_pass_and_value_by_value_agree(values: list[tuple[object, ...]]) -> None:
    """Every column takes the numpy pass or, when anything is off, goes value by value;
    both must reach the same verdict and the same values. Each row alone goes value by
    value whenever its column as a whole does not pass."""
    rows = [good_row() | {"distance_km": d, "day_of_week": w, "order_date": o,
                          "service_level": c, "after_cutoff": b}
            for d, w, o, c, b in values]
    try:
        together = VALIDATOR.validate(rows)
    except ValidationFailed as failed:
        together_bad = [(v.field, v.rule) for v in failed.violations]
    else:
        together_bad = []
    alone_bad: list[tuple[str, str]] = []
    alone = []
    for index, row in enumerate(rows):
        try:
            alone.append(VALIDATOR.validate([good_row(), row]))
        except ValidationFailed as failed:
            alone_bad.extend((v.field.replace("rows[1]", f"rows[{index}]"), v.rule)
                             for v in failed.violations)
    assert together_bad == alone_bad[:MAX_VIOLATIONS]
    if not together_bad:
        assert together.matrix.tolist() == [r.matrix[1].tolist() for r in alone]
        assert together.dates == [r.dates[1] for r in alone if r.dates is not None]


def test_a_field_without_any_value_is_ignored_however_it_was_sent() -> None:
    rows = [good_row() | {"colour": None}, good_row() | {"colour": None}]
    assert VALIDATOR.validate(rows).matrix.shape == (2, 6)
    assert VALIDATOR.validate(as_sent_in_columns(rows)).matrix.shape == (2, 6)
    rows[1]["colour"] = "blue"
    assert column_violations(rows) == [("columns.colour", "unknown_field")]


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_a_required_feature_absent_from_every_row_is_required_in_each(rows: int) -> None:
    sent = [good_row() for _ in range(rows)]
    for row in sent:
        del row["zip_code"]  # categorical that accepts unknown values: "" must not pass
        del row["distance_km"]
    with pytest.raises(ValidationFailed) as caught:
        VALIDATOR.validate(sent)
    assert [(v.field, v.rule) for v in caught.value.violations] == [
        (f"rows[{i}].{name}", "required") for i in range(rows)
        for name in ("distance_km", "zip_code")]


def test_a_malformed_date_in_a_column_is_named_by_row_not_blamed_on_the_list() -> None:
    rows = [good_row(), good_row() | {"order_date": "2026/11/26"}]
    with pytest.raises(ValidationFailed) as caught:
        VALIDATOR.validate(as_sent_in_columns(rows))
    [violation] = caught.value.violations
    assert (violation.field, violation.rule) == ("columns.order_date[1]", "wrong_type")
    assert "YYYY-MM-DD" in violation.description
