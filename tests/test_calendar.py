"""Days as text and as day numbers, both ways, against datetime.date's own reading."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import calendar


@given(st.lists(st.dates(), min_size=1, max_size=20))
def test_texts_and_day_numbers_round_trip_like_datetime(days: list[date]) -> None:
    texts = [d.isoformat() for d in days]
    numbers = calendar.days_of(texts)
    assert numbers == [(d - date(1970, 1, 1)).days for d in days]
    assert [calendar.text_of_day(n) for n in numbers] == texts


@pytest.mark.parametrize("text", ["2026-02-30", "2026-11", "NaT", "26/11/2026", "2026-11-26T00",
                                  " 2026-11-26", "2026-11-26\n", "0000-01-01", "+2026-11-26",
                                  "2026-1-05", "", "\u0662\u0660\u0662\u0666-11-26"])
def test_anything_but_an_exact_date_is_refused(text: str) -> None:
    assert calendar.parse_date(text) is None
    assert calendar.days_of(["2026-11-26", text]) is None


def test_days_past_datetime_range_still_have_text() -> None:
    last = calendar.day_number(date(9999, 12, 31))
    assert calendar.text_of_day(last) == "9999-12-31"
    assert calendar.text_of_day(last + 2) == "10000-01-02"


def test_the_memo_stays_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calendar, "MEMO_DAYS", 3)
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(10)]
    texts = [d.isoformat() for d in days]
    for _ in range(2):
        numbers = calendar.days_of(texts)
        assert numbers is not None
        assert [calendar.text_of_day(n) for n in numbers] == texts
        assert [date(1970, 1, 1) + timedelta(days=n) for n in numbers] == days
    assert len(calendar._day_of_text) <= 3 and len(calendar._text_of_day) <= 3
